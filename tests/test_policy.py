"""Incoming-call policy: the pure decision table, then the SIP codes on the wire."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from enginekit import BASE_INI, Engines, engines_fixture, sip_port
from peers.sipp import Sipp, SippFactory

from engine.config import AccountConfig, Settings
from engine.policy import Toggles, decide
from engine.state import CallSnapshot


def snap(
    call: int = 1, remote: str = "sip:200@pbx.example.com", state: str = "incoming"
) -> CallSnapshot:
    return CallSnapshot(
        call=call,
        sip_call_id=f"c{call}",
        account=1,
        direction="in",
        state=state,
        remote_uri=remote,
        remote_user=remote.split(":", 1)[1].split("@", 1)[0],
        display_name="",
        start_time=0.0,
        answer_time=None,
        code=0,
        reason="",
        media="none",
    )


ACC = AccountConfig(index=1, domain="pbx.example.com", username="100")
INVITE = (
    "INVITE sip:100@pbx.example.com SIP/2.0\r\n"
    "To: <sip:100@pbx.example.com>\r\nFrom: <sip:200@pbx.example.com>;tag=1\r\n"
)


def settings(**kw: object) -> Settings:
    return dataclasses.replace(Settings(), **kw)  # type: ignore[arg-type]


def test_default_is_ringing() -> None:
    d = decide(snap(), INVITE, settings(auto_answer="button"), ACC, [], Toggles())
    assert (d.action, d.code) == ("ring", 180)


def test_order_duplicate_before_everything() -> None:
    other = snap(2, state="confirmed")
    d = decide(snap(), INVITE, settings(auto_answer="all"), ACC, [other], Toggles())
    assert (d.action, d.code, d.phrase) == ("reject", 486, "Already in call with this contact")


def test_call_waiting_and_max_concurrent() -> None:
    other = snap(2, remote="sip:300@pbx.example.com", state="confirmed")
    d = decide(snap(), INVITE, settings(call_waiting=False), ACC, [other], Toggles())
    assert (d.action, d.code) == ("reject", 486)
    d = decide(snap(), INVITE, settings(max_concurrent_calls=1), ACC, [other], Toggles())
    assert d.phrase == "Maximum concurrent calls reached"
    d = decide(snap(), INVITE, settings(max_concurrent_calls=2), ACC, [other], Toggles())
    assert d.action == "ring"


@pytest.mark.parametrize(
    ("mode", "to", "from_", "denied"),
    [
        ("", "sip:999@other.org", "sip:1@other.org", False),
        ("all", "sip:100@pbx.example.com", "sip:200@pbx.example.com", True),
        ("user", "sip:999@pbx.example.com", "sip:200@pbx.example.com", True),
        ("user", "sip:100@other.org", "sip:200@pbx.example.com", False),
        ("domain", "sip:100@other.org", "sip:200@pbx.example.com", True),
        ("domain", "sip:999@pbx.example.com", "sip:200@pbx.example.com", False),
        ("userdomain", "sip:999@pbx.example.com", "sip:200@pbx.example.com", True),
        ("userdomain", "sip:100@other.org", "sip:200@pbx.example.com", True),
        ("userdomain", "sip:100@pbx.example.com", "sip:200@pbx.example.com", False),
        ("remotedomain", "sip:100@pbx.example.com", "sip:200@evil.example", True),
        ("remotedomain", "sip:100@pbx.example.com", "sip:200@pbx.example.com", False),
    ],
)
def test_deny_incoming_modes(mode: str, to: str, from_: str, denied: bool) -> None:
    invite = f"INVITE {to} SIP/2.0\r\nTo: <{to}>\r\nFrom: <{from_}>;tag=1\r\n"
    d = decide(snap(remote=from_), invite, settings(deny_incoming=mode), ACC, [], Toggles())
    assert (d.action == "reject") is denied, d


def test_dnd_button() -> None:
    s = settings(deny_incoming="button")
    assert decide(snap(), INVITE, s, ACC, [], Toggles(dnd=True)).code == 486
    assert decide(snap(), INVITE, s, ACC, [], Toggles(dnd=False)).action == "ring"


def test_auto_answer_modes_and_caller_list() -> None:
    s = settings(auto_answer="button", auto_answer_delay=3)
    assert decide(snap(), INVITE, s, ACC, [], Toggles(aa=True)).delay == 3
    assert decide(snap(), INVITE, s, ACC, [], Toggles(aa=False)).action == "ring"
    s = settings(auto_answer="all", auto_answer_number=("2*", "555?"))
    assert decide(snap(), INVITE, s, ACC, [], Toggles()).action == "answer"
    other = snap(remote="sip:300@pbx.example.com")
    assert decide(other, INVITE, s, ACC, [], Toggles()).action == "ring"
    five = snap(remote="sip:5551@pbx.example.com")
    assert decide(five, INVITE, s, ACC, [], Toggles()).action == "answer"


@pytest.mark.parametrize(
    ("header", "delay"),
    [
        # autoAnswerDelay (5) applies; only answer-after=N overrides it.
        ("X-AUTOANSWER: true", 5.0),
        ("X-AUTOANSWER: 1", 5.0),
        ("Call-Info: <sip:x>;answer-after=2", 2.0),
        ("Call-Info: <sip:x>;info=Auto Answer", 5.0),
        ("X-AUTOANSWER: false", None),
        ("Subject: nothing", None),
    ],
)
def test_header_auto_answer(header: str, delay: float | None) -> None:
    s = settings(auto_answer="header", auto_answer_delay=5)
    d = decide(snap(), INVITE + header + "\r\n", s, ACC, [], Toggles())
    if delay is None:
        assert d.action == "ring"
    else:
        assert (d.action, d.delay) == ("answer", delay)


def test_forwarding() -> None:
    s = settings(forwarding="all", forwarding_number="555", forwarding_delay=0)
    d = decide(snap(), INVITE, s, ACC, [], Toggles())
    assert (d.action, d.code, d.contact) == ("forward", 302, "sip:555@pbx.example.com")
    s = settings(forwarding="button", forwarding_number="555", forwarding_delay=4)
    assert decide(snap(), INVITE, s, ACC, [], Toggles(fwd=False)).action == "ring"
    assert decide(snap(), INVITE, s, ACC, [], Toggles(fwd=True)).delay == 4
    # Auto-answer comes before forwarding, as in MicroSIP.
    s = settings(forwarding="all", forwarding_number="555", auto_answer="all")
    assert decide(snap(), INVITE, s, ACC, [], Toggles()).action == "answer"


# -- on the wire ------------------------------------------------------------------


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def ini(extra: str) -> str:
    return BASE_INI.replace("[Account0]", extra.strip() + "\n[Account0]")


def call_once(
    sipp_factory: SippFactory,
    manager: object,
    headers: str = "Subject: policy",
    hold: int = 3000,
    caller: str = "sipp",
) -> Sipp:
    return sipp_factory.uac(
        f"sip:100@127.0.0.1:{sip_port(manager)}",
        "uac_policy",
        hold_ms=hold,
        params={"headers": headers, "caller": caller},
    )


@pytest.mark.peers
def test_dnd_rejects_with_486_on_the_wire(engines: Engines, sipp_factory: SippFactory) -> None:
    manager, events = engines.start(ini("denyIncoming=button\nDND=1"))
    result = call_once(sipp_factory, manager).wait(15)
    assert result.received("486") == 1 and result.received("180") == 0
    decision = events.wait_for("incoming_decision")
    assert decision["action"] == "reject" and "denyIncoming=button" in decision["reason"]


@pytest.mark.peers
def test_dnd_toggled_at_run_time_and_saved(
    engines: Engines, sipp_factory: SippFactory, tmp_path: Path
) -> None:
    manager, _ = engines.start(ini("denyIncoming=button\nDND=0"))
    manager.set_toggle("DND", True)
    assert "DND=1" in (tmp_path / "microsip.ini").read_text()
    assert call_once(sipp_factory, manager).wait(15).received("486") == 1


@pytest.mark.peers
def test_forwarding_immediate_302_carries_the_target_contact(
    engines: Engines, sipp_factory: SippFactory
) -> None:
    manager, events = engines.start(ini("forwarding=all\nforwardingNumber=sip:555@127.0.0.1:9"))
    sipp = call_once(sipp_factory, manager)
    result = sipp.wait(15)
    assert result.received("302") == 1
    log = sipp._scenario_file("messages.log")
    assert log is not None
    text = log.read_text(errors="replace")
    response = text[text.index("SIP/2.0 302") :].split("\n\n", 1)[0]
    contacts = re.findall(r"(?im)^contact:\s*(.*)$", response)
    assert contacts and all("sip:555@127.0.0.1:9" in c for c in contacts), contacts
    assert events.wait_for("incoming_decision")["action"] == "forward"


@pytest.mark.peers
def test_forwarding_after_a_delay_rings_first(engines: Engines, sipp_factory: SippFactory) -> None:
    manager, events = engines.start(
        ini("forwarding=all\nforwardingNumber=sip:555@127.0.0.1:9\nforwardingDelay=1")
    )
    result = call_once(sipp_factory, manager).wait(15)
    assert result.received("180") >= 1 and result.received("302") == 1
    ring = events.wait_for("call_state", state="early")
    ended = events.wait_for("call_state", state="disconnected")
    assert ended["time"] - ring["time"] >= 0.9


@pytest.mark.peers
def test_header_auto_answer_after_n_seconds(engines: Engines, sipp_factory: SippFactory) -> None:
    manager, events = engines.start(ini("autoAnswer=header\nautoAnswerDelay=10"))
    sipp = call_once(sipp_factory, manager, "Call-Info: <sip:127.0.0.1>;answer-after=1", 500)
    ring = events.wait_for("call_state", state="early")
    confirmed = events.wait_for("call_state", state="confirmed", timeout=10)
    assert 0.9 <= confirmed["time"] - ring["time"] < 5
    assert sipp.wait(15).received("200", 0) == 1


@pytest.mark.peers
def test_auto_answer_caller_wildcards(engines: Engines, sipp_factory: SippFactory) -> None:
    """SIPp's caller user is "sipp": a list that matches answers, one that does not rings."""
    manager, events = engines.start(ini("autoAnswer=all\nautoAnswerNumber=100;si*"))
    assert call_once(sipp_factory, manager, hold=300).wait(15).received("200", 0) == 1
    events.wait_for("incoming_decision", action="answer")
    engines.stop_all()
    manager, events = engines.start(ini("autoAnswer=all\nautoAnswerNumber=100;555*"))
    sipp = call_once(sipp_factory, manager, hold=300)
    decision = events.wait_for("incoming_decision")
    assert decision["action"] == "ring"
    manager.hangup(decision["call"], 486)
    sipp.wait(15)


