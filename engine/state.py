"""Snapshots of engine state that any thread may hold (no pjsua2 objects inside)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from .events import CallDirection, CallStateName, DecisionAction, MediaStatus, RegState


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """Enum members as their plain string values, as the JSON has always carried."""
    return {k: v.value if isinstance(v, enum.Enum) else v for k, v in d.items()}


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the loaded pjsua2 build really allows, measured at start."""

    max_calls: int
    max_accounts: int
    pjsip_version: str
    tls: bool
    #: Highest TLS version the build's OpenSSL offers ("1.2" for the PyPI wheel).
    tls_max: str
    codecs: tuple[str, ...]
    #: Which pjsua2: "pypi-wheel", or "source" for scripts/build-pjsua2's build.
    build: str = "pypi-wheel"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["codecs"] = list(self.codecs)
        return d


@dataclasses.dataclass(frozen=True)
class CallSnapshot:
    call: int
    sip_call_id: str
    account: int
    direction: CallDirection
    state: CallStateName
    remote_uri: str
    remote_user: str
    display_name: str
    start_time: float
    answer_time: float | None
    code: int
    reason: str
    media: MediaStatus
    recording: str | None = None

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        d = _plain(dataclasses.asdict(self))
        if now is not None:
            d["duration"] = round(now - self.answer_time, 3) if self.answer_time else 0.0
        return d


@dataclasses.dataclass(frozen=True)
class AccountSnapshot:
    account: int
    uri: str
    registrar: str
    state: RegState
    code: int
    reason: str
    expires: int
    transport: str

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do with a new inbound call: ``ring`` (180), ``answer`` (200),
    ``reject`` (``code``) or ``forward`` (302 to ``contact``), after ``delay`` s;
    ``reason`` says why (it goes into the ``incoming_decision`` event); ``phrase``
    is the SIP reason phrase sent (empty: the standard one)."""

    action: DecisionAction = DecisionAction.RING
    code: int = 180
    reason: str = "ringing"
    delay: float = 0.0
    contact: str = ""
    phrase: str = ""
