"""Call transfers on the wire (issue 5, part 3): blind, attended, and being transferred.

Real peers on 127.0.0.1:

* blind (REFER): baresip alice (440 Hz) and carol (700 Hz), both auto-answering.
  baresip 1.0.0 accepts a REFER (account ``call_transfer`` defaults to yes):
  its ``menu`` module places the call to the Refer-To target from the account
  that had the transferred call, reports a ``TRANSFER`` event (``param`` the
  target) and NOTIFYs ``message/sipfrag`` progress ("100 Trying" while active,
  then the final status with the subscription terminated). It also *sends*
  a REFER (menu command ``transfer <uri>``) and, once NOTIFYed a 2xx, hangs up
  the transferred call itself (``CALL_CLOSED`` "Call transfered").
* attended (REFER with Replaces): two more engines as ``microsip-engine serve``
  child processes, because pjsua handles ``INVITE`` with ``Replaces`` (RFC 3891)
  and baresip 1.0.0 does not.
* transferee: a SIPp UAS (``uas_refer``) that answers our call, sends an in-dialog
  REFER, answers every NOTIFY and hangs up after the final 2xx sipfrag; the new
  call goes to a second SIPp UAS (``uas_answer``). And baresip transferring us.

Every wait has a hard timeout.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audio import has_frequency, read_wav, write_tone_wav
from enginekit import (
    BASE_INI,
    Engines,
    EventLog,
    ServeProcess,
    engines_fixture,
    run_command_line,
    sip_port,
)
from peers.baresip import Baresip, BaresipFactory
from peers.process import wait_until
from peers.sipp import Sipp, SippFactory

from engine.manager import CallManager

pytestmark = pytest.mark.peers

ALICE_HZ, CAROL_HZ = 440.0, 700.0
AUTO_ANSWER_INI = BASE_INI.replace("[Account0]", "autoAnswer=all\n[Account0]")


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def tone_peer(factory: BaresipFactory, name: str, hz: float, tmp_path: Path) -> tuple[Baresip, str]:
    """An auto-answering baresip whose microphone is a ``hz`` tone; returns it and its AOR."""
    peer = factory(name, wav=write_tone_wav(tmp_path / f"{name}-{hz:g}.wav", hz, 60.0))
    return peer, peer.add_local_account(name)


def transfer_events(events: EventLog, call: int) -> list[dict[str, Any]]:
    return events.of("transfer", call=call, role="transferor")


def assert_notify_progress(events: EventLog, call: int) -> dict[str, Any]:
    """The REFER's NOTIFYs as ``transfer`` events: provisional ones, then one final 200."""
    final = events.wait_for("transfer", timeout=8, call=call, role="transferor", final=True)
    progress = transfer_events(events, call)
    assert progress[-1] == final, progress
    assert (final["code"], final["reason"]) == (200, "OK"), progress
    # The REFER's 202 Accepted (pjsua says 100; the engine reports what came), then the
    # sipfrags it is NOTIFYed; every event names the target.
    assert (progress[0]["code"], progress[0]["reason"]) == (202, "Accepted"), progress
    assert all(100 <= e["code"] < 200 and not e["final"] for e in progress[1:-1]), progress
    assert all(e["target"] for e in progress), progress
    return final


def peer_events(peer: Baresip, type_: str) -> list[dict[str, Any]]:
    return [e for e in peer.events() if e.get("type") == type_]


