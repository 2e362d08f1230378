"""In-call controls on the pjsua2 thread: DTMF (all MicroSIP methods), hold, transfer,
and SIP MESSAGE outside a dialog. Called only through :class:`PjStack`."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import pjsua2 as pj

from ..errors import EngineError
from ..events import CallStateName
from .status import PJMEDIA_RTP_EREMNORFC2833

if TYPE_CHECKING:
    from .account import PjAccount
    from .call import PjCall

#: MicroSIP's ``DTMFMethod``: 0 auto (RFC 2833, else in-band), 1 in-band, 2 RFC 2833,
#: 3 SIP INFO (docs/microsip.md#dtmf-method).
DTMF_AUTO, DTMF_INBAND, DTMF_RFC2833, DTMF_INFO = 0, 1, 2, 3
#: pjsua's buddy table holds 256 entries and aborts on the 257th.
MAX_BUDDIES = 200


def require_confirmed(call: PjCall, what: str) -> None:
    if call.state is not CallStateName.CONFIRMED:
        raise EngineError(f"{what}: call {call.number} is not answered", code="invalid_state")


def send_dtmf(call: PjCall, digits: str, method: int) -> str:
    """Send ``digits``; returns the method really used (auto falls back to in-band)."""
    require_confirmed(call, "DTMF")
    if method == DTMF_INBAND or (method == DTMF_AUTO and not _remote_takes_rfc2833(call)):
        return _inband(call, digits)
    prm = pj.CallSendDtmfParam()
    prm.digits = digits
    prm.method = (
        pj.PJSUA_DTMF_METHOD_SIP_INFO if method == DTMF_INFO else pj.PJSUA_DTMF_METHOD_RFC2833
    )
    try:
        call.sendDtmf(prm)
    except pj.Error as exc:
        if method == DTMF_AUTO and exc.status == PJMEDIA_RTP_EREMNORFC2833:
            return _inband(call, digits)
        raise
    return "info" if method == DTMF_INFO else "rfc2833"


def _remote_takes_rfc2833(call: PjCall) -> bool:
    """Did the far end's SDP offer telephone-event? (Asked first, so that auto mode
    does not make pjsua log an error for every fallback; when in doubt, yes, and
    ``sendDtmf``'s PJMEDIA_RTP_EREMNORFC2833 decides.)"""
    ci = call.getInfo()  # bind first: iterating a temporary reads freed memory
    media = ci.media
    for index in range(len(media)):
        if media[index].type == pj.PJMEDIA_TYPE_AUDIO:
            try:
                return int(call.getStreamInfo(index).audTxEventPt) >= 0
            except pj.Error:
                return True
    return True


def _inband(call: PjCall, digits: str) -> str:
    am = call.audio_media()
    if am is None:
        raise EngineError(f"DTMF: call {call.number} has no active audio", code="invalid_state")
    if call.tones is None:
        call.tones = pj.ToneGenerator()
        call.tones.createToneGenerator()
    vec = pj.ToneDigitVector()
    for d in digits:
        tone = pj.ToneDigit()
        tone.digit, tone.on_msec, tone.off_msec, tone.volume = d, 160, 100, 0
        vec.append(tone)
    call.tones.startTransmit(am)
    call.tones.playDigits(vec, False)
    return "inband"


def set_hold(call: PjCall, hold: bool) -> None:
    require_confirmed(call, "hold")
    prm = pj.CallOpParam(True)
    if hold:
        call.setHold(prm)
    else:
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        call.reinvite(prm)


def transfer(call: PjCall, uri: str) -> None:
    require_confirmed(call, "transfer")
    call.xfer(uri, pj.CallOpParam(True))
    call.transfer_target, call.refer_answered = uri, False


def transfer_with_replaces(call: PjCall, other: PjCall) -> None:
    """REFER ``call``'s party to ``other``'s, with Replaces (an attended transfer)."""
    for c in (call, other):
        if c.state is not CallStateName.CONFIRMED:
            raise EngineError(f"call {c.number} is not answered", code="invalid_state")
    call.xferReplaces(other, pj.CallOpParam(True))
    call.transfer_target, call.refer_answered = other.remote_uri, False


class Messenger:
    """SIP MESSAGE outside a call: pjsua2 sends them through (non-subscribing) buddies."""

    def __init__(self) -> None:
        self._buddies: OrderedDict[tuple[int, str], pj.Buddy] = OrderedDict()

    def send(self, account: PjAccount, uri: str, text: str) -> None:
        key = (account.index, uri)
        buddy = self._buddies.get(key)
        if buddy is None:
            if len(self._buddies) >= MAX_BUDDIES:
                self._buddies.popitem(last=False)  # dropped on this (pjsua2) thread
            cfg = pj.BuddyConfig()
            cfg.uri = uri
            cfg.subscribe = False
            buddy = pj.Buddy()
            try:
                buddy.create(account, cfg)
            except pj.Error:
                del buddy
                raise
            self._buddies[key] = buddy
        self._buddies.move_to_end(key)
        prm = pj.SendInstantMessageParam()
        prm.content = text
        prm.contentType = "text/plain; charset=utf-8"
        buddy.sendInstantMessage(prm)

    def forget_account(self, index: int) -> None:
        for key in [k for k in self._buddies if k[0] == index]:
            del self._buddies[key]

    def clear(self) -> None:
        self._buddies.clear()
