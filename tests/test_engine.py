"""The engine core against real peers on loopback: registration, calls, audio, capacity.

Every check waits for an engine event or a peer's own record with a hard timeout;
audio is judged by measuring the dominant frequency of real recordings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audio import (
    dominant_frequency,
    frequencies_present,
    has_frequency,
    read_wav,
    write_tone_wav,
)
from enginekit import BASE_INI, Engines, engines_fixture, sip_port
from peers.baresip import BaresipFactory
from peers.kamailio import Kamailio
from peers.sipp import SippFactory

from engine.errors import InvalidTargetError, SipError

pytestmark = pytest.mark.peers


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def account_ini(k: Kamailio, user: str, password: str, extra: str = "") -> str:
    return f"""[Settings]
accountId=1
enableLocalAccount=1
sourcePort=0
audioCodecs=PCMU/8000/1 PCMA/8000/1
[Account1]
label=test
server={k.address}
domain={k.domain}
username={user}
password={password}
{extra}
"""


def local_uri(manager: Any, user: str = "100") -> str:
    return f"sip:{user}@127.0.0.1:{sip_port(manager)}"


def test_registers_to_kamailio_with_digest_auth(kamailio: Kamailio, engines: Engines) -> None:
    """REGISTER → 401 → REGISTER with credentials → 200; the registrar holds our contact."""
    manager, events = engines.start(account_ini(kamailio, "alice", "alice-secret"))
    ev = events.wait_for("registration", account=1, state="registered")
    assert ev["code"] == 200 and ev["expires"] > 0
    contacts = kamailio.wait_registrations("alice", 1)
    assert any(f"127.0.0.1:{sip_port(manager)}" in c for c in contacts), contacts
    status = manager.status()
    assert {a["account"]: a["state"] for a in status["accounts"]} == {
        0: "none",
        1: "registered",
    }


def test_wrong_password_is_a_failed_registration_and_the_engine_stays_up(
    kamailio: Kamailio, engines: Engines, sipp_factory: SippFactory
) -> None:
    manager, events = engines.start(account_ini(kamailio, "alice", "not-the-password"))
    ev = events.wait_for("registration", account=1, state="failed")
    assert ev["code"] in (401, 403), ev
    assert ev["retry_in"] and ev["retry_in"] > 0
    assert kamailio.registrations("alice") == []
    assert "not-the-password" not in repr(events.events)
    # Still serving: a call to the local account arrives and rings.
    sipp = sipp_factory.uac(local_uri(manager), "uac_send_bye", hold_ms=500)
    incoming = events.wait_for("incoming_call")
    events.wait_for("call_state", call=incoming["call"], state="early")
    manager.hangup(incoming["call"], 486)
    sipp.wait(15)


def test_inbound_sipp_call_answered_and_hung_up_through_the_api(
    engines: Engines, sipp_factory: SippFactory, tmp_path: Path
) -> None:
    """SIPp calls the local account; we answer, record its 1 kHz tone, hang up with BYE."""
    manager, events = engines.start()
    sipp = sipp_factory.uac(local_uri(manager), "uac_wait_bye", bye_timeout_ms=15000)
    incoming = events.wait_for("incoming_call")
    assert incoming["remote_uri"].startswith("sip:")
    number = incoming["call"]
    events.wait_for("call_state", call=number, state="early")  # 180 Ringing sent
    manager.answer(number)
    events.wait_for("call_state", call=number, state="confirmed")
    events.wait_for("media_state", call=number, status="active")
    recording = tmp_path / "in.wav"
    manager.record(number, str(recording))
    time.sleep(2.0)  # two seconds of audio to measure, not a wait for an event
    manager.hangup(number)
    ended = events.wait_for("call_state", call=number, state="disconnected")
    assert ended["duration"] > 1.5
    assert events.wait_for("recording_saved", call=number)["complete"]
    result = sipp.wait(15)
    assert result.successful == 1 and result.failed == 0
    assert result.received("BYE") == 1
    rate, samples = read_wav(recording)
    assert abs(dominant_frequency(samples, rate, 0.3) - 1000.0) < 10


def test_fifth_inbound_call_gets_486_and_the_engine_keeps_serving(
    engines: Engines, sipp_factory: SippFactory
) -> None:
    # Capped at the wheel's 4 on every build (test_pjsua2_build fills the build's own).
    manager, events = engines.start(BASE_INI + "[Engine]\nmaxCalls=4\n")
    limit = manager.status()["capacity"]["max_calls"]
    assert limit == 4
    sipp = sipp_factory.uac(
        local_uri(manager), "uac_answer_or_busy", calls=limit + 1, rate=100, hold_ms=3000
    )
    answered: set[int] = set()
    while len(answered) < limit:
        ev = events.wait(
            lambda e: e["event"] == "incoming_call" and e["call"] not in answered,
            10,
            "an incoming call",
        )
        events.wait_for("call_state", call=ev["call"], state="early")
        manager.answer(ev["call"])
        answered.add(ev["call"])
    rejected = events.wait_for("call_rejected")
    assert rejected["code"] == 486
    result = sipp.wait(20)
    assert result.received("486") == 1
    assert result.received("200", 0) == limit
    # Capacity is back: one more call is accepted.
    again = sipp_factory.uac(local_uri(manager), "uac_send_bye", hold_ms=300)
    late = events.wait(
        lambda e: e["event"] == "incoming_call" and e["call"] not in answered, 10, "a 6th call"
    )
    events.wait_for("call_state", call=late["call"], state="early")
    manager.answer(late["call"])
    assert again.wait(15).successful == 1


def test_bad_dial_targets_raise_errors_not_aborts(engines: Engines) -> None:
    manager, _ = engines.start()
    with pytest.raises(InvalidTargetError):
        manager.dial("5551234")  # a bare number from the local account (no domain)
    with pytest.raises(InvalidTargetError):
        manager.dial("sip:" + "a" * 2000 + "@127.0.0.1")  # pjsua2 aborts near 850 chars
    with pytest.raises(SipError):
        manager.dial("sip:bad uri@@")
    assert manager.calls() == []


def test_alice_calls_bob_on_baresip_and_audio_flows_both_ways(
    kamailio: Kamailio,
    baresip_factory: BaresipFactory,
    engines: Engines,
    tmp_path: Path,
) -> None:
    """alice (engine) → Kamailio → bob (baresip, auto-answer, playing 440 Hz).

    The engine plays 1 kHz into the call and records it: its recording carries
    bob's 440 Hz, and bob's recording of what it received carries our 1 kHz.
    """
    bob = baresip_factory("bob", wav=write_tone_wav(tmp_path / "bob.wav", 440.0, 60.0))
    bob.register("bob", kamailio.domain, "bob-secret")
    manager, events = engines.start(account_ini(kamailio, "alice", "alice-secret"))
    events.wait_for("registration", account=1, state="registered")
    call = manager.dial("bob")
    assert call.remote_uri == f"sip:bob@{kamailio.domain}"
    manager.play(call.call, str(write_tone_wav(tmp_path / "alice.wav", 1000.0, 30.0)))
    recording = tmp_path / "alice-rec.wav"
    manager.record(call.call, str(recording))
    events.wait_for("call_state", call=call.call, state="confirmed")
    events.wait_for("media_state", call=call.call, status="active")
    time.sleep(2.5)  # audio to measure
    manager.hangup(call.call)
    events.wait_for("call_state", call=call.call, state="disconnected")
    saved = events.wait_for("recording_saved", call=call.call)
    assert saved["complete"] and saved["path"] == str(recording) and saved["seconds"] > 2
    rate, samples = read_wav(recording)
    # The recording mixes bob's tone with what we play; bob's must be in it.
    assert has_frequency(samples, rate, 440.0, 0.5), frequencies_present(samples, rate, 0.5)
    bob_rec = bob.last_recording(10)
    brate, received = bob_rec.read_received()
    assert abs(dominant_frequency(received, brate, 0.5) - 1000.0) < 10


def test_failed_registration_is_retried_with_backoff(kamailio: Kamailio, engines: Engines) -> None:
    """403, then the registrar learns the password: the next retry (5 s) registers."""
    _manager, events = engines.start(account_ini(kamailio, "carol", "carols-new-secret"))
    failed = events.wait_for("registration", account=1, state="failed")
    assert failed["retry_in"] == 5.0
    kamailio.add_user("carol", "carols-new-secret")
    retry = events.wait_for("registration", account=1, state="registering", timeout=8)
    assert retry["time"] - failed["time"] >= 4.5
    events.wait_for("registration", account=1, state="registered", timeout=5)
    assert kamailio.wait_registrations("carol", 1)


def test_a_raising_or_blocking_handler_delays_nothing(
    engines: Engines, sipp_factory: SippFactory
) -> None:
    manager, events = engines.start()
    release = threading.Event()

    def blocking(_event: Any) -> None:
        release.wait(10)  # a handler stuck for seconds on every event

    def raising(_event: Any) -> None:
        raise RuntimeError("handler bug")

    manager.subscribe(blocking)
    manager.subscribe(raising)
    try:
        sipp = sipp_factory.uac(local_uri(manager), "uac_send_bye", hold_ms=300)
        incoming = events.wait_for("incoming_call", timeout=5)
        early = events.wait_for("call_state", call=incoming["call"], state="early", timeout=5)
        assert early["time"] - incoming["time"] < 0.1
        failed = events.wait_for("handler_failed", timeout=5)
        assert failed["handler"] == "raising" and "handler bug" in failed["error"]
        manager.answer(incoming["call"])
        assert sipp.wait(15).successful == 1
    finally:
        release.set()


def test_registration_is_refreshed_before_it_expires(kamailio: Kamailio, engines: Engines) -> None:
    """registerRefresh=10 (MicroSIP's minimum): pjsua re-REGISTERs before expiry."""
    _manager, events = engines.start(
        account_ini(kamailio, "dave", "dave-secret", "registerRefresh=10")
    )
    first = events.wait_for("registration", account=1, state="registered")
    assert first["expires"] <= 10
    again = events.wait(
        lambda e: e["event"] == "registration" and e["state"] == "registered" and e is not first,
        15,
        "a refreshed registration",
    )
    assert 3 < again["time"] - first["time"] < 11
    assert kamailio.registrations("dave")
