"""Modules imported on first use, for code an idle engine does not run.

``sqlite3`` (call history), ``subprocess`` (hooks) and the like cost resident
memory in every engine from the moment they are imported; most engines sit idle
most of the time. A :class:`LazyModule` imports the real module at the first
attribute access, so the code using it reads as usual.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for module ``name`` until an attribute is read."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)
