"""Fault tests (issue 10): what the engine does when a peer, a registrar or a
connection goes away, and the silent failures found against a real PBX."""
