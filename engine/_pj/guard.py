"""Error translation and callback guarding at the pjsua2 boundary."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import pjsua2 as pj
import structlog

from ..errors import InvalidTargetError, SipError
from .status import PJ_ETOOMANY

log = structlog.get_logger("engine.pjsua2")

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "MAX_HEADER",
    "MAX_URI",
    "PJ_ETOOMANY",
    "callback",
    "check_length",
    "clear_last_exception",
    "translate",
]

#: The longest URI or identity the engine hands to pjsua2, and the longest header.
#: The wheel aborts in ``utilVerifySipUri`` on strings of ~850 characters, and
#: pjproject up to 2.17 crashes on some over-long URIs even with assertions compiled
#: out (docs/pjsua2-builds.md): refused here on every build. No real URI comes near.
MAX_URI = 512
MAX_HEADER = 1024


def check_length(what: str, value: str, limit: int = MAX_URI) -> None:
    """Refuse ``value`` before pjsua2 sees it if it is longer than ``limit``."""
    if len(value) > limit:
        raise InvalidTargetError(f"{what} is too long: {len(value)} characters (at most {limit})")


def translate(operation: str, exc: pj.Error) -> SipError:
    """``pj.Error`` has an empty ``str()``: carry its status and reason instead."""
    reason = (getattr(exc, "reason", "") or "").strip() or "unknown error"
    status = int(getattr(exc, "status", 0) or 0)
    # Drop the traceback: its frames may hold pjsua2 objects, which must not
    # outlive libDestroy (the wheel aborts at exit if they do).
    return SipError(operation, status, reason).with_traceback(None)


def callback(func: F) -> F:
    """Wrap a pjsua2 callback so no exception escapes into SWIG.

    An escaping exception is printed by SWIG and left in ``sys.last_traceback``,
    which pins the callback's objects past ``libDestroy`` and aborts at exit.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BaseException as exc:
            log.error("callback_failed", callback=func.__qualname__, error=repr(exc))
            clear_last_exception()
            return None

    return wrapper  # type: ignore[return-value]


def clear_last_exception() -> None:
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        with contextlib.suppress(AttributeError):
            delattr(sys, name)
