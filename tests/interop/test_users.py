"""Engines calling each other through Asterisk, messages and voicemail (issue 9).

Two or three ``microsip-engine serve`` processes registered as alice, bob (and
carol) on the session's Asterisk. Each engine plays its own tone into its calls
(alice 440 Hz, bob 700 Hz, carol 850 Hz) and records them; a recording holds both parties,
so the *other* party's tone in it proves that direction of audio.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asterisk import Asterisk
from audio import frequencies_present, has_frequency, write_tone_wav
from engines import Serve, account_ini

pytestmark = pytest.mark.asterisk

ALICE_HZ, BOB_HZ, CAROL_HZ, ASTERISK_TONE_HZ = 440.0, 700.0, 850.0, 1000.0


class Party:
    """A registered engine and the tone it plays into its calls."""

    def __init__(self, asterisk: Asterisk, tmp: Path, user: str, hz: float, **kw: str) -> None:
        self.user = user
        self.engine = Serve(tmp / user, account_ini(asterisk, user, **kw))
        self.wav = write_tone_wav(tmp / f"{user}-{hz:g}.wav", hz, 60.0)
        self.engine.wait_registered()

    def play(self, call: int) -> None:
        self.engine.request("play", call=call, wav=str(self.wav))

    def hears(self, call: int, hz: float, seconds: float = 1.5) -> bool:
        rate, samples = self.engine.record_for(call, seconds)
        found = frequencies_present(samples, rate, 0.2, threshold_db=-30)
        heard = has_frequency(samples, rate, hz, 0.2, tolerance_hz=15, threshold_db=-30)
        print(f"{self.user} call {call}: peaks {found}")
        return heard


@pytest.fixture
def parties(asterisk: Asterisk, tmp_path: Path) -> Iterator[dict[str, Party]]:
    made = {
        "alice": Party(asterisk, tmp_path, "alice", ALICE_HZ),
        "bob": Party(asterisk, tmp_path, "bob", BOB_HZ),
    }
    try:
        yield made
    finally:
        for party in made.values():
            party.engine.stop()


def connect(alice: Party, bob: Party) -> tuple[int, int]:
    """alice calls bob through Asterisk; bob's engine rings and answers with
    ``microsip /answer``; both play their tones. Returns (alice's call, bob's)."""
    a_call: int = alice.engine.request("dial", target="bob")["call"]
    incoming = bob.engine.wait_for("incoming_call")
    assert incoming["remote_user"] == "alice", incoming
    bob.engine.wait_for("call_state", call=incoming["call"], state="incoming")
    ringing = alice.engine.wait_for("call_state", call=a_call, state="early")
    assert ringing["code"] == 180, ringing
    done = bob.engine.microsip("/answer")
    assert done.returncode == 0, done.stderr
    for party, call in ((alice, a_call), (bob, incoming["call"])):
        party.engine.wait_for("call_state", call=call, state="confirmed")
        party.engine.wait_for("media_state", call=call, status="active")
        party.play(call)
    return a_call, incoming["call"]


def ended(party: Party, call: int) -> dict[str, Any]:
    return party.engine.wait_for("call_state", timeout=15, call=call, state="disconnected")


def test_call_between_engines_audio_both_ways_hold_and_resume(
    parties: dict[str, Party],
) -> None:
    """Ring, ``microsip /answer``, each hears the other's tone; while alice holds,
    bob hears nothing of hers, and after resuming he hears her again; hang-up ends
    both legs."""
    alice, bob = parties["alice"], parties["bob"]
    a_call, b_call = connect(alice, bob)
    assert alice.hears(a_call, BOB_HZ) and bob.hears(b_call, ALICE_HZ)

    mark = alice.engine.mark()
    assert alice.engine.request("hold", call=a_call, hold=True) == {"held": True}
    alice.engine.wait_new(mark, "media_state", call=a_call, status="local_hold")
    assert not bob.hears(b_call, ALICE_HZ)

    mark = alice.engine.mark()
    assert alice.engine.request("hold", call=a_call, hold=False) == {"held": False}
    alice.engine.wait_new(mark, "media_state", call=a_call, status="active")
    assert bob.hears(b_call, ALICE_HZ, 2.0)

    alice.engine.request("hangup", call=a_call)
    ended(alice, a_call)
    ended(bob, b_call)


def test_blind_transfer_by_the_caller(parties: dict[str, Party]) -> None:
    """alice talks to bob, then blind-transfers him to 101 (REFER to Asterisk): the
    REFER succeeds (final NOTIFY 200), alice's leg ends, bob now hears 1 kHz."""
    alice, bob = parties["alice"], parties["bob"]
    a_call, b_call = connect(alice, bob)
    assert bob.hears(b_call, ALICE_HZ)
    alice.engine.request("transfer", target="101", call=a_call)
    final = alice.engine.wait_for("transfer", call=a_call, role="transferor", final=True)
    assert final["code"] == 200, final
    ended(alice, a_call)
    assert bob.hears(b_call, ASTERISK_TONE_HZ, 2.0)
    bob.engine.request("hangup", call=b_call)
    ended(bob, b_call)


