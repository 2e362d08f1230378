"""The control protocol's wire format: one JSON object per line each way.

Requests are parsed strictly (UTF-8, no NaN nor Infinity, only ``id``, ``cmd`` and
``params``); replies and events are encoded as one ASCII line. The protocol is
specified in ``docs/control-protocol.md``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..events import EventType

#: Longest request line accepted, newline excluded.
MAX_LINE = 1 << 20
_REQUEST_KEYS = frozenset({"id", "cmd", "params"})
_EVENT_NAMES = frozenset(str(t) for t in EventType)
_INTERNAL = "internal error (details in the engine log)"


class _BadRequest(Exception):
    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


def _encode(message: dict[str, Any]) -> bytes:
    """Strict JSON (no NaN), ASCII-escaped so any string survives, one line."""
    return json.dumps(message, allow_nan=False, separators=(",", ":")).encode() + b"\n"


def _error(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _parse(line: bytes) -> tuple[Any, str, Any]:
    """``(id, cmd, params)`` of a request line, or :class:`_BadRequest`."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadRequest("bad_request", "request is not valid UTF-8") from exc
    try:
        request = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise _BadRequest("bad_request", f"invalid JSON: {exc}"[:200]) from exc
    if not isinstance(request, dict):
        raise _BadRequest("bad_request", "a request must be a JSON object")
    request_id = request.get("id")
    if not isinstance(request_id, str | int | float | bool | type(None)):
        raise _BadRequest("bad_request", "'id' must be a JSON scalar")
    unknown = sorted(set(request) - _REQUEST_KEYS)
    if unknown:
        raise _BadRequest("bad_request", f"unknown request key {unknown[0]!r}", request_id)
    cmd = request.get("cmd")
    if not isinstance(cmd, str):
        raise _BadRequest("bad_request", "'cmd' must be a string", request_id)
    return request_id, cmd, request.get("params", {})


def _event_filter(params: Any) -> frozenset[str] | None:
    if not isinstance(params, dict) or set(params) - {"events"}:
        raise _BadRequest("bad_params", "subscribe: params may only hold 'events'")
    names = params.get("events")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _BadRequest("bad_params", "subscribe: 'events' must be a list of event names")
    unknown = sorted(set(names) - _EVENT_NAMES)
    if unknown:
        raise _BadRequest("bad_params", f"subscribe: unknown event {unknown[0]!r}")
    return frozenset(names)
