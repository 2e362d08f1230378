"""The peer library on the wire, without our engine: Kamailio, SIPp and baresip
talking to each other over loopback, audio checked with numpy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import audio
import pytest
from peers import BaresipFactory, Kamailio, SippFactory, options_status

pytestmark = pytest.mark.peers

TOLERANCE_HZ = 3.0
BARESIP_TONE_HZ = BaresipFactory.DEFAULT_TONE_HZ  # every baresip's microphone
SKIP_S = 0.2  # jitter-buffer start-up at the head of a recording


def assert_tone(rate_and_samples: tuple[int, audio.FloatArray], expected_hz: float) -> None:
    rate, samples = rate_and_samples
    assert len(samples) / rate > 0.8, f"recording too short: {len(samples) / rate:.2f}s"
    found = audio.dominant_frequency(samples, rate, start_s=SKIP_S)
    assert abs(found - expected_hz) <= TOLERANCE_HZ, f"heard {found:.1f} Hz, want {expected_hz}"
    assert audio.rms_dbfs(samples, rate, start_s=SKIP_S) > -30.0, "recording is near silent"


def test_audio_helpers_measure_tones(tmp_path: Path) -> None:
    """The measuring stick: WAV and PCMU round trips keep a two-tone chord."""
    wav = audio.write_tone_wav(tmp_path / "chord.wav", [440, 1000], 1.0)
    rate, samples = audio.read_wav(wav)
    assert rate == 8000
    assert [round(f) for f in audio.frequencies_present(samples, rate)] == [440, 1000]
    pcmu = audio.wav_to_pcmu(wav, tmp_path / "chord.pcmu")
    decoded = audio.ulaw_decode(pcmu.read_bytes())
    assert audio.has_frequency(decoded, 8000, 440) and audio.has_frequency(decoded, 8000, 1000)
    assert abs(audio.dominant_frequency(audio.tone(1234.5, 0.5), 8000) - 1234.5) < 0.5


def test_kamailio_registers_baresip_with_digest_auth(
    kamailio: Kamailio, baresip_factory: BaresipFactory
) -> None:
    """OPTIONS gets 200; bob registers (401 -> 200) and shows up in usrloc; a
    wrong password gets 403; un-REGISTER removes the contact."""
    assert options_status("127.0.0.1", kamailio.port) == 200

    bob = baresip_factory("bob")
    ok = bob.register("bob", kamailio.domain, "bob-secret")
    assert ok["param"].startswith("200")
    contacts = kamailio.registrations("bob")
    assert len(contacts) == 1 and contacts[0].endswith(f"@{bob.sip_address}"), contacts

    fail = bob.register("alice", kamailio.domain, "not-her-password", expect="REGISTER_FAIL")
    assert fail["param"].startswith(("403", "401")), fail
    assert kamailio.registrations("alice") == []

    kamailio.add_user("erin", "erin-secret")
    bob.register("erin", kamailio.domain, "erin-secret")
    assert len(kamailio.registrations("erin")) == 1

    bob.unregister(kamailio.aor("bob"))
    kamailio.wait_registrations("bob", 0)
    assert options_status("127.0.0.1", kamailio.port) == 200, "Kamailio died"


def test_sipp_call_through_kamailio_is_recorded_by_baresip(
    kamailio: Kamailio,
    baresip_factory: BaresipFactory,
    sipp_factory: SippFactory,
    tone_wav: Callable[..., Path],
) -> None:
    """SIPp calls bob via Kamailio streaming 1 kHz; baresip auto-answers, both
    directions are recorded with the right tones; baresip's BYE ends SIPp's call."""
    bob = baresip_factory("bob")
    bob.register("bob", kamailio.domain, "bob-secret")

    mark = bob.event_mark()
    sipp = sipp_factory.uac(kamailio.aor("bob"), "uac_wait_bye", wav=tone_wav(1000))
    established = bob.wait_call_event("CALL_ESTABLISHED", since=mark)
    assert established["direction"] == "incoming"
    bob.wait_received_audio(1.2)
    bob.hangup()

    result = sipp.wait(timeout=10)
    assert (result.successful, result.failed) == (1, 0), sipp.log_tail()
    bob.wait_call_event("CALL_CLOSED", since=mark)
    recording = bob.last_recording()
    assert recording.call_id == established["id"]
    assert_tone(recording.read_received(), 1000)
    assert_tone(recording.read_sent(), BARESIP_TONE_HZ)


def test_baresip_calls_sipp_uas_directly(
    baresip_factory: BaresipFactory, sipp_factory: SippFactory
) -> None:
    """baresip dials a SIPp UAS (180, 200 with PCMU) and hears SIPp's 1 kHz tone."""
    uas = sipp_factory.uas("uas_answer")
    alice = baresip_factory("alice")
    alice.add_local_account("alice")

    mark = alice.dial(uas.uri("carol"))
    alice.wait_call_event("CALL_RINGING", since=mark)
    alice.wait_call_event("CALL_ESTABLISHED", since=mark)
    alice.wait_received_audio(1.0)
    alice.hangup()

    result = uas.wait(timeout=10)
    assert (result.successful, result.failed) == (1, 0), uas.log_tail()
    assert result.received("BYE") == 1
    assert_tone(alice.last_recording().read_received(), 1000)


