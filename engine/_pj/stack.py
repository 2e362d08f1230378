"""The pjsua2 endpoint, its transports, accounts and calls, owned by the SIP thread.

:class:`PjStack` is the SIP side of :class:`~engine._pj.thread.SipThread`: it
creates and destroys the endpoint in the order pjsua2 needs, and every public
method here runs on that thread (callers go through ``run``).

It is long (~700 lines) on purpose: it is the one owner of every pjsua2 object,
and the rules that keep the interpreter alive (who may touch a Call, when an
Account may die, what must be gone before ``libDestroy``) are easiest to check
when the operations that create, use and drop those objects sit together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import itertools
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pjsua2 as pj
import structlog

from ..behaviour import MicroSipBehaviour, StackOps
from ..errors import (
    CapacityError,
    ConfigError,
    EngineError,
    InvalidTargetError,
    NotFoundError,
    SipError,
)
from ..events import (
    CallDirection,
    CallStateName,
    Event,
    RecordingSaved,
    RegState,
)
from ..sipuri import split_name_addr, user_part
from ..state import AccountSnapshot, CallSnapshot, Limits
from . import mediawatch
from .account import PjAccount, build_config
from .call import PjCall
from .callops import Messenger, send_dtmf, set_hold, transfer
from .endpoint import SipEndpoint
from .guard import (
    MAX_HEADER,
    PJ_ETOOMANY,
    check_length,
    clear_last_exception,
    translate,
)
from .inbound import Fault, ReleaseGate, StartThrottle
from .logwriter import StructlogWriter, log_config
from .mixer import Mixer
from .probe import build_figures, probe_max_calls
from .resources import check_file, disown_survivors, quiet_stdout, wav_finalised
from .status import PJSIP_EBUSY
from .thread import SipThread
from .transports import TransportInfo, bind_transports, set_codecs, tls_max_version

if TYPE_CHECKING:
    from ..config import AccountConfig
    from .sound import DevicePort, SoundDevices

log = structlog.get_logger("engine.stack")

T = TypeVar("T")

IDLE_POLL_MS = 250
BUSY_POLL_MS = 20
#: Seconds after which a transfer's call that pjsua never started is dropped.
ORPHAN_AFTER = 10.0


@dataclasses.dataclass(frozen=True)
class StackSettings:
    """What the endpoint needs, already validated (built from microsip.ini)."""

    sip_port: int = 5060
    port_fallback: bool = True
    bind_address: str = ""
    public_address: str = ""
    transports: tuple[str, ...] = ("udp", "tcp")
    rtp_port_min: int = 0
    rtp_port_max: int = 0
    user_agent: str = "microsip-engine"
    nameservers: tuple[str, ...] = ()
    stun_servers: tuple[str, ...] = ()
    codecs: tuple[str, ...] = ("PCMU/8000/1", "PCMA/8000/1")
    max_calls: int = 0
    pjsip_log_level: int = 3
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_verify_server: bool = True
    vad: bool = False
    echo_canceller: bool = True
    #: Real devices (PortAudio names, or unique parts of them); "" = null device only.
    audio_input_device: str = ""
    audio_output_device: str = ""


class PjStack(SipThread):
    """Owns the endpoint, transports, accounts and calls on the SIP thread."""

    def __init__(
        self,
        settings: StackSettings,
        emit: Callable[[Event], None],
        behaviour: Callable[[StackOps], MicroSipBehaviour] = MicroSipBehaviour,
    ) -> None:
        super().__init__()
        self.settings = settings
        self._emit = emit
        #: MicroSIP's call handling; it acts on calls through this stack (StackOps),
        #: hence built from a factory given the stack (default: ring every call).
        self.behaviour = behaviour(self)
        self._call_numbers = itertools.count(1)
        # Owned by the pjsua2 thread only:
        self.endpoint: SipEndpoint | None = None
        self._writer: StructlogWriter | None = None
        self.transports: dict[str, tuple[int, TransportInfo]] = {}
        self.accounts: dict[int, PjAccount] = {}
        self.calls: dict[int, PjCall] = {}
        self._graveyard: list[Any] = []
        self.messenger = Messenger()
        self._retired: dict[int, PjAccount] = {}
        self._orphans: list[PjCall] = []
        self.mixer = Mixer(self)
        self.device_port: DevicePort | None = None
        self.sound: SoundDevices | None = None
        self._closing: list[tuple[int, str, float]] = []
        self.limits: Limits | None = None
        #: The build's compile-time figures (accounts are refused past its
        #: PJSUA_MAX_ACC: the wheel aborts on the next one).
        self.build = build_figures()
        self.release_gate = ReleaseGate()
        self.start_throttle = StartThrottle()

    def start(self, timeout: float = 10.0) -> Limits:
        self.start_thread(timeout)
        assert self.limits is not None
        return self.limits

    def emit(self, event: Event) -> None:
        self._emit(event)

    def next_call_number(self) -> int:
        return next(self._call_numbers)

    # -- the loop's SIP side (see SipThread) ---------------------------------------

    def _poll_ms(self) -> int:
        if self._wake_addr is None or self.calls or self._closing:
            return BUSY_POLL_MS
        return IDLE_POLL_MS

    def _handle_events(self, ms: int) -> None:
        assert self.endpoint is not None
        pause = self.start_throttle.pause(time.monotonic())
        if pause > 0:  # too many calls started lately: read no SIP for now
            time.sleep(min(pause, ms / 1000))
            return
        self.endpoint.libHandleEvents(ms)

    def _after_events(self) -> None:
        self._graveyard.clear()  # drop ended calls here, never inside their callbacks
        if self._closing:
            self._check_recordings()

    def recording_closed(self, number: int, path: str) -> None:
        self._closing.append((number, path, time.monotonic() + 2.0))

    def _check_recordings(self, force: bool = False) -> None:
        """Emit ``recording_saved`` once pjmedia has written the final WAV header."""
        still: list[tuple[int, str, float]] = []
        for number, path, deadline in self._closing:
            done, size, seconds = wav_finalised(path)
            if done or force or time.monotonic() > deadline:
                self.emit(
                    RecordingSaved(
                        call=number,
                        path=path,
                        bytes=size,
                        seconds=round(seconds, 3),
                        complete=done,
                    )
                )
            else:
                still.append((number, path, deadline))
        self._closing = still

    # -- start-up ---------------------------------------------------------------

    def _create(self) -> None:
        s = self.settings
        with quiet_stdout():
            ep = SipEndpoint(self)
            self.endpoint = ep
            ep.libCreate()
            cfg = pj.EpConfig()
            cfg.uaConfig.threadCnt = 0
            cfg.uaConfig.mainThreadOnly = True
            cfg.uaConfig.maxCalls = s.max_calls or self.build.max_calls
            cfg.uaConfig.userAgent = s.user_agent
            for ns in s.nameservers:
                cfg.uaConfig.nameserver.append(ns)
            for stun in s.stun_servers:
                cfg.uaConfig.stunServer.append(stun)
            cfg.uaConfig.stunIgnoreFailure = True
            cfg.medConfig.sndAutoCloseTime = -1  # else the null clock stops ~1 s in
            cfg.medConfig.noVad = not s.vad
            if not s.echo_canceller:
                cfg.medConfig.ecTailLen = 0
            self._writer = StructlogWriter()
            log_config(cfg.logConfig, s.pjsip_log_level, self._writer)
            ep.libInit(cfg)
        ep.audDevManager().setNullDev()
        self.transports, self._wake_addr = bind_transports(ep, s)
        ep.libStart()
        missing = set_codecs(ep, s.codecs)
        if missing:
            log.warning(
                "codecs_unavailable",
                codecs=missing,
                detail=f"audioCodecs names codecs this pjsua2 build ({self.build.name}) "
                "does not have; they are left out",
            )
        if s.audio_input_device or s.audio_output_device:
            self._open_sound_devices()
        assert self._writer is not None
        self._writer.muted = True  # the probe ends on an expected PJ_ETOOMANY
        try:
            max_calls = probe_max_calls(
                ep, self.transports["udp"][0], cfg.uaConfig.maxCalls, self.build.max_calls
            )
        finally:
            self._writer.muted = False
        if s.max_calls:
            max_calls = min(max_calls, s.max_calls)
        codecs = tuple(str(c.codecId) for c in ep.codecEnum2() if c.priority > 0)
        # Asking the wheel's static OpenSSL touches ~2 MB of its code: only when TLS is
        # in use (status() measures it on demand otherwise). The source build links
        # the system's OpenSSL, already loaded: always.
        measure_tls = "tls" in self.transports or self.build.name != "pypi-wheel"
        self.limits = Limits(
            max_calls=max_calls,
            max_accounts=self.build.max_accounts,
            pjsip_version=str(ep.libVersion().full),
            tls="tls" in self.transports,
            tls_max=tls_max_version(ep) if measure_tls else "",
            codecs=codecs,
            build=self.build.name,
        )

    def _open_sound_devices(self) -> None:
        """A bridge party for the real devices (the null device stays the clock).
        Imported here: numpy and PortAudio cost ~10 MB an engine without devices
        should not carry."""
        from .sound import DevicePort, SoundDevices

        port = DevicePort()
        sound = SoundDevices(
            port, self.settings.audio_input_device, self.settings.audio_output_device
        )
        try:
            port.create()
            sound.open()
        except BaseException as exc:
            sound.close()
            port.destroy()  # never left to the local's release: see DevicePort.destroy
            if not isinstance(exc, ConfigError):
                raise
            # A microsip.ini from Windows names Windows devices: keep running, silent.
            log.warning("sound_device_unavailable", error=exc.message, fallback="null device")
            return
        self.device_port, self.sound = port, sound

    # -- accounts -----------------------------------------------------------------

    def transport_for(self, kind: str) -> tuple[int, str]:
        """pjsua transport id and a label for an account's ``transport`` key."""
        if kind in ("udp", "tcp", "tls"):
            if kind not in self.transports:
                raise EngineError(f"no {kind.upper()} transport is configured", code="transport")
            return self.transports[kind][0], kind
        return -1, "udp+tcp"

    def add_account(self, index: int, acc: AccountConfig, password: str | None) -> AccountSnapshot:
        """Create account ``index``, or re-configure the one pjsua already has for it.

        pjsua never deletes an account while the engine runs (see
        :meth:`remove_account`): an index seen before is modified in place.
        """
        tid, label = self.transport_for(acc.transport)
        udp = self.transports["udp"][1]
        local_host = udp.host if index == 0 else ""
        if index == 0 and not acc.domain:
            local_host = f"{udp.host}:{udp.port}"
        for what, value in (
            ("server", acc.server),
            ("domain", acc.domain),
            ("username", acc.username),
            ("authID", acc.auth_id),
            ("displayName", acc.display_name),
            *(("proxy", p) for p in acc.proxy),
        ):
            check_length(f"[Account{index}] {what}", value)
        cfg = build_config(acc, tid, local_host, password)
        self._media_transport(cfg, acc.public_addr)
        uri = split_name_addr(str(cfg.idUri))[1]
        existing = self.accounts.pop(index, None) or self._retired.pop(index, None)
        if existing is not None:
            existing.reconfigure(acc, label, uri)
            self.accounts[index] = existing
            existing.modify(cfg)
            if acc.server:
                try:
                    existing.setRegistration(True)
                except pj.Error as exc:
                    if exc.status != PJSIP_EBUSY:  # busy: modify() already re-registers
                        raise
            return existing.snapshot()
        if len(self.accounts) + len(self._retired) >= self.build.max_accounts:
            raise CapacityError(
                f"this pjsua2 build allows at most {self.build.max_accounts} accounts"
            )
        pj_acc = PjAccount(self, index, acc, label)
        pj_acc.uri = uri
        pj_acc.create(cfg, index == 0 and not acc.server)
        self.accounts[index] = pj_acc
        return pj_acc.snapshot()

    def _media_transport(self, cfg: pj.AccountConfig, public_addr: str) -> None:
        """RTP ports (``rtpPortMin``/``Max``), bind address, and the address the SDP
        advertises (the account's ``publicAddr``, else the engine's)."""
        s, tc = self.settings, cfg.mediaConfig.transportConfig
        if s.rtp_port_min:
            tc.port = s.rtp_port_min
            if s.rtp_port_max > s.rtp_port_min:
                tc.portRange = s.rtp_port_max - s.rtp_port_min
        if s.bind_address and s.bind_address != "0.0.0.0":
            tc.boundAddress = s.bind_address
        if public_addr or s.public_address:
            tc.publicAddress = public_addr or s.public_address

    def remove_account(self, index: int) -> None:
        """Un-REGISTER account ``index`` and retire it. It stays in pjsua: deleting a
        pjsua account aborts the interpreter if a transaction of it (a MESSAGE still
        retransmitting, a registration) reports back later (``pjsua_acc_get_user_data``
        asserts), and pjsua2's ~Account() would delete whatever account reuses its
        slot. A retired account refuses calls and comes back if its index does."""
        pj_acc = self.accounts.pop(index, None)
        if pj_acc is None:
            raise NotFoundError(f"no account {index}")
        pj_acc.retire()
        self.messenger.forget_account(index)
        self._retired[index] = pj_acc

    def retry_registration(self, index: int, scheduled_by: object) -> None:
        acc = self.accounts.get(index)
        if acc is not None and acc is scheduled_by:
            acc.retry_registration()

    def account(self, index: int) -> PjAccount:
        try:
            return self.accounts[index]
        except KeyError:
            raise NotFoundError(f"no account {index}") from None

    # -- calls ------------------------------------------------------------------

    def call(self, number: int) -> PjCall:
        """A call pjsua knows about. A Call object pjsua has not started yet (the
        call placed for a REFER, before its first callback) is refused here: any
        operation on a never-started pjsua2 Call aborts the interpreter."""
        call = self.calls.get(number)
        if call is None:
            raise NotFoundError(f"no call {number}")
        if not call.started:
            raise EngineError(f"call {number} is not started yet", code="invalid_state")
        return call

    def make_call(
        self,
        account: int,
        uri: str,
        headers: dict[str, str],
        post_dial: tuple[str, ...] = (),
        local_uri: str = "",
    ) -> CallSnapshot:
        """Place a call; ``local_uri`` replaces the account's From ("" keeps it: see
        :func:`engine.behaviour.caller_id`)."""
        assert self.endpoint is not None and self.limits is not None
        check_length("the dial target", uri)
        if not uri.lower().startswith(("sip:", "sips:", "tel:")):
            raise InvalidTargetError(f"not a SIP URI: {uri[:80]!r}")
        for name, value in headers.items():
            check_length("a header name", name, MAX_HEADER)
            check_length(f"the {name[:40]} header", value, MAX_HEADER)
        if self.live_calls() >= self.limits.max_calls:
            raise CapacityError(
                f"too many calls: this pjsua2 build allows {self.limits.max_calls} at once"
            )
        pj_acc = self.account(account)
        prm = pj.CallOpParam(True)
        if local_uri:
            prm.txOption.localUri = local_uri
        for name, value in headers.items():
            hdr = pj.SipHeader()
            hdr.hName, hdr.hValue = name, value
            prm.txOption.headers.append(hdr)
        failure: SipError | None = None
        for attempt in range(3):
            call = PjCall(self, account, pj_acc, -1, CallDirection.OUT)
            try:
                call.makeCall(uri, prm)
            except pj.Error as exc:
                # makeCall failed, so the call never started: drop it unused.
                if exc.status == PJ_ETOOMANY and attempt < 2:
                    self.endpoint.libHandleEvents(10)  # a just-ended slot frees in a few ms
                    continue
                failure = translate("dial", exc)
            if failure is not None:
                # Raised outside the except block: no chained pj.Error (and its frames
                # holding this Call) may travel to the caller's thread.
                raise failure
            self.start_throttle.started(time.monotonic())
            self.claim_slot(call)
            call.started = True
            call.post_dial = post_dial
            call.refresh_identity(call.getInfo())
            self.calls[call.number] = call
            return call.snapshot()
        raise CapacityError("no free call slot")

    def adopt_incoming(self, pj_acc: PjAccount, call_id: int) -> PjCall:
        call = PjCall(self, pj_acc.index, pj_acc, call_id, CallDirection.IN)
        now = time.monotonic()
        self.start_throttle.started(now)
        # One libHandleEvents may hand us many INVITEs (a TCP read holds several, and
        # pjsip reads a busy socket up to 50 times in a row), each freed slot taken by
        # the next with a new RTP/RTCP pair: the pause in _handle_events comes too late
        # for those. Holding the SIP thread here keeps the budget within one read too.
        hold = self.start_throttle.pause(now)
        if hold > 0:
            time.sleep(hold)
        self.claim_slot(call)
        self.calls[call.number] = call
        return call

    def claim_slot(self, call: PjCall) -> None:
        """pjsua reuses call slots at once; pjsua2's ~Call() clears and hangs up the
        slot its object had. An ended call still waiting in the graveyard for the same
        slot must therefore never be destroyed: disown it."""
        slot = call.getId()
        for old in self._graveyard:
            if isinstance(old, PjCall) and old is not call and old.getId() == slot:
                old.thisown = False

    def incoming_call(self, call: PjCall, message: str, fault: Fault | None = None) -> None:
        """A new inbound call, adopted and announced: MicroSIP's behaviour decides."""
        self.behaviour.incoming(call.snapshot(), message, fault)

    # -- what the behaviour may do (StackOps) --------------------------------------

    def call_snapshot(self, number: int) -> CallSnapshot | None:
        call = self.calls.get(number)
        return None if call is None else call.snapshot()

    def live_calls(self) -> int:
        return sum(c.state is not CallStateName.DISCONNECTED for c in self.calls.values())

    def call_capacity(self) -> int:
        assert self.limits is not None
        return self.limits.max_calls

    def watch_media(self, number: int, timeout: float) -> None:
        call = self.calls.get(number)
        if call is not None:
            mediawatch.start(self, call, timeout)

    def refuse(self, number: int, code: int, phrase: str = "", contact: str = "") -> None:
        """Send a final response (>= 300) to a call not yet answered, with ``contact``
        as its Contact (a 3xx) - later, never now: this may run inside
        ``onIncomingCall``, and pjsua2 cannot survive a call ending there (see
        :mod:`engine._pj.inbound`). The release gate spaces the ends out; a call
        waiting for its turn keeps its slot, so pjsua answers further INVITEs 486
        itself, before creating media for them. A ``contact`` too long for pjsua2
        raises InvalidTargetError, and nothing is sent."""
        if contact:
            check_length("the forwarding target", contact)  # never into pjsua2
        headers = (("Contact", f"<{contact}>"),) if contact else ()
        wait = self.release_gate.reserve(time.monotonic())
        end = functools.partial(self._end_new_call, number, code, phrase, headers)
        self.schedule(wait, end)

    def _end_new_call(
        self, number: int, code: int, phrase: str, headers: tuple[tuple[str, str], ...]
    ) -> None:
        call = self.calls.get(number)
        if call is None or call.state not in (CallStateName.INCOMING, CallStateName.EARLY):
            return  # cancelled or ended meanwhile
        # Through answer(), not hangup(): pjsua's path for refusing an unanswered
        # call, and the only one where headers such as Contact (3xx) stand.
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        if phrase:
            prm.reason = phrase
        for name, value in headers:
            hdr = pj.SipHeader()
            hdr.hName, hdr.hValue = name, value
            prm.txOption.headers.append(hdr)
        call.answer(prm)

    def answer(self, number: int, code: int = 200) -> CallSnapshot:
        call = self.call(number)
        if call.direction is not CallDirection.IN or call.state not in (
            CallStateName.INCOMING,
            CallStateName.EARLY,
        ):
            raise EngineError(f"call {number} is not ringing", code="invalid_state")
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        call.answer(prm)
        return call.snapshot()

    def hangup(self, number: int, code: int = 0, reason: str = "") -> None:
        pending = self.calls.get(number)
        if pending is not None and not pending.started:
            return  # pjsua has not placed it yet: nothing on the wire to end
        call = self.call(number)
        if call.state is CallStateName.DISCONNECTED:
            return
        if call.state is CallStateName.CONFIRMED and call.end_reason is None:
            # pjsua reports DISCONNECTED as the BYE leaves, with an "OK" nobody sent (the
            # far end's answer, 200 or 481, comes after the call is gone): the code stays
            # the INVITE's 200, the reason says who ended the call.
            call.end_reason = (call.code, reason or "hung up locally")
        prm = pj.CallOpParam()
        if code:
            prm.statusCode = code
        if reason:
            prm.reason = reason
        call.hangup(prm)

    def call_confirmed(self, call: PjCall) -> None:
        """Just answered: MicroSIP's per-answer actions (see MicroSipBehaviour)."""
        self.behaviour.call_confirmed(
            call.snapshot(), call.post_dial, recording=call.recorder is not None
        )

    def send_dtmf(self, number: int, digits: str, method: int) -> str:
        # pjsua2's refusal as SipError: the post-dial timer reports it by that type.
        failure: SipError | None = None
        try:
            return send_dtmf(self.call(number), digits, method)
        except pj.Error as exc:
            failure = translate("DTMF", exc)
        raise failure  # outside the except block: no pj.Error chained (see make_call)

    def hold(self, number: int, hold: bool | None) -> bool:
        """Hold (True), resume (False) or toggle (None); returns the new held state."""
        call = self.call(number)
        target = (not call.local_hold) if hold is None else hold
        set_hold(call, target)
        return target

    def transfer(self, number: int, uri: str) -> None:
        check_length("the transfer target", uri)
        transfer(self.call(number), uri)

    def transfer_attended(self, number: int, to_number: int) -> None:
        """REFER ``number``'s party to ``to_number``'s, with Replaces (both ours)."""
        call, other = self.call(number), self.call(to_number)
        for c in (call, other):
            if c.state is not CallStateName.CONFIRMED:
                raise EngineError(f"call {c.number} is not answered", code="invalid_state")
        call.xferReplaces(other, pj.CallOpParam(True))
        call.transfer_target, call.refer_answered = other.remote_uri, False

    def adopt_replacing(self, call: PjCall) -> PjCall:
        """The Call object for an inbound INVITE/Replaces that takes over ``call``."""
        new = PjCall(self, call.account, call.pj_account, -1, CallDirection.IN)
        self.calls[new.number] = new
        self.schedule(ORPHAN_AFTER, functools.partial(self._forget_if_unstarted, new.number))
        return new

    def adopt_transfer(self, call: PjCall, target: str) -> PjCall:
        """The Call object for the call pjsua places when we are transferred."""
        new = PjCall(self, call.account, call.pj_account, -1, CallDirection.OUT)
        # A Refer-To may carry URI headers (?Replaces=…): they are not the party.
        new.remote_uri = split_name_addr(target)[1].split("?", 1)[0]
        new.remote_user = user_part(new.remote_uri)
        self.calls[new.number] = new
        self.schedule(ORPHAN_AFTER, functools.partial(self._forget_if_unstarted, new.number))
        return new

    def _forget_if_unstarted(self, number: int) -> None:
        """pjsua may fail to place a transfer's call without telling us: after a
        while an object it never started is no call of ours. It is kept (the
        transferring call holds a raw pointer to it), just out of the call list."""
        call = self.calls.get(number)
        if call is not None and not call.started:
            self.calls.pop(number)
            self._orphans.append(call)
            log.warning("transfer_call_never_started", call=number)

    def transfer_status(self, number: int, code: int, final: bool) -> None:
        self.behaviour.transfer_status(number, code, final)

    def send_message(self, account: int, uri: str, text: str) -> None:
        check_length("the message target", uri)
        if not uri.lower().startswith(("sip:", "sips:")):
            raise InvalidTargetError(f"not a SIP URI: {uri[:80]!r}")
        self.messenger.send(self.account(account), uri, text)

    def call_ended(self, call: PjCall) -> None:
        self.mixer.forget(call.number)
        call.release_media()
        self.calls.pop(call.number, None)
        self._graveyard.append(call)

    def play(self, number: int, path: str, loop: bool) -> None:
        check_file(path)
        self.call(number).play(path, loop)

    def record(self, number: int, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.call(number).record(path)

    def stop_recording(self, number: int) -> None:
        self.call(number).stop_recording()

    def tls_max(self) -> str:
        assert self.endpoint is not None and self.limits is not None
        if not self.limits.tls_max:
            self.limits = dataclasses.replace(self.limits, tls_max=tls_max_version(self.endpoint))
        return self.limits.tls_max

    def call_list(self) -> list[CallSnapshot]:
        return [c.snapshot() for c in self.calls.values()]

    def account_list(self) -> list[AccountSnapshot]:
        return [a.snapshot() for a in self.accounts.values()]

    def transport_list(self) -> list[TransportInfo]:
        return [info for _, info in self.transports.values()]

    # -- shutdown ------------------------------------------------------------------

    def _shutdown(self, budget: float = 1.5) -> None:
        assert self.endpoint is not None
        self._say_goodbye()
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline and (
            self.calls or self._unregistering() or self._closing
        ):
            self.endpoint.libHandleEvents(10)
            self._graveyard.clear()
            self._check_recordings()
        self.fail_pending_commands()
        self._destroy()

    def _say_goodbye(self) -> None:
        """BYE/CANCEL every call and un-REGISTER every account.

        A function of its own so that its loop variables (pjsua2 objects) are gone
        before ``libDestroy``: a Call still referenced then aborts the process.
        """
        for number in list(self.calls):
            with contextlib.suppress(pj.Error, EngineError):
                self.hangup(number)
        for acc in self.accounts.values():
            if acc.reg.state is RegState.REGISTERED:
                acc.unregistering = True
                with contextlib.suppress(pj.Error):
                    acc.setRegistration(False)

    def _release_all(self) -> None:
        """Drop our references to every pjsua2 object (see :meth:`_say_goodbye`)."""
        if self.sound is not None:
            self.sound.close()  # stop PortAudio before its port goes away
            self.sound = None
        if self.device_port is not None:
            self.device_port.destroy()  # before the reference goes (see destroy)
            self.device_port = None
        for call in self.calls.values():
            call.release_media()
        self.calls.clear()
        self.messenger.clear()
        # Accounts stay valid through libDestroy: pjsua destroys its endpoint first
        # and pending transactions call back into their accounts (see
        # remove_account). pjsua deletes them itself; the Python objects are
        # disowned so that their destructors never touch the library afterwards.
        for acc in [*self.accounts.values(), *self._retired.values()]:
            acc.thisown = False
        for orphan in self._orphans:
            orphan.thisown = False
        self._graveyard.clear()
        self._timers.clear()

    def _unregistering(self) -> bool:
        return any(
            a.unregistering and a.reg.state is RegState.REGISTERED for a in self.accounts.values()
        )

    def _destroy(self) -> None:
        """Drop every pjsua2 object, then the library (aborts if one survives)."""
        self._release_all()
        if self._closing:
            self._check_recordings(force=True)
        clear_last_exception()
        gc.collect()
        disown_survivors()
        if self.endpoint is not None:
            with contextlib.suppress(pj.Error):
                self.endpoint.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)
            self.endpoint = None
        self.accounts.clear()
        self._retired.clear()
        self._writer = None
