"""The Call objects the engine holds, and when each may die.

A pjsua2 ``Call`` must never die inside its own callback, nor while pjsua still
points at its slot, nor after ``libDestroy``: :class:`CallTable` keeps ended
calls until the next poll (the graveyard), disowns an ended call whose slot
pjsua has reused, and keeps a transfer's never-started call out of the list but
alive (the orphans). Runs on the SIP thread only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import pjsua2 as pj
import structlog

from ..errors import EngineError, InvalidTargetError, NotFoundError
from ..state import CallSnapshot
from .guard import MAX_HEADER, check_length

if TYPE_CHECKING:
    from .call import PjCall
    from .media import Media

log = structlog.get_logger("engine.stack")

#: Seconds after which a transfer's call that pjsua never started is dropped.
ORPHAN_AFTER = 10.0


class CallTable:
    """Calls by engine number (the stack numbers them), the graveyard and the orphans."""

    def __init__(self, media: Media, schedule: Callable[[float, Callable[[], None]], None]) -> None:
        self._media = media
        self._schedule = schedule
        self.live: dict[int, PjCall] = {}
        self._graveyard: list[PjCall] = []
        self._orphans: list[PjCall] = []

    def get(self, number: int) -> PjCall:
        """A call pjsua knows about. A Call object pjsua has not started yet (the
        call placed for a REFER, before its first callback) is refused here: any
        operation on a never-started pjsua2 Call aborts the interpreter."""
        call = self.live.get(number)
        if call is None:
            raise NotFoundError(f"no call {number}")
        if not call.started:
            raise EngineError(f"call {number} is not started yet", code="invalid_state")
        return call

    def snapshots(self) -> list[CallSnapshot]:
        return [c.snapshot() for c in self.live.values()]

    def claim_slot(self, call: PjCall) -> None:
        """pjsua reuses call slots at once; pjsua2's ~Call() clears and hangs up the
        slot its object had. An ended call still waiting in the graveyard for the same
        slot must therefore never be destroyed: disown it."""
        slot = call.getId()
        for old in self._graveyard:
            if old is not call and old.getId() == slot:
                old.thisown = False

    def adopt(self, new: PjCall) -> PjCall:
        """A Call object for a call pjsua will start itself (a transfer's, a
        replacing one): listed now, dropped if pjsua never starts it."""
        self.live[new.number] = new
        self._schedule(ORPHAN_AFTER, functools.partial(self._forget_if_unstarted, new.number))
        return new

    def _forget_if_unstarted(self, number: int) -> None:
        """pjsua may fail to place a transfer's call without telling us: after a
        while an object it never started is no call of ours. It is kept (the
        transferring call holds a raw pointer to it), just out of the call list."""
        call = self.live.get(number)
        if call is not None and not call.started:
            self.live.pop(number)
            self._orphans.append(call)
            log.warning("transfer_call_never_started", call=number)

    def ended(self, call: PjCall) -> None:
        """Inside the call's DISCONNECTED callback: release its media, unlist it,
        and keep the object until :meth:`drop_ended` (after the callback)."""
        self._media.release(call)
        self.live.pop(call.number, None)
        self._graveyard.append(call)

    def drop_ended(self) -> None:
        """Let ended calls go (between polls: never inside their own callbacks)."""
        self._graveyard.clear()

    def release_all(self) -> None:
        """Shutdown: drop every call object; a never-started one pjsua may still
        point at is disowned, never deleted (see :meth:`_forget_if_unstarted`)."""
        for call in self.live.values():
            self._media.release(call)
        self.live.clear()
        for orphan in self._orphans:
            orphan.thisown = False
        self._graveyard.clear()


def dial_param(uri: str, headers: dict[str, str], local_uri: str) -> pj.CallOpParam:
    """An INVITE's parameters; every string from the user is checked first (one too
    long for pjsua2 could abort the interpreter). ``local_uri`` "" keeps the From."""
    check_length("the dial target", uri)
    if not uri.lower().startswith(("sip:", "sips:", "tel:")):
        raise InvalidTargetError(f"not a SIP URI: {uri[:80]!r}")
    for name, value in headers.items():
        check_length("a header name", name, MAX_HEADER)
        check_length(f"the {name[:40]} header", value, MAX_HEADER)
    prm = pj.CallOpParam(True)
    if local_uri:
        prm.txOption.localUri = local_uri
    _add_headers(prm, headers.items())
    return prm


def final_param(code: int, phrase: str, headers: Iterable[tuple[str, str]]) -> pj.CallOpParam:
    """A final response to an unanswered call (headers such as a 3xx's Contact)."""
    prm = pj.CallOpParam(True)
    prm.statusCode = code
    if phrase:
        prm.reason = phrase
    _add_headers(prm, headers)
    return prm


def _add_headers(prm: pj.CallOpParam, headers: Iterable[tuple[str, str]]) -> None:
    for name, value in headers:
        hdr = pj.SipHeader()
        hdr.hName, hdr.hValue = name, value
        prm.txOption.headers.append(hdr)