@pytest.mark.peers
def test_auto_hang_up_time_ends_answered_calls(engines: Engines, sipp_factory: SippFactory) -> None:
    manager, events = engines.start(ini("autoAnswer=all\nautoHangUpTime=1"))
    sipp = call_once(sipp_factory, manager, hold=10000)
    confirmed = events.wait_for("call_state", state="confirmed")
    ended = events.wait_for("call_state", state="disconnected", timeout=10)
    assert 0.9 <= ended["time"] - confirmed["time"] < 3
    assert ended["reason"] == "autoHangUpTime: hung up after 1 s", ended
    result = sipp.wait(15)
    assert result.received("BYE") == 1  # the engine hung up, SIPp did not


@pytest.mark.peers
def test_call_waiting_off_and_max_concurrent_on_the_wire(
    engines: Engines, sipp_factory: SippFactory
) -> None:
    manager, events = engines.start(ini("autoAnswer=all\nmaxConcurrentCalls=1"))
    first = call_once(sipp_factory, manager, hold=4000, caller="first")
    events.wait_for("call_state", state="confirmed")
    second = call_once(sipp_factory, manager, hold=300, caller="second")
    assert second.wait(15).received("486") == 1
    rejected = events.wait_for("incoming_decision", action="reject")
    assert rejected["reason"] == "Maximum concurrent calls reached"
    assert first.wait(15).received("200", 0) == 1
    engines.stop_all()
    manager, events = engines.start(ini("autoAnswer=all\ncallWaiting=0"))
    first = call_once(sipp_factory, manager, hold=4000, caller="first")
    events.wait_for("call_state", state="confirmed")
    assert call_once(sipp_factory, manager, caller="second").wait(15).received("486") == 1
    assert events.wait_for("incoming_decision", action="reject")["reason"].startswith("Busy")
    assert first.wait(15).received("200", 0) == 1


@pytest.mark.peers
def test_duplicate_caller_is_refused(engines: Engines, sipp_factory: SippFactory) -> None:
    manager, events = engines.start(ini("autoAnswer=all"))
    first = call_once(sipp_factory, manager, hold=4000, caller="alice")
    events.wait_for("call_state", state="confirmed")
    assert call_once(sipp_factory, manager, caller="alice").wait(15).received("486") == 1
    rejected = events.wait_for("incoming_decision", action="reject")
    assert rejected["reason"] == "Already in call with this contact"
    assert first.wait(15).received("200", 0) == 1
