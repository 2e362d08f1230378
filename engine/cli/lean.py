"""Keep the service process lean: defer importing modules it never uses.

structlog imports :mod:`asyncio` at start-up for its async logging API, and
asyncio pulls in :mod:`ssl` and the OpenSSL libraries: about 9 MB of resident
memory in a process that never runs an event loop, a third of the engine's idle
footprint. The service installs a stand-in that imports the real module on first
use, so nothing changes for code that does use it.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _Deferred(types.ModuleType):
    """A module whose real contents load on first attribute access."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__spec__ = None  # read by the import system without loading anything

    def _load(self) -> types.ModuleType:
        real = self.__dict__.get("_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
            self.__dict__["_real"] = real
        return real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._load(), name)


def defer_import(name: str) -> None:
    """Put a deferred stand-in for ``name`` into ``sys.modules`` (if not loaded yet)."""
    if name not in sys.modules:
        sys.modules[name] = _Deferred(name)


def release_free_memory() -> None:
    """Give memory freed during start-up (the capacity probe's calls, parsing) back
    to the OS: glibc keeps freed heap pages otherwise. A no-op without glibc."""
    import ctypes  # not ctypes.util: find_library alone costs ~0.8 MB resident

    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols: glibc's
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