def test_sipp_uas_behind_kamailio_copies_record_route(
    kamailio: Kamailio, baresip_factory: BaresipFactory, sipp_factory: SippFactory
) -> None:
    """alice (authenticating with 407) calls carol, a SIPp UAS known to
    Kamailio only via ul.add; ACK and BYE follow the Record-Route."""
    uas = sipp_factory.uas("uas_answer")
    kamailio.add_contact("carol", uas.uri("carol"))
    alice = baresip_factory("alice")
    alice.register("alice", kamailio.domain, "alice-secret")

    mark = alice.dial(kamailio.aor("carol"))
    alice.wait_call_event("CALL_ESTABLISHED", since=mark)
    alice.wait_received_audio(0.5)
    alice.hangup()

    result = uas.wait(timeout=10)
    assert (result.successful, result.failed) == (1, 0), uas.log_tail()
    assert result.received("ACK") == 1 and result.received("BYE") == 1


def test_sipp_uas_ring_is_cancelled_through_kamailio(
    kamailio: Kamailio, baresip_factory: BaresipFactory, sipp_factory: SippFactory
) -> None:
    """A ringing SIPp UAS gets the CANCEL relayed by Kamailio and ends with 487."""
    uas = sipp_factory.uas("uas_ring")
    kamailio.add_contact("dave", uas.uri("dave"))
    alice = baresip_factory("alice")
    alice.register("alice", kamailio.domain, "alice-secret")

    mark = alice.dial(kamailio.aor("dave"))
    alice.wait_call_event("CALL_RINGING", since=mark)
    alice.hangup()

    result = uas.wait(timeout=10)
    assert (result.successful, result.failed) == (1, 0), uas.log_tail()
    assert (result.received("CANCEL"), result.sent("487"), result.sent("480")) == (1, 1, 0)


def test_sipp_hangs_up_over_tcp(baresip_factory: BaresipFactory, sipp_factory: SippFactory) -> None:
    """uac_send_bye over TCP straight to baresip: SIPp's BYE closes the call."""
    bob = baresip_factory("bob")
    bob.add_local_account("bob")

    mark = bob.event_mark()
    sipp = sipp_factory.uac(bob.uri("bob"), "uac_send_bye", transport="tcp", hold_ms=1200)
    result = sipp.wait(timeout=10)
    assert (result.successful, result.failed) == (1, 0), sipp.log_tail()
    closed = bob.wait_call_event("CALL_CLOSED", since=mark)
    assert closed["direction"] == "incoming"
    assert_tone(bob.last_recording().read_received(), 1000)


def test_sipp_counts_answered_and_busy_calls(
    baresip_factory: BaresipFactory, sipp_factory: SippFactory
) -> None:
    """Five parallel calls to a baresip limited to four: four answered, one 486."""
    bob = baresip_factory("bob", max_calls=4)
    bob.add_local_account("bob")

    sipp = sipp_factory.uac(bob.uri("bob"), "uac_answer_or_busy", calls=5, rate=50, hold_ms=1500)
    result = sipp.wait(timeout=15)
    assert (result.successful, result.failed) == (5, 0), sipp.log_tail()
    assert result.received("200", occurrence=0) == 4  # the 200s to INVITE
    assert result.received("486") == 1


def test_message_between_baresips_keeps_utf8(
    kamailio: Kamailio, baresip_factory: BaresipFactory
) -> None:
    """carol sends bob a non-ASCII MESSAGE through Kamailio (authenticated)."""
    bob = baresip_factory("bob")
    bob.register("bob", kamailio.domain, "bob-secret")
    carol = baresip_factory("carol")
    carol.register("carol", kamailio.domain, "carol-secret")

    text = 'Grüße aus Köln — 日本語テキスト, emoji 🎧, "quotes" & <tags>'
    carol.send_message(kamailio.aor("bob"), text)
    received = bob.wait_message(lambda m: m.text == text)
    assert received.peer == kamailio.aor("carol")

    bob.send_message(kamailio.aor("carol"), "ответ")
    assert carol.wait_message().text == "ответ"
