"""The pjsua2 endpoint, its transports, accounts and calls, owned by the SIP thread.

:class:`PjStack` owns a :class:`~engine._pj.thread.SipThread`, whose SIP side
(:class:`~engine._pj.lifecycle.StackLoop`) creates and destroys the endpoint in
the order pjsua2 needs; every public method here runs on that thread (callers go
through ``run``). Accounts live in :class:`~engine._pj.accounts.AccountTable`,
audio in :class:`~engine._pj.media.Media` (with the :class:`~engine._pj.mixer.Mixer`
on top), endpoint configuration in :mod:`engine._pj.startup`, the Call objects
in :class:`~engine._pj.calls.CallTable`; the stack places, answers, ends and
transfers calls.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pjsua2 as pj
import structlog

from ..errors import (
    CapacityError,
    EngineError,
    InvalidTargetError,
    SipError,
)
from ..events import (
    CallDirection,
    CallStateName,
    Event,
)
from ..sipuri import split_name_addr, user_part
from ..state import AccountSnapshot, CallSnapshot, Limits
from . import mediawatch
from .account import PjAccount
from .accounts import AccountTable
from .call import PjCall
from .callops import Messenger, send_dtmf, set_hold, transfer, transfer_with_replaces
from .calls import CallTable, dial_param, final_param
from .endpoint import SipEndpoint
from .guard import (
    PJ_ETOOMANY,
    check_length,
    translate,
)
from .inbound import Fault, ReleaseGate, StartThrottle
from .lifecycle import StackLoop
from .media import Media
from .mixer import Mixer
from .probe import build_figures
from .resources import check_file
from .startup import StackSettings as StackSettings  # re-exported: its old home
from .thread import SipThread
from .transports import TransportInfo, tls_max_version

if TYPE_CHECKING:
    from ..config import AccountConfig

log = structlog.get_logger("engine.stack")

T = TypeVar("T")


class CallBehaviour(Protocol):
    """What the stack tells the behaviour above it (:mod:`engine.behaviour`): the
    moments MicroSIP acts on. Given as a factory, so the layer imports no policy."""

    def incoming(self, call: CallSnapshot, message: str, fault: Fault | None = None) -> None: ...

    def call_confirmed(
        self, call: CallSnapshot, post_dial: tuple[str, ...] = (), recording: bool = False
    ) -> None: ...

    def transfer_status(self, number: int, code: int, final: bool) -> None: ...


class PjStack:
    """Owns the endpoint, transports, accounts and calls on the SIP thread."""

    def __init__(
        self,
        settings: StackSettings,
        emit: Callable[[Event], None],
        behaviour: Callable[[PjStack], CallBehaviour],
    ) -> None:
        self.thread = SipThread(StackLoop(self))
        self.settings = settings
        self._emit = emit
        #: MicroSIP's call handling; it acts on calls through this stack (the
        #: behaviour's StackOps), hence built from a factory given the stack.
        self.behaviour = behaviour(self)
        self._call_numbers = itertools.count(1)
        # Owned by the pjsua2 thread only:
        self.endpoint: SipEndpoint | None = None
        self.transports: dict[str, tuple[int, TransportInfo]] = {}
        self.messenger = Messenger()
        self.limits: Limits | None = None
        #: The build's compile-time figures (accounts are refused past its
        #: PJSUA_MAX_ACC: the wheel aborts on the next one).
        self.build = build_figures()
        self.account_table = AccountTable(self, settings, self.build.max_accounts, self.messenger)
        self.accounts = self.account_table.live  # the same dict, never rebound
        self.media = Media(emit)
        self.call_table = CallTable(self.media, self.schedule)
        self.calls = self.call_table.live  # the same dict, never rebound
        self.mixer = Mixer(self.media, self)
        self.media.relink = self.mixer.relink
        self.release_gate = ReleaseGate()
        self.start_throttle = StartThrottle()

    def start(self, timeout: float = 10.0) -> Limits:
        self.thread.start_thread(timeout)
        assert self.limits is not None
        return self.limits

    def run(self, func: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Run ``func(*args)`` on the SIP thread and return its result."""
        return self.thread.run(func, *args, timeout=timeout)

    def schedule(self, delay: float, func: Callable[[], None]) -> None:
        """Run ``func`` on the SIP thread after ``delay`` seconds (SIP thread only)."""
        self.thread.schedule(delay, func)

    def stop(self, timeout: float = 2.5) -> None:
        """Hang up, un-REGISTER, destroy. Safe to call twice and from any thread."""
        self.thread.stop(timeout)

    def emit(self, event: Event) -> None:
        self._emit(event)

    def next_call_number(self) -> int:
        return next(self._call_numbers)

    # -- accounts (the table's; here for the manager's commands) ---------------------

    def add_account(self, index: int, acc: AccountConfig, password: str | None) -> AccountSnapshot:
        return self.account_table.add(index, acc, password)

    def remove_account(self, index: int) -> None:
        self.account_table.remove(index)

    def retry_registration(self, index: int, scheduled_by: object) -> None:
        self.account_table.retry_registration(index, scheduled_by)

    def account(self, index: int) -> PjAccount:
        return self.account_table.get(index)

    # -- calls ------------------------------------------------------------------

    def call(self, number: int) -> PjCall:
        """A started call (see :meth:`CallTable.get`)."""
        return self.call_table.get(number)

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
        prm = dial_param(uri, headers, local_uri)
        if self.live_calls() >= self.limits.max_calls:
            raise CapacityError(
                f"too many calls: this pjsua2 build allows {self.limits.max_calls} at once"
            )
        pj_acc = self.account(account)
        failure: SipError | None = None
        for attempt in range(3):
            call = PjCall(self, account, pj_acc, -1, CallDirection.OUT, self.media)
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
        call = PjCall(self, pj_acc.index, pj_acc, call_id, CallDirection.IN, self.media)
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
        """See :meth:`CallTable.claim_slot` (also a :class:`CallSink` duty: calls
        pjsua places itself claim their slot on their first callback)."""
        self.call_table.claim_slot(call)

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
        call.answer(final_param(code, phrase, headers))

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
        transfer_with_replaces(self.call(number), self.call(to_number))

    def adopt_replacing(self, call: PjCall) -> PjCall:
        """The Call object for an inbound INVITE/Replaces that takes over ``call``."""
        return self.call_table.adopt(
            PjCall(self, call.account, call.pj_account, -1, CallDirection.IN, self.media)
        )

    def adopt_transfer(self, call: PjCall, target: str) -> PjCall:
        """The Call object for the call pjsua places when we are transferred."""
        new = PjCall(self, call.account, call.pj_account, -1, CallDirection.OUT, self.media)
        # A Refer-To may carry URI headers (?Replaces=…): they are not the party.
        new.remote_uri = split_name_addr(target)[1].split("?", 1)[0]
        new.remote_user = user_part(new.remote_uri)
        return self.call_table.adopt(new)

    def transfer_status(self, number: int, code: int, final: bool) -> None:
        self.behaviour.transfer_status(number, code, final)

    def send_message(self, account: int, uri: str, text: str) -> None:
        check_length("the message target", uri)
        if not uri.lower().startswith(("sip:", "sips:")):
            raise InvalidTargetError(f"not a SIP URI: {uri[:80]!r}")
        self.messenger.send(self.account(account), uri, text)

    def call_ended(self, call: PjCall) -> None:
        self.mixer.forget(call.number)
        self.call_table.ended(call)

    def play(self, number: int, path: str, loop: bool) -> None:
        check_file(path)
        self.media.play(self.call(number), path, loop, self.mixer.effective_mic())

    def record(self, number: int, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.media.record(self.call(number), path)

    def stop_recording(self, number: int) -> None:
        self.media.stop_recording(self.call(number))

    def tls_max(self) -> str:
        assert self.endpoint is not None and self.limits is not None
        if not self.limits.tls_max:
            self.limits = dataclasses.replace(self.limits, tls_max=tls_max_version(self.endpoint))
        return self.limits.tls_max

    def call_list(self) -> list[CallSnapshot]:
        return self.call_table.snapshots()

    def account_list(self) -> list[AccountSnapshot]:
        return self.account_table.snapshots()

    def transport_list(self) -> list[TransportInfo]:
        return [info for _, info in self.transports.values()]
