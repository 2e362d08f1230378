"""Helpers to build the native shim and run it headless under Wine (see winekit)."""

from .winekit import (
    MINGW_GCC,
    NATIVE_PACKAGES,
    REPO,
    TOOLCHAIN,
    BuildError,
    ShimInstall,
    WineResult,
    WineSession,
    cmake_build,
    run_ctest,
    wait_for_file_text,
    windows_path,
)

__all__ = [
    "MINGW_GCC",
    "NATIVE_PACKAGES",
    "REPO",
    "TOOLCHAIN",
    "BuildError",
    "ShimInstall",
    "WineResult",
    "WineSession",
    "cmake_build",
    "run_ctest",
    "wait_for_file_text",
    "windows_path",
]
