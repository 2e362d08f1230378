"""What MicroSIP does with calls, above the pjsua2 layer.

:class:`MicroSipBehaviour` decides and the pjsua2 layer carries out: a new inbound
call is refused, rung, answered (maybe later) or forwarded; an answered call gets
its post-dial DTMF, ``autoHangUpTime``, the media timeout and ``autoRecording``; a
transfer that worked drops our leg. It acts only through :class:`StackOps`, so it
imports no pjsua2 and is tested with a fake stack and a fake clock
(tests/test_behaviour.py).

It runs on the SIP thread, called synchronously from the pjsua2 callbacks, and its
timers run there too (``StackOps.schedule``). The refusal rules that keep pjsua2
alive (never end a call inside ``onIncomingCall``, the release gate, length limits)
stay in the layer: :meth:`StackOps.refuse` is always deferred and raises
:class:`~engine.errors.InvalidTargetError` for a target it cannot send.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import structlog

from .errors import EngineError, InvalidTargetError, SipError
from .events import CallStateName, DecisionAction, Event, IncomingDecision
from .state import CallSnapshot, Decision

if TYPE_CHECKING:
    from .config import Config

# The logger these lines always had (they were written from the stack before).
log = structlog.get_logger("engine.stack")

#: MicroSIP's anonymous identity (``hideCID=1``): no name or user of ours in From.
ANONYMOUS = '"Anonymous" <sip:anonymous@anonymous.invalid>'
#: MicroSIP's post-dial timing (docs/microsip.md#post-dial-dtmf): the first group
#: 1 s after the answer, each next one 1 s + 200 ms per digit of the previous later.
POST_DIAL_FIRST = 1.0
POST_DIAL_PER_DIGIT = 0.2

IncomingPolicy = Callable[[CallSnapshot, str], Decision]
#: ``autoRecording``: the WAV path for a just-answered call, or None.
AutoRecord = Callable[[CallSnapshot], str | None]

_UNANSWERED = (CallStateName.INCOMING, CallStateName.EARLY)


class Fault(Protocol):
    """Why an INVITE is malformed (the layer's check): the code and phrase to send."""

    @property
    def code(self) -> int: ...

    @property
    def phrase(self) -> str: ...


class StackOps(Protocol):
    """What the behaviour may do to calls: the pjsua2 layer (PjStack) provides it.
    Every method runs on the SIP thread; ``schedule`` runs ``func`` there later."""

    def emit(self, event: Event) -> None: ...

    def schedule(self, delay: float, func: Callable[[], None]) -> None: ...

    def call_snapshot(self, number: int) -> CallSnapshot | None: ...

    def live_calls(self) -> int: ...

    def call_capacity(self) -> int: ...

    def answer(self, number: int, code: int = 200) -> object: ...

    def refuse(self, number: int, code: int, phrase: str = "", contact: str = "") -> None: ...

    def hangup(self, number: int, code: int = 0, reason: str = "") -> None: ...

    def send_dtmf(self, number: int, digits: str, method: int) -> str: ...

    def record(self, number: int, path: str) -> None: ...

    def watch_media(self, number: int, timeout: float) -> None: ...


@dataclasses.dataclass(frozen=True)
class BehaviourSettings:
    """The settings the behaviour acts on (from microsip.ini, read once)."""

    #: ``autoHangUpTime``: hang up answered calls after this many seconds (0 = never).
    auto_hangup_time: float = 0.0
    #: ``[Engine] mediaTimeout``: end a call whose far end sent no RTP this long (0 = off).
    media_timeout: float = 0.0
    #: ``DTMFMethod`` (0 auto, 1 in-band, 2 RFC 2833, 3 SIP INFO) for post-dial digits.
    dtmf_method: int = 0

    @classmethod
    def from_config(cls, config: Config) -> BehaviourSettings:
        return cls(
            auto_hangup_time=float(config.settings.auto_hang_up_time),
            media_timeout=float(config.engine.media_timeout),
            dtmf_method=config.settings.dtmf_method,
        )


def _ring(_call: CallSnapshot, _msg: str) -> Decision:
    return Decision()


def caller_id(hide_cid: str, headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """MicroSIP's ``hideCID`` for an outgoing call: the From to send instead of the
    account's ("" = the account's) and the headers with ``Privacy: id`` when asked."""
    local_uri = ANONYMOUS if hide_cid in ("1", "hard") else ""
    if hide_cid:  # any non-empty value asks the network to hide us
        return local_uri, {"Privacy": "id", **headers}
    return local_uri, dict(headers)


def dtmf_method(configured: int, requested: int | None) -> int:
    """The DTMF method of a send: the one the command names, else ``DTMFMethod``."""
    return configured if requested is None else requested


class MicroSipBehaviour:
    """MicroSIP's reactions to call events, carried out through :class:`StackOps`."""

    def __init__(
        self,
        ops: StackOps,
        settings: BehaviourSettings | None = None,
        policy: IncomingPolicy = _ring,
        auto_record: AutoRecord | None = None,
    ) -> None:
        self.ops = ops
        self.settings = settings or BehaviourSettings()
        self.policy = policy
        self.auto_record = auto_record

    # -- a new inbound call ----------------------------------------------------------

    def incoming(self, call: CallSnapshot, message: str, fault: Fault | None = None) -> None:
        """Decide (malformed INVITE, capacity, then the policy), say so, carry it out."""
        if fault is not None:
            why = f"malformed INVITE: {fault.phrase}"
            decision = Decision(DecisionAction.REJECT, fault.code, why, phrase=fault.phrase)
        elif self.ops.live_calls() > self.ops.call_capacity():
            decision = Decision(DecisionAction.REJECT, 486, "over the engine's call capacity")
        else:
            try:
                decision = self.policy(call, message)
            except Exception as exc:  # a broken policy must not leave the call hanging
                log.error("incoming_policy_failed", error=repr(exc))
                decision = Decision()
        self.ops.emit(
            IncomingDecision(
                call=call.call,
                action=decision.action,
                code=decision.code,
                reason=decision.reason,
                delay=decision.delay,
                target=decision.contact,
            )
        )
        self.apply(call.call, decision)

    def apply(self, number: int, decision: Decision) -> None:
        if decision.delay > 0:  # ring now, the decision itself later
            now = dataclasses.replace(decision, delay=0)
            self.ops.answer(number, 180)
            self.ops.schedule(decision.delay, functools.partial(self._apply_later, number, now))
            return
        if decision.action in (DecisionAction.RING, DecisionAction.ANSWER):
            self.ops.answer(number, 180 if decision.action == DecisionAction.RING else 200)
            return
        contact = decision.contact if decision.action == DecisionAction.FORWARD else ""
        try:
            self.ops.refuse(number, decision.code, decision.phrase, contact)
        except InvalidTargetError:  # the layer will not send it: unreachable instead
            log.error("forwarding_target_too_long", call=number)
            self.ops.refuse(number, 480, "Temporarily Unavailable")

    def _apply_later(self, number: int, decision: Decision) -> None:
        call = self.ops.call_snapshot(number)
        if call is not None and call.state in _UNANSWERED:  # not answered nor gone meanwhile
            self.apply(number, decision)

    # -- an answered call ------------------------------------------------------------

    def call_confirmed(
        self, call: CallSnapshot, post_dial: tuple[str, ...] = (), recording: bool = False
    ) -> None:
        """MicroSIP's per-answer actions: post-dial DTMF, autoHangUpTime, the media
        timeout, autoRecording (unless the call records already)."""
        if post_dial:
            self._start_post_dial(call.call, post_dial)
        s = self.settings
        if s.auto_hangup_time > 0:
            self.ops.schedule(s.auto_hangup_time, functools.partial(self._auto_hangup, call.call))
        if s.media_timeout > 0:
            self.ops.watch_media(call.call, s.media_timeout)
        if self.auto_record is not None and not recording:
            path = self.auto_record(call)
            if path:
                self.ops.record(call.call, path)

    def _confirmed(self, number: int) -> bool:
        call = self.ops.call_snapshot(number)
        return call is not None and call.state is CallStateName.CONFIRMED

    def _auto_hangup(self, number: int) -> None:
        if self._confirmed(number):
            after = self.settings.auto_hangup_time
            log.info("auto_hangup", call=number, after=after)
            self.ops.hangup(number, reason=f"autoHangUpTime: hung up after {after:g} s")

    def _start_post_dial(self, number: int, groups: tuple[str, ...]) -> None:
        delay = POST_DIAL_FIRST
        for group in groups:
            if group:
                self.ops.schedule(delay, functools.partial(self._post_dial, number, group))
            delay += POST_DIAL_FIRST + POST_DIAL_PER_DIGIT * len(group)

    def _post_dial(self, number: int, digits: str) -> None:
        if not self._confirmed(number):
            return
        try:
            self.ops.send_dtmf(number, digits, self.settings.dtmf_method)
        except EngineError as exc:
            # Nobody waits for post-dial digits (``microsip 602,1234`` has exited):
            # the failure must be seen in the log, not lost in a timer.
            if isinstance(exc, SipError):
                exc = SipError("post-dial DTMF", exc.status, exc.reason)
            log.warning("post_dial_dtmf_failed", call=number, digits=digits, error=exc.message)

    # -- transfers -----------------------------------------------------------------

    def transfer_status(self, number: int, code: int, final: bool) -> None:
        """Our REFER's progress: MicroSIP drops its leg once the transfer worked."""
        if not (final and 200 <= code < 300):
            return
        call = self.ops.call_snapshot(number)
        if call is not None and call.state is not CallStateName.DISCONNECTED:
            self.ops.hangup(number, reason="transferred")