def test_attended_transfer(parties: dict[str, Party], asterisk: Asterisk, tmp_path: Path) -> None:
    """alice talks to bob, calls carol on a second line (carol's engine answers on
    SRTP), then joins bob with carol (REFER with Replaces): both of alice's calls
    end, and bob and carol hear each other."""
    alice, bob = parties["alice"], parties["bob"]
    carol = Party(
        asterisk, tmp_path, "carol", CAROL_HZ, account="SRTP=mandatory", settings="autoAnswer=all"
    )
    try:
        a_call, b_call = connect(alice, bob)
        second: int = alice.engine.request("dial", target="carol")["call"]
        c_call = carol.engine.wait_for("call_state", state="confirmed")["call"]
        carol.engine.wait_for("media_state", call=c_call, status="active")
        carol.play(c_call)
        alice.engine.wait_for("call_state", call=second, state="confirmed")
        alice.engine.request("transfer_attended", call=a_call, to_call=second)
        ended(alice, a_call)
        ended(alice, second)
        assert bob.hears(b_call, CAROL_HZ, 2.0)
        assert carol.hears(c_call, BOB_HZ, 2.0)
        bob.engine.request("hangup", call=b_call)
        ended(bob, b_call)
        ended(carol, c_call)
    finally:
        carol.engine.stop()


def test_being_transferred_by_asterisk(asterisk: Asterisk, tmp_path: Path) -> None:
    """Extension 700 answers and runs ``Transfer()`` to 101: the engine gets the
    REFER, calls 101 itself and hears its 1 kHz; the first call ends."""
    alice = Party(asterisk, tmp_path, "alice", ALICE_HZ)
    try:
        first = alice.engine.dial("700")
        moved = alice.engine.wait_for("transfer", call=first, role="transferee")
        assert moved["target"].startswith("sip:101@127.0.0.1"), moved
        new_call = moved["new_call"]
        assert new_call is not None, moved
        alice.engine.wait_for("media_state", call=new_call, status="active")
        ended(alice, first)
        assert alice.hears(new_call, ASTERISK_TONE_HZ, 2.0)
    finally:
        alice.engine.stop()


def test_message_relayed_both_ways(parties: dict[str, Party]) -> None:
    """A SIP MESSAGE from alice to bob goes through Asterisk's MessageSend() relay and
    arrives with alice as the sender, and the other way round."""
    alice, bob = parties["alice"], parties["bob"]
    for sender, receiver, text in ((alice, bob, "hello bob ünïcode"), (bob, alice, "hi alice")):
        sender.engine.request("message", target=receiver.user, text=text)
        to = f"sip:{receiver.user}@"
        status = sender.engine.wait(
            lambda e, to=to: e.get("event") == "message_status" and e["to_uri"].startswith(to),
            15,
            f"the status of the MESSAGE to {receiver.user}",
        )
        assert status["code"] in {200, 202}, status
        got = receiver.engine.wait_for("message_received", body=text)
        assert f"sip:{sender.user}@" in got["from_uri"], got


def test_voicemail_lights_the_message_waiting_indicator(asterisk: Asterisk, tmp_path: Path) -> None:
    """bob leaves alice a voicemail (dials ``*alice``, talks, hangs up): alice's engine,
    which has a ``voicemailNumber`` (so it subscribes to message-summary), gets an
    ``mwi`` event with a waiting message."""
    alice = Party(asterisk, tmp_path, "alice", ALICE_HZ, account="voicemailNumber=800")
    bob = Party(asterisk, tmp_path, "bob", BOB_HZ)
    try:
        call = bob.engine.dial("*alice")
        bob.play(call)
        bob.hears(call, BOB_HZ, 2.0)  # two seconds of message
        bob.engine.request("hangup", call=call)
        ended(bob, call)
        mwi = alice.engine.wait(
            lambda e: e.get("event") == "mwi" and e.get("waiting") is True, 20, "MWI waiting"
        )
        assert mwi["new"] >= 1, mwi
    finally:
        alice.engine.stop()
        bob.engine.stop()
