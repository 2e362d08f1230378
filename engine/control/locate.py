"""One rule, for every tool, to find the control socket of the engine the ini describes.

In order: ``--control``, else ``$MICROSIP_CONTROL``, else ``[Engine] controlSocket``
of the ini the engine would load (``--config``, else ``$MICROSIP_INI``, else the
user file), else the default path. ``serve`` listens where this says, and
``microsip``, ``status``, ``events`` and ``cmd`` look there, so a tool can never
talk past the engine its own configuration describes.

Standard library only (plus the stdlib-only ini reader): the ``microsip`` CLI
imports this and must start fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..configpath import user_config_path
from ..errors import ConfigError
from ..ini import IniDocument
from .paths import ENV_VAR, default_socket_path

__all__ = ["Located", "config_path", "locate"]


@dataclass(frozen=True)
class Located:
    """Where the control socket is, and why there."""

    path: str
    #: ``--control``, ``MICROSIP_CONTROL``, ``controlSocket in <ini>`` or ``default``.
    source: str
    #: The ini the engine would load (``None``: the embedded default).
    config: str | None

    def not_running(self) -> str:
        """The "nothing there" message: where we looked, why, and how to change it."""
        return (
            f"no engine is running on {self.path} (from {self.source}); "
            "start one with `microsip-engine serve`, or point at another with "
            f"--control PATH, ${ENV_VAR} or --config INI ([Engine] controlSocket)"
        )


def config_path(config: str | None, env: Mapping[str, str] = os.environ) -> str | None:
    """The ini ``load_config`` would read: ``config``, ``$MICROSIP_INI``, the user
    file if it exists, else ``None`` (the embedded default)."""
    explicit = config or env.get("MICROSIP_INI", "")
    if explicit:
        return os.path.abspath(explicit)
    user = user_config_path(env)
    return str(user) if user.is_file() else None


def locate(
    control: str | None = None, config: str | None = None, env: Mapping[str, str] = os.environ
) -> Located:
    """Apply the rule (module docstring). A named ini that is missing or broken
    raises :class:`ConfigError`: guessing past it would find the wrong engine."""
    ini = config_path(config, env)
    if control:
        return Located(control, "--control", ini)
    if env.get(ENV_VAR, ""):
        return Located(env[ENV_VAR], ENV_VAR, ini)
    if ini is not None:
        if not Path(ini).is_file():
            source = "--config" if config else "MICROSIP_INI"
            raise ConfigError(f"configuration file not found (from {source})", path=ini)
        value = IniDocument.load(ini).get("Engine", "controlSocket")
        if value:
            return Located(value, f"controlSocket in {ini}", ini)
    without_env = {k: v for k, v in env.items() if k != ENV_VAR}
    return Located(default_socket_path(without_env), "default", ini)
