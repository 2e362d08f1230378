"""microsip-engine: a headless softphone engine on pjsua2, a drop-in for MicroSIP.

Importing the package is cheap: the pjsua2 layer loads only when a
:class:`CallManager` is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["CallManager", "__version__"]

if TYPE_CHECKING:
    from .manager import CallManager


def __getattr__(name: str) -> Any:
    if name == "CallManager":
        from .manager import CallManager

        return CallManager
    raise AttributeError(name)
