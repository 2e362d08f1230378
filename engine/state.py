"""Snapshots of engine state that any thread may hold (no pjsua2 objects inside)."""

from __future__ import annotations

import dataclasses
from typing import Any


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
    direction: str  # "in" | "out"
    state: str
    remote_uri: str
    remote_user: str
    display_name: str
    start_time: float
    answer_time: float | None
    code: int
    reason: str
    media: str
    recording: str | None = None

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if now is not None:
            d["duration"] = round(now - self.answer_time, 3) if self.answer_time else 0.0
        return d


@dataclasses.dataclass(frozen=True)
class AccountSnapshot:
    account: int
    uri: str
    registrar: str
    state: str
    code: int
    reason: str
    expires: int
    transport: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do with a new inbound call: ``ring`` (180), ``answer`` (200),
    ``reject`` (``code``) or ``forward`` (302 to ``contact``), after ``delay`` s;
    ``reason`` says why (it goes into the ``incoming_decision`` event); ``phrase``
    is the SIP reason phrase sent (empty: the standard one)."""

    action: str = "ring"
    code: int = 180
    reason: str = "ringing"
    delay: float = 0.0
    contact: str = ""
    phrase: str = ""
