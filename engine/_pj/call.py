"""One SIP call: the ``pj.Call`` subclass and the media it owns.

Callbacks run on the pjsua2 thread and only turn ``prm`` into engine events;
everything that touches pjsua2 objects afterwards also runs on that thread.
"""

from __future__ import annotations

import time
from typing import Protocol

import pjsua2 as pj
import structlog

from ..events import (
    CallDirection,
    CallState,
    CallStateName,
    DtmfReceived,
    Event,
    MediaState,
    MediaStatus,
    MessageReceived,
    TransferProgress,
    TransferRole,
)
from ..sipuri import split_name_addr, user_part
from ..state import CallSnapshot
from .guard import callback
from .media import Media

log = structlog.get_logger("engine.call")

_STATES = {
    pj.PJSIP_INV_STATE_NULL: CallStateName.CALLING,
    pj.PJSIP_INV_STATE_CALLING: CallStateName.CALLING,
    pj.PJSIP_INV_STATE_INCOMING: CallStateName.INCOMING,
    pj.PJSIP_INV_STATE_EARLY: CallStateName.EARLY,
    pj.PJSIP_INV_STATE_CONNECTING: CallStateName.CONNECTING,
    pj.PJSIP_INV_STATE_CONFIRMED: CallStateName.CONFIRMED,
    pj.PJSIP_INV_STATE_DISCONNECTED: CallStateName.DISCONNECTED,
}
_MEDIA_STATUS = {
    pj.PJSUA_CALL_MEDIA_NONE: MediaStatus.NONE,
    pj.PJSUA_CALL_MEDIA_ACTIVE: MediaStatus.ACTIVE,
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: MediaStatus.LOCAL_HOLD,
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: MediaStatus.REMOTE_HOLD,
    pj.PJSUA_CALL_MEDIA_ERROR: MediaStatus.ERROR,
}
_DIRS = {
    pj.PJMEDIA_DIR_NONE: "inactive",
    pj.PJMEDIA_DIR_ENCODING: "sendonly",
    pj.PJMEDIA_DIR_DECODING: "recvonly",
    pj.PJMEDIA_DIR_ENCODING_DECODING: "sendrecv",
}
_DTMF_METHODS = {0: "rfc2833", 1: "info"}


class CallSink(Protocol):
    """What a call's callbacks hand their owner (PjStack): events, and the moments
    the owner acts on (answered, ended, transferred) or must create a Call for."""

    def next_call_number(self) -> int: ...

    def emit(self, event: Event) -> None: ...

    def call_confirmed(self, call: PjCall) -> None: ...

    def call_ended(self, call: PjCall) -> None: ...

    def claim_slot(self, call: PjCall) -> None: ...

    def adopt_transfer(self, call: PjCall, target: str) -> PjCall: ...

    def adopt_replacing(self, call: PjCall) -> PjCall: ...

    def transfer_status(self, number: int, code: int, final: bool) -> None: ...


