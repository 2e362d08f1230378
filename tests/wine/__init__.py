"""Helpers to build the native shim and run it headless under Wine (see winekit)."""

from .winekit import *  # noqa: F403 - the public names are winekit's own __all__
from .winekit import __all__ as __all__
