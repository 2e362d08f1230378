"""Lifetime helpers for pjsua2 objects and files pjsua2 writes."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator

import pjsua2 as pj
import structlog

from ..errors import NotFoundError

log = structlog.get_logger("engine.pjsua2")

_OWNED_TYPES = (
    pj.Call,
    pj.Account,
    pj.Buddy,
    pj.AudioMediaPlayer,
    pj.AudioMediaRecorder,
    pj.ToneGenerator,
    pj.AudioMediaPort,
)


def disown_survivors() -> None:
    """Last line of defence before ``libDestroy``: a pjsua2 object still referenced
    somewhere would run its C++ destructor after the library is gone and abort the
    interpreter. Disowned, it is never destroyed (a small leak at exit instead)."""
    for obj in gc.get_objects():
        if isinstance(obj, _OWNED_TYPES) and getattr(obj, "thisown", False):
            log.warning("pjsua2_object_survived", type=type(obj).__name__)
            obj.thisown = False


def wav_finalised(path: str) -> tuple[bool, int, float]:
    """(header final, file size, seconds): pjmedia writes RIFF size 0 until it closes."""
    try:
        with open(path, "rb") as f:
            head = f.read(44)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False, 0, 0.0
    if len(head) < 44 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return False, size, 0.0
    done = int.from_bytes(head[4:8], "little") > 0
    byte_rate = int.from_bytes(head[28:32], "little")
    return done, size, (size - 44) / byte_rate if byte_rate else 0.0


def check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise NotFoundError(f"no such WAV file: {path}")


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """PJSIP prints to stdout until a LogWriter is installed by libInit."""
    try:
        saved = os.dup(1)
    except OSError:
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
