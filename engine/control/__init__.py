"""The local control channel: a Unix socket speaking newline-delimited JSON.

``client`` and ``paths`` are standard-library only so the ``microsip`` CLI starts
fast; ``ControlServer`` (which needs structlog and the event bus) is imported
lazily, on first use of the name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .client import ControlClient, ControlError, EngineNotRunning, EventStream, RemoteError
from .paths import default_socket_path, ensure_private_dir

if TYPE_CHECKING:
    from .server import ControlServer

__all__ = [
    "ControlClient",
    "ControlError",
    "ControlServer",
    "EngineNotRunning",
    "EventStream",
    "RemoteError",
    "default_socket_path",
    "ensure_private_dir",
]


def __getattr__(name: str) -> Any:
    if name == "ControlServer":
        from .server import ControlServer

        return ControlServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
