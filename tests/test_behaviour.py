"""MicroSIP's call behaviour (engine.behaviour) against a fake stack and a fake clock.

No pjsua2 here: the behaviour acts only through StackOps, which FakeStack records.
Its ``schedule`` keeps (due time, func); ``advance`` moves the clock and runs what
fell due, in order, as the SIP thread's timer loop does.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from engine.behaviour import (
    ANONYMOUS,
    BehaviourSettings,
    MicroSipBehaviour,
    caller_id,
    dtmf_method,
)
from engine.errors import EngineError, InvalidTargetError, SipError
from engine.events import (
    CallDirection,
    CallStateName,
    DecisionAction,
    Event,
    IncomingDecision,
    MediaStatus,
)
from engine.state import CallSnapshot, Decision

# The behaviour logs at info (auto_hangup): captured as in a fresh process, whatever
# level an earlier in-process engine left structlog filtering at.
pytestmark = pytest.mark.usefixtures("unconfigured_structlog")

MAX_CONTACT = 512  # what the layer refuses to send (engine._pj.guard.MAX_URI)


def snapshot(number: int = 1, state: CallStateName = CallStateName.INCOMING) -> CallSnapshot:
    return CallSnapshot(
        call=number,
        sip_call_id=f"cid-{number}",
        account=0,
        direction=CallDirection.IN,
        state=state,
        remote_uri="sip:bob@example.com",
        remote_user="bob",
        display_name="Bob",
        start_time=0.0,
        answer_time=None,
        code=0,
        reason="",
        media=MediaStatus.NONE,
        recording=None,
    )


@dataclasses.dataclass(frozen=True)
class Fault:
    code: int
    phrase: str


class FakeStack:
    """StackOps recorded: ``actions`` lists what the behaviour did, in order."""

    def __init__(self, capacity: int = 4) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.calls: dict[int, CallSnapshot] = {}
        self.events: list[Event] = []
        self.actions: list[tuple[Any, ...]] = []
        self.capacity = capacity
        self.dtmf_error: EngineError | None = None

    # the clock
    def schedule(self, delay: float, func: Callable[[], None]) -> None:
        self.timers.append((self.now + delay, len(self.timers), func))

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while True:
            due = sorted(t for t in self.timers if t[0] <= until)
            if not due:
                break
            self.timers.remove(due[0])
            self.now = due[0][0]
            due[0][2]()
        self.now = until

    def delays(self) -> list[float]:
        return sorted(round(at - self.now, 3) for at, _, _ in self.timers)

    # the calls
    def add(self, number: int, state: CallStateName) -> CallSnapshot:
        self.calls[number] = snapshot(number, state)
        return self.calls[number]

    def set_state(self, number: int, state: CallStateName) -> None:
        self.calls[number] = dataclasses.replace(self.calls[number], state=state)

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def call_snapshot(self, number: int) -> CallSnapshot | None:
        return self.calls.get(number)

    def live_calls(self) -> int:
        return sum(c.state is not CallStateName.DISCONNECTED for c in self.calls.values())

    def call_capacity(self) -> int:
        return self.capacity

    def answer(self, number: int, code: int = 200) -> CallSnapshot:
        self.actions.append(("answer", number, code))
        return self.calls[number]

    def refuse(self, number: int, code: int, phrase: str = "", contact: str = "") -> None:
        if len(contact) > MAX_CONTACT:
            raise InvalidTargetError("the forwarding target is too long")
        self.actions.append(("refuse", number, code, phrase, contact))

    def hangup(self, number: int, code: int = 0, reason: str = "") -> None:
        self.actions.append(("hangup", number, code, reason))

    def send_dtmf(self, number: int, digits: str, method: int) -> str:
        if self.dtmf_error is not None:
            raise self.dtmf_error
        self.actions.append(("dtmf", self.now, number, digits, method))
        return "rfc2833"

    def record(self, number: int, path: str) -> None:
        self.actions.append(("record", number, path))

    def watch_media(self, number: int, timeout: float) -> None:
        self.actions.append(("watch_media", number, timeout))


def behaviour(
    stack: FakeStack,
    policy: Callable[[CallSnapshot, str], Decision] | None = None,
    **settings: Any,
) -> MicroSipBehaviour:
    if policy is None:
        return MicroSipBehaviour(stack, BehaviourSettings(**settings))
    return MicroSipBehaviour(stack, BehaviourSettings(**settings), policy=policy)


def decision(stack: FakeStack) -> IncomingDecision:
    (event,) = [e for e in stack.events if isinstance(e, IncomingDecision)]
    return event


def test_the_behaviour_imports_no_pjsua2() -> None:
    code = "import sys, engine.behaviour; assert 'pjsua2' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- a new inbound call ------------------------------------------------------------


def test_over_capacity_is_refused_486_before_the_policy() -> None:
    stack = FakeStack(capacity=2)
    asked: list[CallSnapshot] = []
    b = behaviour(stack, lambda c, m: asked.append(c) or Decision())
    for n in (1, 2):
        stack.add(n, CallStateName.CONFIRMED)
    b.incoming(stack.add(3, CallStateName.INCOMING), "INVITE")
    assert stack.actions == [("refuse", 3, 486, "", "")]
    assert not asked
    d = decision(stack)
    assert (d.action, d.code, d.reason) == ("reject", 486, "over the engine's call capacity")


def test_at_capacity_the_new_call_still_counts_and_is_decided() -> None:
    stack = FakeStack(capacity=2)
    b = behaviour(stack)
    stack.add(1, CallStateName.CONFIRMED)
    b.incoming(stack.add(2, CallStateName.INCOMING), "INVITE")
    assert stack.actions == [("answer", 2, 180)]


def test_a_malformed_invite_is_refused_with_its_fault() -> None:
    stack = FakeStack()
    b = behaviour(stack, lambda c, m: Decision(DecisionAction.ANSWER, 200))
    b.incoming(stack.add(1, CallStateName.INCOMING), "INVITE", Fault(400, "Duplicate To header"))
    assert stack.actions == [("refuse", 1, 400, "Duplicate To header", "")]
    d = decision(stack)
    assert (d.action, d.code) == ("reject", 400)
    assert d.reason == "malformed INVITE: Duplicate To header"


@pytest.mark.parametrize(
    ("policy_decision", "action"),
    [
        (Decision(), ("answer", 1, 180)),
        (Decision(DecisionAction.ANSWER, 200, "auto-answer (all)"), ("answer", 1, 200)),
        (
            Decision(DecisionAction.REJECT, 486, "Busy Here (callWaiting=0)"),
            ("refuse", 1, 486, "", ""),
        ),
        (
            Decision(DecisionAction.REJECT, 486, "why", phrase="Already in call with this contact"),
            ("refuse", 1, 486, "Already in call with this contact", ""),
        ),
        (
            Decision(DecisionAction.FORWARD, 302, "forwarded", contact="sip:555@pbx"),
            ("refuse", 1, 302, "", "sip:555@pbx"),
        ),
    ],
)
def test_the_policy_decides_ring_answer_reject_or_forward(
    policy_decision: Decision, action: tuple[Any, ...]
) -> None:
    stack = FakeStack()
    seen: list[tuple[CallSnapshot, str]] = []

    def policy(call: CallSnapshot, invite: str) -> Decision:
        seen.append((call, invite))
        return policy_decision

    b = behaviour(stack, policy)
    call = stack.add(1, CallStateName.INCOMING)
    b.incoming(call, "INVITE sip:me SIP/2.0")
    assert seen == [(call, "INVITE sip:me SIP/2.0")]
    assert stack.actions == [action]
    d = decision(stack)
    assert (d.action, d.code, d.reason, d.delay, d.target) == (
        policy_decision.action,
        policy_decision.code,
        policy_decision.reason,
        0.0,
        policy_decision.contact,
    )
    assert not stack.timers


def test_a_delayed_answer_rings_first_then_answers() -> None:
    stack = FakeStack()
    b = behaviour(stack, lambda c, m: Decision(DecisionAction.ANSWER, 200, "aa", delay=3))
    b.incoming(stack.add(1, CallStateName.INCOMING), "INVITE")
    assert stack.actions == [("answer", 1, 180)]
    assert decision(stack).delay == 3
    stack.set_state(1, CallStateName.EARLY)
    stack.advance(2.9)
    assert stack.actions == [("answer", 1, 180)]
    stack.advance(0.1)
    assert stack.actions == [("answer", 1, 180), ("answer", 1, 200)]


def test_a_delayed_forward_is_sent_later_with_its_contact() -> None:
    stack = FakeStack()
    forward = Decision(DecisionAction.FORWARD, 302, "fwd", delay=1, contact="sip:555@pbx")
    b = behaviour(stack, lambda c, m: forward)
    b.incoming(stack.add(1, CallStateName.INCOMING), "INVITE")
    stack.set_state(1, CallStateName.EARLY)
    stack.advance(1)
    assert stack.actions == [("answer", 1, 180), ("refuse", 1, 302, "", "sip:555@pbx")]


@pytest.mark.parametrize("meanwhile", [CallStateName.CONFIRMED, CallStateName.DISCONNECTED, None])
def test_a_delayed_decision_is_dropped_once_the_call_is_answered_or_gone(
    meanwhile: CallStateName | None,
) -> None:
    stack = FakeStack()
    b = behaviour(stack, lambda c, m: Decision(DecisionAction.ANSWER, 200, "aa", delay=2))
    b.incoming(stack.add(1, CallStateName.INCOMING), "INVITE")
    if meanwhile is None:
        del stack.calls[1]
    else:
        stack.set_state(1, meanwhile)
    stack.advance(5)
    assert stack.actions == [("answer", 1, 180)]


def test_a_forwarding_target_too_long_to_send_is_480() -> None:
    stack = FakeStack()
    target = "sip:" + "5" * 600 + "@pbx"
    b = behaviour(stack, lambda c, m: Decision(DecisionAction.FORWARD, 302, "f", contact=target))
    with structlog.testing.capture_logs() as logs:
        b.incoming(stack.add(1, CallStateName.INCOMING), "INVITE")
    assert stack.actions == [("refuse", 1, 480, "Temporarily Unavailable", "")]
    assert [(e["event"], e["log_level"], e["call"]) for e in logs] == [
        ("forwarding_target_too_long", "error", 1)
    ]


def test_a_failing_policy_rings_and_is_logged() -> None:
    stack = FakeStack()

    def broken(call: CallSnapshot, invite: str) -> Decision:
        raise KeyError("no such account")

    b = behaviour(stack, broken)
    with structlog.testing.capture_logs() as logs:
        b.incoming(stack.add(1, CallStateName.INCOMING), "INVITE")
    assert stack.actions == [("answer", 1, 180)]
    assert (decision(stack).action, decision(stack).code) == ("ring", 180)
    assert [(e["event"], e["log_level"]) for e in logs] == [("incoming_policy_failed", "error")]
    assert "no such account" in logs[0]["error"]


def test_the_decision_event_comes_before_the_action() -> None:
    order: list[str] = []
    stack = FakeStack()
    stack.emit = lambda event: order.append(type(event).__name__)  # type: ignore[method-assign]
    answer = stack.answer
    stack.answer = lambda n, c=200: order.append("answer") or answer(n, c)  # type: ignore[method-assign]
    behaviour(stack).incoming(stack.add(1, CallStateName.INCOMING), "INVITE")
    assert order == ["IncomingDecision", "answer"]


# -- an answered call --------------------------------------------------------------


def confirmed(stack: FakeStack, b: MicroSipBehaviour, post_dial: tuple[str, ...] = ()) -> None:
    b.call_confirmed(stack.add(1, CallStateName.CONFIRMED), post_dial)


def dtmf(stack: FakeStack) -> list[tuple[Any, ...]]:
    return [a for a in stack.actions if a[0] == "dtmf"]


def test_post_dial_groups_follow_microsips_timing() -> None:
    """First group 1 s after the answer, each next 1000 + 200 x len(previous) ms later;
    an empty group (``1,,2``) only adds its pause."""
    stack = FakeStack()
    b = behaviour(stack, dtmf_method=2)
    confirmed(stack, b, ("123", "45", "", "6"))
    stack.advance(10)
    assert dtmf(stack) == [
        ("dtmf", 1.0, 1, "123", 2),
        ("dtmf", 2.6, 1, "45", 2),  # 1.0 + 1.0 + 0.2 x 3
        ("dtmf", 5.0, 1, "6", 2),  # + 1.0 + 0.2 x 2, + 1.0 (the empty group)
    ]


def test_post_dial_is_skipped_once_the_call_is_no_longer_answered() -> None:
    stack = FakeStack()
    b = behaviour(stack)
    confirmed(stack, b, ("1", "2", "3"))
    stack.advance(1.0)
    stack.set_state(1, CallStateName.DISCONNECTED)
    stack.advance(2.2)
    del stack.calls[1]
    stack.advance(5)
    assert dtmf(stack) == [("dtmf", 1.0, 1, "1", 0)]


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (
            SipError("DTMF", 171060, "No RFC 2833 support"),
            "post-dial DTMF failed: No RFC 2833 support (status 171060)",
        ),
        (
            EngineError("DTMF: call 1 has no active audio", code="invalid_state"),
            "DTMF: call 1 has no active audio",
        ),
    ],
)
def test_a_post_dial_failure_is_a_warning_not_an_exception(error: EngineError, logged: str) -> None:
    stack = FakeStack()
    stack.dtmf_error = error
    b = behaviour(stack)
    confirmed(stack, b, ("12",))
    with structlog.testing.capture_logs() as logs:
        stack.advance(2)  # raises if the failure escaped the timer
    assert [(e["event"], e["log_level"], e["call"], e["digits"], e["error"]) for e in logs] == [
        ("post_dial_dtmf_failed", "warning", 1, "12", logged)
    ]


def test_auto_hang_up_time_hangs_up_with_its_reason() -> None:
    stack = FakeStack()
    b = behaviour(stack, auto_hangup_time=2.5)
    confirmed(stack, b)
    stack.advance(2.4)
    assert stack.actions == []
    with structlog.testing.capture_logs() as logs:
        stack.advance(0.1)
    assert stack.actions == [("hangup", 1, 0, "autoHangUpTime: hung up after 2.5 s")]
    assert [(e["event"], e["call"], e["after"]) for e in logs] == [("auto_hangup", 1, 2.5)]


@pytest.mark.parametrize("meanwhile", [CallStateName.DISCONNECTED, None])
def test_auto_hang_up_time_leaves_an_ended_call_alone(meanwhile: CallStateName | None) -> None:
    stack = FakeStack()
    b = behaviour(stack, auto_hangup_time=1)
    confirmed(stack, b)
    if meanwhile is None:
        del stack.calls[1]
    else:
        stack.set_state(1, meanwhile)
    stack.advance(5)
    assert stack.actions == []


def test_without_auto_hang_up_time_or_media_timeout_nothing_is_scheduled() -> None:
    stack = FakeStack()
    confirmed(stack, behaviour(stack))
    assert stack.timers == [] and stack.actions == []


def test_the_media_timeout_watches_an_answered_call() -> None:
    stack = FakeStack()
    confirmed(stack, behaviour(stack, media_timeout=30))
    assert stack.actions == [("watch_media", 1, 30)]


def test_auto_recording_records_to_the_path_it_names() -> None:
    stack = FakeStack()
    named: list[CallSnapshot] = []

    def path(call: CallSnapshot) -> str | None:
        named.append(call)
        return f"/rec/{call.remote_user}.wav"

    b = MicroSipBehaviour(stack, auto_record=path)
    confirmed(stack, b)
    assert stack.actions == [("record", 1, "/rec/bob.wav")]
    assert named == [stack.calls[1]]


def test_auto_recording_off_or_already_recording_records_nothing() -> None:
    stack = FakeStack()
    MicroSipBehaviour(stack, auto_record=lambda call: None).call_confirmed(
        stack.add(1, CallStateName.CONFIRMED)
    )
    MicroSipBehaviour(stack, auto_record=lambda call: "/rec/x.wav").call_confirmed(
        stack.add(2, CallStateName.CONFIRMED), recording=True
    )
    assert stack.actions == []


def test_the_answer_actions_run_in_microsips_order() -> None:
    stack = FakeStack()
    b = MicroSipBehaviour(
        stack,
        BehaviourSettings(auto_hangup_time=60, media_timeout=30),
        auto_record=lambda call: "/rec/x.wav",
    )
    confirmed(stack, b, ("1",))
    assert stack.delays() == [1.0, 60.0]  # post-dial first, then autoHangUpTime
    assert stack.actions == [("watch_media", 1, 30), ("record", 1, "/rec/x.wav")]


# -- transfers ---------------------------------------------------------------------


def test_a_transfer_that_worked_drops_the_transferors_leg() -> None:
    stack = FakeStack()
    b = behaviour(stack)
    stack.add(1, CallStateName.CONFIRMED)
    b.transfer_status(1, 100, final=False)
    b.transfer_status(1, 180, final=False)
    assert stack.actions == []
    b.transfer_status(1, 200, final=True)
    assert stack.actions == [("hangup", 1, 0, "transferred")]


@pytest.mark.parametrize(("code", "final"), [(200, False), (486, True), (603, True)])
def test_a_transfer_not_yet_done_or_failed_keeps_the_call(code: int, final: bool) -> None:
    stack = FakeStack()
    stack.add(1, CallStateName.CONFIRMED)
    behaviour(stack).transfer_status(1, code, final)
    assert stack.actions == []


@pytest.mark.parametrize("meanwhile", [CallStateName.DISCONNECTED, None])
def test_a_transfer_done_after_the_call_ended_hangs_up_nothing(
    meanwhile: CallStateName | None,
) -> None:
    stack = FakeStack()
    stack.add(1, CallStateName.CONFIRMED)
    if meanwhile is None:
        del stack.calls[1]
    else:
        stack.set_state(1, meanwhile)
    behaviour(stack).transfer_status(1, 200, final=True)
    assert stack.actions == []


# -- outgoing calls ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("hide", "from_", "privacy"),
    [("", "", None), ("1", ANONYMOUS, "id"), ("hard", ANONYMOUS, "id"), ("id", "", "id")],
)
def test_hide_cid_anonymous_from_and_privacy(hide: str, from_: str, privacy: str | None) -> None:
    headers = {"X-Foo": "bar"}
    local_uri, sent = caller_id(hide, headers)
    assert local_uri == from_
    assert sent.get("Privacy") == privacy
    assert sent["X-Foo"] == "bar"
    assert headers == {"X-Foo": "bar"}  # the caller's dict is left alone


def test_hide_cid_keeps_a_privacy_header_the_caller_gave() -> None:
    assert caller_id("1", {"Privacy": "header"})[1] == {"Privacy": "header"}


def test_the_dtmf_method_is_the_requested_one_else_dtmf_method() -> None:
    assert dtmf_method(3, None) == 3
    assert dtmf_method(3, 0) == 0
    assert dtmf_method(0, 2) == 2