class PjCall(pj.Call):  # type: ignore[misc]
    """A call and the players/recorders attached to it. Owned by :class:`PjStack`."""

    def __init__(
        self,
        sink: CallSink,
        account: int,
        pj_account: pj.Account,
        call_id: int,
        direction: CallDirection,
        media: Media,
    ) -> None:
        if call_id >= 0:
            super().__init__(pj_account, call_id)
        else:
            super().__init__(pj_account)
        self.sink = sink
        # pjsua2 keeps a reference to the Account object (and asserts on it when a
        # REFER or Replaces creates a sibling call): keep that object alive with us.
        self.pj_account = pj_account
        self.number = sink.next_call_number()
        self.account = account
        self.direction = direction
        self.media = media  # the audio plumbing: players, recorders, bridge links
        self.sip_call_id = ""
        self.remote_uri = ""
        self.remote_user = ""
        self.display_name = ""
        inbound = direction is CallDirection.IN
        self.state = CallStateName.INCOMING if inbound else CallStateName.CALLING
        self.code = 0
        self.reason = ""
        self.media_status = MediaStatus.NONE
        self.media_dir = "inactive"
        self._media_reported: tuple[str, str, str] | None = None
        #: The media timeout's view (see mediawatch): RTP packets seen, and when last.
        self.rx_packets, self.rx_at = -1, 0.0
        #: Set when we end the call: the code and reason its ``disconnected`` reports,
        #: since pjsua's own (200 OK for a BYE it sent) is not the far end's answer.
        self.end_reason: tuple[int, str] | None = None
        self.start_time = time.time()
        self.answer_time: float | None = None
        self.player: pj.AudioMediaPlayer | None = None
        self.recorder: pj.AudioMediaRecorder | None = None
        self.recording_path: str | None = None
        self.tones: pj.ToneGenerator | None = None
        #: DTMF groups to send after the answer (MicroSIP's ``123,456``).
        self.post_dial: tuple[str, ...] = ()
        self.started = inbound
        #: Our REFER (we transfer this call): its target, and whether it was answered.
        self.transfer_target = ""
        self.refer_answered = False

    # -- state --------------------------------------------------------------

    def refresh_identity(self, ci: pj.CallInfo) -> None:
        self.sip_call_id = str(ci.callIdString)
        if not self.remote_uri:
            name, uri = split_name_addr(str(ci.remoteUri))
            self.remote_uri, self.display_name = uri, name
            self.remote_user = user_part(uri)

    def snapshot(self) -> CallSnapshot:
        return CallSnapshot(
            call=self.number,
            sip_call_id=self.sip_call_id,
            account=self.account,
            direction=self.direction,
            state=self.state,
            remote_uri=self.remote_uri,
            remote_user=self.remote_user,
            display_name=self.display_name,
            start_time=self.start_time,
            answer_time=self.answer_time,
            code=self.code,
            reason=self.reason,
            media=self.media_status,
            recording=self.recording_path,
        )

    def state_event(self) -> CallState:
        duration = time.time() - self.answer_time if self.answer_time else 0.0
        return CallState(
            call=self.number,
            sip_call_id=self.sip_call_id,
            account=self.account,
            direction=self.direction,
            state=self.state,
            code=self.code,
            reason=self.reason,
            remote_uri=self.remote_uri,
            remote_user=self.remote_user,
            display_name=self.display_name,
            duration=round(duration, 3),
        )

    @callback
    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        if not self.started:
            # pjsua placed this call itself (a transfer's, a Replaces): its slot may
            # be one an ended call still waiting in the graveyard names (see claim_slot).
            self.sink.claim_slot(self)
        self.started = True  # a callback means pjsua owns a live call behind this object
        ci = self.getInfo()
        self.refresh_identity(ci)
        self.state = _STATES.get(ci.state, CallStateName.CALLING)
        self.code = int(ci.lastStatusCode)
        self.reason = str(ci.lastReason)
        if self.state is CallStateName.DISCONNECTED and self.end_reason is not None:
            self.code, self.reason = self.end_reason
        try:
            if self.state is CallStateName.CONFIRMED and self.answer_time is None:
                self.answer_time = time.time()
                self.sink.call_confirmed(self)
            if self.state is CallStateName.DISCONNECTED:
                # Release first: when the event is out, the recording WAV is complete.
                self.sink.call_ended(self)
        except Exception as exc:  # e.g. an unwritable recordingPath: report, go on
            log.error("call_state_action_failed", call=self.number, error=repr(exc))
        finally:
            self.sink.emit(self.state_event())  # the state change is never lost

    @callback
    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        ci = self.getInfo()  # bind first: iterating a temporary reads freed memory
        media = ci.media
        for index in range(len(media)):
            mi = media[index]
            if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            status = _MEDIA_STATUS.get(mi.status, MediaStatus.NONE)
            self.media_status = status
            self.media_dir = _DIRS.get(mi.dir, "inactive")
            if status in (MediaStatus.ACTIVE, MediaStatus.REMOTE_HOLD):
                self.connect_audio(index)  # every time: an update may bring a new slot
            codec = self._codec(index) if status is not MediaStatus.NONE else ""
            if (status, self.media_dir, codec) != self._media_reported:
                # pjsua calls back again for an unchanged stream (the codec-narrowing
                # UPDATE after a multi-codec answer): one event per real change.
                self._media_reported = (status, self.media_dir, codec)
                self.sink.emit(
                    MediaState(
                        call=self.number, status=status, direction=self.media_dir, codec=codec
                    )
                )

    def _codec(self, index: int) -> str:
        """``name/clock rate`` of the stream's codec (``audioCodecs`` adds channels)."""
        try:
            si = self.getStreamInfo(index)
        except pj.Error:
            return ""
        return f"{si.codecName}/{si.codecClockRate}"

    @callback
    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        method = _DTMF_METHODS.get(int(prm.method), str(prm.method))
        self.sink.emit(DtmfReceived(call=self.number, digit=str(prm.digit), method=method))

    @callback
    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        """We are being transferred (REFER): accept and place the new call ourselves."""
        target = str(prm.dstUri)
        new = self.sink.adopt_transfer(self, target)
        prm.newCall = new  # pjsua2 needs the Call object alive: the stack owns it
        prm.statusCode = 202
        self.sink.emit(
            TransferProgress(
                call=self.number,
                role=TransferRole.TRANSFEREE,
                code=202,
                reason="Accepted",
                final=False,
                target=split_name_addr(target)[1],
                new_call=new.number,
            )
        )

    @callback
    def onCallReplaceRequest(self, prm: pj.OnCallReplaceRequestParam) -> None:
        """An INVITE with Replaces for this call (we are the consulted party of an
        attended transfer): pjsua answers it as a new call that takes this one's
        place. It needs a Call object of its own, else pjsua2 would point the new
        call at this object, which dies with the old call."""
        prm.newCall = self.sink.adopt_replacing(self)

    @callback
    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        code, final = int(prm.statusCode), bool(prm.finalNotify)
        if not self.refer_answered and not final and code == 100:
            code = 202  # pjsua reports the far end's "202 Accepted" to our REFER as 100
        self.refer_answered = True
        self.sink.emit(
            TransferProgress(
                call=self.number,
                role=TransferRole.TRANSFEROR,
                code=code,
                reason=str(prm.reason),
                final=final,
                target=self.transfer_target,
            )
        )
        self.sink.transfer_status(self.number, code, final)

    @callback
    def onInstantMessage(self, prm: pj.OnInstantMessageParam) -> None:
        self.sink.emit(
            MessageReceived(
                account=self.account,
                from_uri=split_name_addr(str(prm.fromUri))[1],
                to_uri=split_name_addr(str(prm.toUri))[1],
                content_type=str(prm.contentType),
                body=str(prm.msgBody),
            )
        )

    # -- media (the plumbing is Media's) ----------------------------------------

    def audio_media(self) -> pj.AudioMedia | None:
        """The active audio stream, or None (never call getAudioMedia blindly)."""
        return self.media.audio_media(self)

    def connect_audio(self, index: int) -> None:
        """(Re)connect the bridge: a media update may bring a new conference slot."""
        self.media.connect(self, index)

    @property
    def local_hold(self) -> bool:
        return self.media_status is MediaStatus.LOCAL_HOLD