# -- 1. blind transfer --------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "direction"),
    [("api", "out"), ("/transfer:", "in"), ("msip:transfer_", "in")],
)
def test_blind_transfer_connects_the_peer_to_the_target_and_drops_our_leg(
    engines: Engines,
    baresip_factory: BaresipFactory,
    tmp_path: Path,
    how: str,
    direction: str,
) -> None:
    """alice and the engine talk (we called her, or she called us and we auto-answered);
    a blind transfer to carol (``manager.transfer``, MicroSIP's ``/transfer:<uri>`` or
    ``msip:transfer_<uri>``) sends a REFER: alice calls carol, carol sees a call *from
    alice*, the NOTIFYs arrive as ``transfer`` events ending in a final 200, our leg
    ends, and alice and carol hear each other's tones."""
    alice, alice_aor = tone_peer(baresip_factory, "alice", ALICE_HZ, tmp_path)
    carol, carol_aor = tone_peer(baresip_factory, "carol", CAROL_HZ, tmp_path)
    manager, events = engines.start(AUTO_ANSWER_INI)
    if direction == "out":
        call = manager.dial(alice_aor).call
    else:
        alice.dial(f"sip:100@127.0.0.1:{sip_port(manager)}")
        call = events.wait_for("incoming_call", timeout=5)["call"]
    events.wait_for("media_state", timeout=5, call=call, status="active")
    alice.wait_call_event("CALL_ESTABLISHED", 5)
    # Talk a little: sndfile names recordings by the second a call starts, and
    # alice's call to carol must not share a name with this one.
    alice.wait_received_audio(1.1)
    carol_mark = carol.event_mark()

    if how == "api":
        manager.transfer(carol_aor, call)
    else:
        [done] = run_command_line(manager, f"{how}{carol_aor}")
        assert done["action"] == "transfer", done

    final = assert_notify_progress(events, call)
    ended = events.wait_for("call_state", timeout=5, call=call, state="disconnected")
    assert ended["time"] >= final["time"], "our leg ended before the transfer succeeded"
    wait_until(lambda: manager.calls() == [], 5, "the engine to drop its leg")

    # carol has a call from alice (not from us); alice reports the transfer to carol.
    established = carol.wait_event(
        lambda e: e.get("type") == "CALL_ESTABLISHED", 5, since=carol_mark, what="carol's call"
    )
    assert established["direction"] == "incoming"
    assert str(established["peeruri"]).startswith("sip:alice@127.0.0.1"), established
    assert [e["param"] for e in peer_events(alice, "TRANSFER")] == [carol_aor]
    alice.wait_event(
        lambda e: e.get("type") == "CALL_ESTABLISHED" and e.get("peeruri") == carol_aor,
        5,
        what="alice's call to carol",
    )

    # They talk: carol's recording carries alice's tone, and alice received carol's.
    carol.wait_received_audio(1.2)
    carol.hangup()
    carol.wait_call_event("CALL_CLOSED", 5, since=carol_mark)
    rate, heard = carol.last_recording(5).read_received()
    assert has_frequency(heard, rate, ALICE_HZ, 0.3, 1.1), "carol did not hear alice"
    # alice had two calls; baresip reports the close of our leg late and in either
    # order (pairing WAVs with calls by age then fails), but only carol sent 700 Hz.
    wait_until(
        lambda: len(peer_events(alice, "CALL_CLOSED")) == 2 and len(alice.recordings()) == 2,
        5,
        "alice's two calls to close",
    )
    heard_carol = []
    for recording in alice.recordings():
        rate, heard = recording.wait_complete().read_received()
        heard_carol.append(has_frequency(heard, rate, CAROL_HZ, 0.3, 1.0))
    assert sorted(heard_carol) == [False, True], "alice did not hear carol"


# -- 2. attended transfer (REFER with Replaces) -------------------------------------


def wait_engine_event(
    peer: ServeProcess, kind: str, timeout: float = 5.0, **fields: Any
) -> dict[str, Any]:
    """The first event ``kind`` with ``fields`` on a ``serve`` engine's event stream."""
    return peer.events.wait_for(kind, timeout, **fields)


@pytest.fixture
def far_engines(tmp_path: Path) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """Two auto-answering ``microsip-engine serve`` processes: A (alice) and C (carol),
    their event streams subscribed before any call."""
    started: list[ServeProcess] = []
    try:
        for name in ("alice", "carol"):
            (tmp_path / name).mkdir()
            started.append(ServeProcess(tmp_path / name, AUTO_ANSWER_INI))
            assert started[-1].events.events == []
        yield started[0], started[1]
    finally:
        for proc in started:
            proc.stop()


def attended_transfer(
    engines: Engines, alice: ServeProcess, carol: ServeProcess
) -> tuple[CallManager, EventLog, int, int]:
    """Call A and C, answered both; ``transfer_attended(A's call, C's call)``; returns
    the manager, its events and the two call numbers once both our legs have ended."""
    manager, events = engines.start()
    to_alice = manager.dial(f"sip:alice@127.0.0.1:{alice.sip_port()}").call
    to_carol = manager.dial(f"sip:carol@127.0.0.1:{carol.sip_port()}").call
    for call in (to_alice, to_carol):
        events.wait_for("media_state", timeout=5, call=call, status="active")
    manager.transfer_attended(to_alice, to_carol)
    assert_notify_progress(events, to_alice)
    for call in (to_alice, to_carol):
        events.wait_for("call_state", timeout=5, call=call, state="disconnected")
    wait_until(lambda: manager.calls() == [], 5, "the engine to drop both legs")
    return manager, events, to_alice, to_carol


