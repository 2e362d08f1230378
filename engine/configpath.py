"""Where the user's ``microsip.ini`` lives.

Standard library only: the ``microsip`` CLI finds the engine through it (see
``engine/control/locate.py``) and must not pay for importing ``engine.config``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["user_config_path"]


def user_config_path(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/microsip-engine/microsip.ini`` (default ``~/.config``)."""
    base = env.get("XDG_CONFIG_HOME", "")
    if not base or not os.path.isabs(base):  # the XDG spec says to ignore relative paths
        home = env.get("HOME") or str(Path.home())
        base = os.path.join(home, ".config")
    return Path(base) / "microsip-engine" / "microsip.ini"
