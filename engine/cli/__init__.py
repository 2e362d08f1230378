"""Command-line entry points: ``microsip`` (MicroSIP.exe drop-in) and ``microsip-engine``."""