def test_attended_transfer_refers_with_replaces_and_ends_both_our_legs(
    engines: Engines, far_engines: tuple[ServeProcess, ServeProcess]
) -> None:
    """Calls to A and C, both answered; ``transfer_attended`` REFERs A to C with a
    Replaces naming our dialog with C. A places that call (its ``transfer`` event,
    role transferee, carries the Replaces) and C answers it in place of ours: C ends
    our call (410 Gone on its side, a BYE to us) and we drop the REFERed leg after
    the final NOTIFY 200."""
    alice, carol = far_engines
    _, events, _, to_carol = attended_transfer(engines, alice, carol)
    replaced = events.of("call_state", call=to_carol, state="confirmed")[0]["sip_call_id"]

    xfer = wait_engine_event(alice, "transfer", role="transferee")
    assert xfer["code"] == 202
    assert xfer["target"].startswith(f"sip:carol@127.0.0.1:{carol.sip_port()}?"), xfer
    assert re.search(r"[?&]Replaces=" + re.escape(replaced) + "%3B", xfer["target"]), xfer
    wait_engine_event(alice, "call_state", call=xfer["new_call"], state="confirmed")

    # C ended the call it had with us because A's INVITE replaced it.
    gone = wait_engine_event(carol, "call_state", state="disconnected")
    assert (gone["code"], gone["sip_call_id"]) == (410, replaced), gone
    assert events.of("call_state", call=to_carol, state="disconnected")[0]["code"] == 200


def test_attended_transfer_target_keeps_and_reports_the_replacing_call(
    engines: Engines, far_engines: tuple[ServeProcess, ServeProcess]
) -> None:
    """The engine as the *target* of an attended transfer (C): the INVITE with
    Replaces becomes a call of its own that C reports (calls(), confirmed, audio),
    A and C stay connected, and the call ends cleanly when A hangs up."""
    alice, carol = far_engines
    attended_transfer(engines, alice, carol)
    new_call = wait_engine_event(alice, "transfer", role="transferee")["new_call"]
    wait_engine_event(alice, "media_state", call=new_call, status="active")
    # A's leg to us and C's leg to us have ended (the BYE and the Replaces), and C
    # answered the replacing call: their events are out, so ``calls`` agrees.
    alice.events.wait(
        lambda e: (
            e["event"] == "call_state" and e["state"] == "disconnected" and e["call"] != new_call
        ),
        5,
        "A's leg to us to end",
    )
    gone = wait_engine_event(carol, "call_state", state="disconnected")
    carol.events.wait(
        lambda e: (
            e["event"] == "call_state" and e["state"] == "confirmed" and e["call"] != gone["call"]
        ),
        5,
        "C to answer the replacing call",
    )
    with alice.client() as a, carol.client() as c:
        a_calls = [(x["call"], x["state"], x["media"]) for x in a.request("calls")]
        reported = [x for x in c.request("calls") if x["state"] == "confirmed"]
        # The INVITE/Replaces is a call of its own at C (PjCall.onCallReplaceRequest).
        assert a_calls == [(new_call, "confirmed", "active")], a_calls
        assert len(reported) == 1, reported
        a.request("hangup", call=new_call)
    wait_engine_event(carol, "call_state", call=reported[0]["call"], state="disconnected")
    assert carol.proc.poll() is None, "C died when the replacing call ended"
    with carol.client() as c:
        assert c.request("calls") == []


# -- 3. being transferred -------------------------------------------------------------


def notify_sipfrags(sipp: Sipp) -> list[tuple[str, str]]:
    """(Subscription-State, sipfrag status line) of every NOTIFY SIPp received."""
    log = sipp._scenario_file("messages.log")
    assert log is not None and log.exists(), "SIPp wrote no messages.log"
    found = re.findall(
        r"^NOTIFY sip:.*?^Subscription-State: *([^\r\n;]+).*?\r?\n\r?\n(SIP/2\.0 [^\r\n]+)",
        log.read_text(errors="replace"),
        flags=re.M | re.S,
    )
    return [(state.strip(), line.strip()) for state, line in found]


def received_invite(sipp: Sipp) -> str:
    log = sipp._scenario_file("messages.log")
    assert log is not None and log.exists(), "SIPp wrote no messages.log"
    text = log.read_text(errors="replace")
    start = text.index("INVITE sip:")
    return text[start : text.index("\n\n", start)]


def test_transferee_accepts_refer_and_calls_the_target(
    engines: Engines, sipp_factory: SippFactory
) -> None:
    """The peer we called (SIPp ``uas_refer``) REFERs us to carol (another SIPp UAS):
    we answer 202, report ``transfer`` (role transferee, the target, the new call),
    call carol (with the REFER's Referred-By), NOTIFY the progress (100 Trying … final
    200 OK, subscription terminated); the peer then hangs up our first call."""
    carol = sipp_factory.uas("uas_answer", bye_timeout_ms=8000, timeout_s=15)
    target = f"sip:carol@{carol.address}"
    referrer = sipp_factory.uas(
        "uas_refer", timeout_s=15, params={"refer_after_ms": 200, "target": target}
    )
    manager, events = engines.start()
    first = manager.dial(referrer.uri("alice")).call

    xfer = events.wait_for("transfer", timeout=5, call=first, role="transferee")
    assert (xfer["code"], xfer["target"], xfer["final"]) == (202, target, False), xfer
    new_call = xfer["new_call"]
    assert isinstance(new_call, int) and new_call != first
    events.wait_for("call_state", timeout=5, call=new_call, state="confirmed")
    events.wait_for("call_state", timeout=5, call=first, state="disconnected")
    [snap] = manager.calls()
    assert (snap.call, snap.direction, snap.remote_uri) == (new_call, "out", target), snap

    result = referrer.wait(10)
    assert result.successful == 1 and result.received("202") == 1, result
    progress = notify_sipfrags(referrer)
    assert progress[0] == ("active", "SIP/2.0 100 Trying"), progress
    assert progress[-1] == ("terminated", "SIP/2.0 200 OK"), progress
    assert re.search(
        rf"^Referred-By: *<sip:transferor@{re.escape(referrer.address)}>",
        received_invite(carol),
        flags=re.M,
    ), received_invite(carol)

    manager.hangup(new_call)
    events.wait_for("call_state", timeout=5, call=new_call, state="disconnected")
    assert carol.wait(10).successful == 1


def test_transferee_when_baresip_transfers_us(
    engines: Engines, baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    """alice (baresip) calls us, we auto-answer, she transfers us to carol with her
    menu's ``transfer <uri>``: we accept the REFER, call carol, and once our NOTIFY
    tells alice it worked she hangs up ("Call transfered"). Our new call carries
    carol's tone."""
    alice, _ = tone_peer(baresip_factory, "alice", ALICE_HZ, tmp_path)
    carol, carol_aor = tone_peer(baresip_factory, "carol", CAROL_HZ, tmp_path)
    manager, events = engines.start(AUTO_ANSWER_INI)
    alice.dial(f"sip:100@127.0.0.1:{sip_port(manager)}")
    first = events.wait_for("incoming_call", timeout=5)["call"]
    events.wait_for("media_state", timeout=5, call=first, status="active")
    alice.wait_call_event("CALL_ESTABLISHED", 5)

    alice.command_ok("transfer", carol_aor)
    xfer = events.wait_for("transfer", timeout=5, call=first, role="transferee")
    assert (xfer["code"], xfer["target"]) == (202, carol_aor), xfer
    new_call = xfer["new_call"]
    events.wait_for("call_state", timeout=5, call=new_call, state="confirmed")
    closed = alice.wait_call_event("CALL_CLOSED", 5)
    assert closed["param"] == "Call transfered", closed
    events.wait_for("call_state", timeout=5, call=first, state="disconnected")
    established = carol.wait_call_event("CALL_ESTABLISHED", 5)
    assert str(established["peeruri"]).startswith("sip:127.0.0.1"), established

    recording = tmp_path / "after-transfer.wav"
    manager.record(new_call, str(recording))
    carol.wait_received_audio(1.2)
    manager.hangup(new_call)
    events.wait_for("recording_saved", timeout=5, call=new_call)
    rate, heard = read_wav(recording)
    assert has_frequency(heard, rate, CAROL_HZ, 0.3, 1.0), "we did not hear carol"
