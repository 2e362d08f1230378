"""Call control on the wire (issue 5): hold, mute, conference, DTMF and SIP MESSAGE.

Real peers on 127.0.0.1: a SIPp UAS that accepts re-INVITEs (``uas_hold``) and
logs every message, a SIPp UAC that sends SIP INFO DTMF (``uac_info_dtmf``),
and baresip far ends that auto-answer with a tone as their microphone, record
what they hear, report RFC 2833 *and* SIP INFO digits as ``CALL_DTMF_START``
events, print SIP traffic (``-s``) and received MESSAGEs. Every wait has a hard
timeout; audio is judged by measuring segments of real recordings by time
(an offset into a WAV is the wall-clock time since the first frame).
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from audio import (
    frequencies_present,
    has_frequency,
    read_wav,
    rms_dbfs,
    write_tone_wav,
    write_wav,
)
from enginekit import BASE_INI, Engines, EventLog, engines_fixture, run_command_line, sip_port
from peers.baresip import Baresip, BaresipFactory
from peers.process import wait_until
from peers.sipp import Sipp, SippFactory

from engine.errors import EngineError
from engine.manager import CallManager

pytestmark = pytest.mark.peers

#: Below this a segment counts as silence (a held or muted stream measures about
#: -84 dBFS at baresip and digital zero at the engine; a tone about -9 dBFS).
SILENT_DBFS = -50.0
#: Kept clear of every segment boundary: re-INVITE round trips, jitter buffers.
MARGIN = 0.3
#: DTMF '5': its row and column frequencies (Hz).
DTMF_5_HZ = (770.0, 1336.0)


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def settings_ini(extra: str) -> str:
    """BASE_INI (local account only) with more ``[Settings]`` lines."""
    return BASE_INI.replace("[Account0]", f"{extra.strip()}\n[Account0]")


def tone_peer(factory: BaresipFactory, name: str, hz: float, tmp_path: Path) -> tuple[Baresip, str]:
    """An auto-answering baresip whose microphone is a ``hz`` tone; returns it and its AOR."""
    peer = factory(name, wav=write_tone_wav(tmp_path / f"{name}-{hz:g}.wav", hz, 90.0))
    return peer, peer.add_local_account(name)


def describe(samples: Any, rate: int, start: float, end: float) -> str:
    peaks = [round(f) for f in frequencies_present(samples, rate, start, end)]
    return f"{start:.2f}-{end:.2f} s: {rms_dbfs(samples, rate, start, end):.0f} dBFS, peaks {peaks}"


def assert_tone(samples: Any, rate: int, hz: float, start: float, end: float) -> None:
    assert end - start > 0.2, f"segment {start:.2f}-{end:.2f} s too short to measure"
    assert has_frequency(samples, rate, hz, start, end), f"no {hz:g} Hz in " + describe(
        samples, rate, start, end
    )
    assert rms_dbfs(samples, rate, start, end) > -30, describe(samples, rate, start, end)


def is_silent(samples: Any, rate: int, start: float, end: float) -> bool:
    assert end - start > 0.2, f"segment {start:.2f}-{end:.2f} s too short to measure"
    return rms_dbfs(samples, rate, start, end) < SILENT_DBFS


def received_requests(sipp: Sipp, method: str) -> list[str]:
    """The ``method`` requests SIPp received, in order, from its -trace_msg log."""
    log = sipp._scenario_file("messages.log")
    assert log is not None and log.exists(), "SIPp wrote no messages.log"
    blocks = re.split(r"^-{20,} .*$", log.read_text(errors="replace"), flags=re.M)
    out = []
    for block in blocks:
        head, _, message = block.strip().partition("\n")
        if "message received" in head and message.lstrip().startswith(f"{method} "):
            out.append(message)
    return out


def sdp_direction(message: str) -> str:
    found = re.findall(r"^a=(sendrecv|sendonly|recvonly|inactive)\s*$", message, flags=re.M)
    return found[0] if found else "sendrecv"  # RFC 3264: no attribute means sendrecv


def wait_media(events: EventLog, call: int, status: str, after: float, timeout: float = 5.0) -> Any:
    """The first media_state of ``call`` with ``status`` at or after Unix time ``after``."""
    return events.wait(
        lambda e: (
            e["event"] == "media_state"
            and e["call"] == call
            and e["status"] == status
            and e["time"] >= after
        ),
        timeout,
        f"media_state {status} of call {call}",
    )


def dtmf_digits(peer: Baresip, since: int = 0) -> list[str]:
    return [
        str(e.get("param"))
        for e in peer.events()[since:]
        if e.get("class") == "call" and e.get("type") == "CALL_DTMF_START"
    ]


def wait_dtmf(peer: Baresip, digit: str, timeout: float = 5.0, since: int = 0) -> float:
    """Wait for baresip to report ``digit``; returns the Unix time it arrived."""
    peer.wait_event(
        lambda e: e.get("type") == "CALL_DTMF_START" and e.get("param") == digit,
        timeout,
        since=since,
        what=f"CALL_DTMF_START {digit!r}",
    )
    return time.time()


def answered_call(manager: CallManager, events: EventLog, target: str) -> tuple[int, float]:
    """Dial ``target`` and wait for audio; returns the call and when audio began."""
    call = manager.dial(target).call
    active = events.wait_for("media_state", timeout=5, call=call, status="active")
    return call, float(active["time"])


# -- 1. hold / resume ---------------------------------------------------------------


def test_hold_and_resume_reinvite_directions_events_and_audio(
    engines: Engines, sipp_factory: SippFactory, tmp_path: Path
) -> None:
    """Hold sends ``a=sendonly`` (SIPp answers recvonly) and reports local_hold/sendonly;
    resume, by the API and by MicroSIP's ``msip:hold`` toggle, sends ``a=sendrecv``.
    The engine records SIPp's 1 kHz: silent while held, the tone after each resume.

    The engine plays digital silence into the call so the recording has a source
    while held and keeps wall-clock time (see the next test for why).
    """
    manager, events = engines.start()
    uas = sipp_factory.uas("uas_hold", bye_timeout_ms=10000, timeout_s=20)
    call, _ = answered_call(manager, events, uas.uri("hold"))
    silence = write_wav(tmp_path / "silence.wav", np.zeros(8000 * 30))
    recording = tmp_path / "hold.wav"
    manager.play(call, str(silence))
    rec_start = time.time()
    manager.record(call, str(recording))

    marks = [rec_start]  # when each phase began: active, held, active, held, active
    expected = ["local_hold", "active", "local_hold", "active"]
    for step, status in enumerate(expected):
        time.sleep(1.2)  # audio to measure in this phase
        before = time.time()
        if step == 0:
            assert manager.hold(call, True) is True
        elif step == 1:
            assert manager.hold(call, False) is False
        else:  # MicroSIP's toggle on the current call
            held = run_command_line(manager, "msip:hold")[0]["result"]["held"]
            assert held is (status == "local_hold")
        event = wait_media(events, call, status, before)
        assert event["direction"] == ("sendonly" if status == "local_hold" else "sendrecv")
        assert manager.call_info(call).media == status
        marks.append(float(event["time"]))
    time.sleep(1.2)
    end = time.time()
    manager.hangup(call)
    events.wait_for("call_state", timeout=5, call=call, state="disconnected")
    saved = events.wait_for("recording_saved", timeout=5, call=call)
    assert saved["complete"]

    result = uas.wait(10)
    assert result.successful == 1 and result.failed == 0, result
    invites = received_requests(uas, "INVITE")
    assert [sdp_direction(m) for m in invites] == [
        "sendrecv",  # the call
        "sendonly",  # hold(call, True)
        "sendrecv",  # hold(call, False)
        "sendonly",  # msip:hold
        "sendrecv",  # msip:hold again
    ]

    rate, samples = read_wav(recording)
    assert abs(len(samples) / rate - (end - rec_start)) < 0.5, "the recording lost time"
    bounds = [m - rec_start for m in marks] + [end - rec_start]
    for phase, (start, stop) in enumerate(itertools.pairwise(bounds)):
        window = (start + MARGIN, stop - 0.1)
        if phase % 2:  # held: the 1 kHz that SIPp keeps sending must not be heard
            assert is_silent(samples, rate, *window), describe(samples, rate, *window)
        else:
            assert_tone(samples, rate, 1000.0, *window)


def test_recording_keeps_call_time_while_held(
    engines: Engines, sipp_factory: SippFactory, tmp_path: Path
) -> None:
    """A recording made without a player spans the whole call, held time as silence.

    MicroSIP connects the microphone (bridge slot 0) to its recorder as well as
    the call, so its recordings never lose time.
    """
    manager, events = engines.start()
    uas = sipp_factory.uas("uas_hold", bye_timeout_ms=10000, timeout_s=20)
    call, _ = answered_call(manager, events, uas.uri("hold"))
    recording = tmp_path / "held.wav"
    rec_start = time.time()
    manager.record(call, str(recording))
    time.sleep(1.0)
    before = time.time()
    manager.hold(call, True)
    held_at = float(wait_media(events, call, "local_hold", before)["time"])
    time.sleep(1.2)
    before = time.time()
    manager.hold(call, False)
    resumed_at = float(wait_media(events, call, "active", before)["time"])
    time.sleep(1.0)
    wall = time.time() - rec_start
    manager.hangup(call)
    saved = events.wait_for("recording_saved", timeout=5, call=call)
    uas.wait(10)
    rate, samples = read_wav(recording)
    seconds = len(samples) / rate
    # The hold is in the WAV as silence: the recording keeps wall-clock time.
    assert seconds >= wall - 0.5, f"WAV {seconds:.2f} s for {wall:.2f} s ({saved})"
    assert_tone(samples, rate, 1000.0, MARGIN, held_at - rec_start - 0.1)
    window = (held_at - rec_start + MARGIN, resumed_at - rec_start - 0.1)
    assert is_silent(samples, rate, *window), describe(samples, rate, *window)
    assert_tone(samples, rate, 1000.0, resumed_at - rec_start + MARGIN, seconds - 0.1)


# -- 2. mute and volume ------------------------------------------------------------------


def test_mic_mute_silences_what_the_peer_hears(
    engines: Engines, baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    """The engine plays 1 kHz into a call to baresip (440 Hz). Muted by the API and by
    ``msip:micmute``, baresip's recording goes silent; unmuted (API, ``msip:micunmute``)
    it carries the tone again. What we hear (440 Hz in our recording) is untouched."""
    bob, aor = tone_peer(baresip_factory, "bob", 440.0, tmp_path)
    manager, events = engines.start()
    call, audio_at = answered_call(manager, events, aor)
    manager.play(call, str(write_tone_wav(tmp_path / "1k.wav", 1000.0, 30.0)))
    ours = tmp_path / "ours.wav"
    rec_start = time.time()
    manager.record(call, str(ours))

    steps: list[Callable[[], dict[str, Any]]] = [
        lambda: manager.audio_levels(mic_muted=True),
        lambda: manager.audio_levels(mic_muted=False),
        lambda: run_command_line(manager, "msip:micmute")[0]["result"],
        lambda: run_command_line(manager, "msip:micunmute")[0]["result"],
    ]
    marks = [time.time()]
    for index, step in enumerate(steps):
        time.sleep(1.0)
        marks.append(time.time())
        assert step()["mic_muted"] is (index % 2 == 0)
    time.sleep(1.0)
    marks.append(time.time())
    manager.hangup(call)
    bob.wait_call_event("CALL_CLOSED", 5)
    events.wait_for("recording_saved", timeout=5, call=call)

    rate, heard = bob.last_recording(10).read_received()  # what the engine sent
    rrate, ours_samples = read_wav(ours)
    muted_but_loud, lost_peer = [], []
    for phase, (start, stop) in enumerate(itertools.pairwise(marks)):
        window = (start - audio_at + MARGIN, stop - audio_at - 0.1)
        our_window = (start - rec_start + MARGIN, stop - rec_start - 0.1)
        if phase % 2 == 0:
            assert_tone(heard, rate, 1000.0, *window)
            continue
        if not is_silent(heard, rate, *window):
            muted_but_loud.append(describe(heard, rate, *window))
        if not has_frequency(ours_samples, rrate, 440.0, *our_window):
            lost_peer.append(describe(ours_samples, rrate, *our_window))
    assert not muted_but_loud, f"the peer still heard us while muted: {muted_but_loud}"
    assert not lost_peer, f"muting the mic muted the far end in our recording: {lost_peer}"


def test_volume_steps_and_mute_verbs_change_status_and_are_saved(
    engines: Engines, tmp_path: Path
) -> None:
    """``msip:micdown`` / ``speakup`` step by 10 (0-100), show in ``status()["audio"]``
    and are saved as ``volumeInput`` / ``volumeOutput``; the mute toggles flip."""
    manager, _ = engines.start(settings_ini("volumeInput=100\nvolumeOutput=50"))
    assert manager.status()["audio"]["mic_volume"] == 100
    run_command_line(manager, "msip:micdown")
    run_command_line(manager, "msip:micdown")
    assert manager.volume_step("speaker", 1)["speaker_volume"] == 60
    assert run_command_line(manager, "msip:speakup")[0]["result"]["speaker_volume"] == 70
    audio = manager.status()["audio"]
    assert (audio["mic_volume"], audio["speaker_volume"]) == (80, 70)
    ini = (tmp_path / "microsip.ini").read_text()
    assert re.search(r"^volumeInput=80$", ini, re.M) and re.search(r"^volumeOutput=70$", ini, re.M)
    for _ in range(12):  # clamps at 100
        run_command_line(manager, "msip:micup")
    assert manager.status()["audio"]["mic_volume"] == 100
    assert run_command_line(manager, "msip:micmuteclick")[0]["result"]["mic_muted"] is True
    assert run_command_line(manager, "msip:micmuteclick")[0]["result"]["mic_muted"] is False
    assert run_command_line(manager, "msip:speakmute")[0]["result"]["speaker_muted"] is True
    assert manager.toggle_mute("speaker")["speaker_muted"] is False


# -- 3. conference ----------------------------------------------------------------------


def test_conference_each_peer_hears_the_other_and_split_separates_them(
    engines: Engines, baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    """Calls to bob (440 Hz) and carol (700 Hz), merged on the bridge: each hears the
    other (and not itself); before the merge and after the split both hear silence."""
    bob, bob_aor = tone_peer(baresip_factory, "bob", 440.0, tmp_path)
    carol, carol_aor = tone_peer(baresip_factory, "carol", 700.0, tmp_path)
    manager, events = engines.start()
    bob_call, bob_at = answered_call(manager, events, bob_aor)
    carol_call, carol_at = answered_call(manager, events, carol_aor)
    time.sleep(1.0)
    merged_at = time.time()
    assert manager.conference([bob_call, carol_call]) == [bob_call, carol_call]
    time.sleep(1.5)
    split_at = time.time()
    assert manager.split() == []
    time.sleep(1.2)
    end = time.time()
    manager.hangup(bob_call)
    manager.hangup(carol_call)
    for peer, audio_at, own, other in (
        (bob, bob_at, 440.0, 700.0),
        (carol, carol_at, 700.0, 440.0),
    ):
        peer.wait_call_event("CALL_CLOSED", 5)
        rate, heard = peer.last_recording(10).read_received()
        name = peer.name
        before = (0.2, merged_at - audio_at - 0.1)
        during = (merged_at - audio_at + MARGIN, split_at - audio_at - 0.1)
        after = (split_at - audio_at + MARGIN, end - audio_at - 0.1)
        assert is_silent(heard, rate, *before), f"{name}: {describe(heard, rate, *before)}"
        assert_tone(heard, rate, other, *during)
        assert not has_frequency(heard, rate, own, *during, threshold_db=-30), (
            f"{name} hears itself: {describe(heard, rate, *during)}"
        )
        assert is_silent(heard, rate, *after), f"{name}: {describe(heard, rate, *after)}"


# -- 4. DTMF -----------------------------------------------------------------------------


def test_dtmf_each_method_arrives_at_baresip_and_its_digits_come_back(
    engines: Engines, baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    """DTMFMethod 2 (RFC 2833) and 3 (SIP INFO, ``Signal=<d>``/``Duration=160``) arrive
    as baresip DTMF events; 1 (in-band) arrives as the dual tones in its recording and
    not as events; ``/dtmf:`` uses DTMFMethod (0 = auto → RFC 2833). Digits baresip
    sends (RFC 2833) become ``dtmf_received`` events."""
    bob, aor = tone_peer(baresip_factory, "bob", 440.0, tmp_path)
    manager, events = engines.start()
    call, _ = answered_call(manager, events, aor)
    bob.wait_call_event("CALL_ESTABLISHED", 5)
    mark = bob.event_mark()

    # In-band first: while pjmedia sends RFC 2833 events it sends no audio frames.
    # After the answer pjsua offers again with one codec (baresip answered with
    # several): the tones go into the stream that offer settles.
    wait_until(
        lambda: sum(e.get("type") == "CALL_REMOTE_SDP" for e in bob.events()) >= 2,
        5,
        "bob to receive the codec-narrowing offer",
    )
    assert manager.send_dtmf("5", call, method=1) == "inband"
    time.sleep(0.5)  # 160 ms of tone, then silence
    assert manager.send_dtmf("12", call, method=2) == "rfc2833"
    wait_dtmf(bob, "2", since=mark)
    assert manager.send_dtmf("34", call, method=3) == "info"
    wait_dtmf(bob, "4", since=mark)
    assert run_command_line(manager, "/dtmf:9")[0]["result"] == {"method": "rfc2833"}
    wait_dtmf(bob, "9", since=mark)
    for digit in "70":
        assert bob.command_ok("sndcode", digit) == ""
        events.wait_for("dtmf_received", timeout=5, call=call, digit=digit)
    manager.hangup(call)
    bob.wait_call_event("CALL_CLOSED", 5)

    assert dtmf_digits(bob, mark) == ["1", "2", "3", "4", "9"]  # no "5": in-band only
    received = [(e["digit"], e["method"]) for e in events.of("dtmf_received", call=call)]
    assert received == [("7", "rfc2833"), ("0", "rfc2833")]
    assert bob.process is not None
    trace = bob.process.stdout_path.read_text(errors="replace")
    infos = re.findall(
        r"^INFO sip:.*?^Content-Type: application/dtmf-relay\r?\n.*?\r?\n\r?\n"
        r"Signal=(.)\r?\nDuration=(\d+)",
        trace,
        flags=re.M | re.S,
    )
    assert infos == [("3", "160"), ("4", "160")], infos

    # The engine sends silence but for the burst. No timing here: baresip's recording
    # of what it received has no samples for the RFC 2833 event packets' duration.
    rate, heard = bob.last_recording(10).read_received()
    starts = np.arange(0.0, len(heard) / rate - 0.12, 0.02)
    loud = [w for w in starts if rms_dbfs(heard, rate, w, w + 0.12) > -30]
    assert loud, "no in-band tone in " + describe(heard, rate, 0.0, len(heard) / rate)
    # The loudest window lies inside the 160 ms burst; the first loud one may hold its
    # onset and silence, whose spectral leakage moves the peaks.
    top = max(loud, key=lambda w: rms_dbfs(heard, rate, w, w + 0.12))
    burst = (top, top + 0.12)
    for hz in DTMF_5_HZ:
        assert has_frequency(heard, rate, hz, *burst, tolerance_hz=10), describe(
            heard, rate, *burst
        )


def test_sip_info_dtmf_from_sipp_arrives_as_events(
    engines: Engines, sipp_factory: SippFactory
) -> None:
    """SIPp calls in and sends ``application/dtmf-relay`` INFOs for 5 and #: both arrive
    as ``dtmf_received`` with method ``info``, each INFO answered 200."""
    manager, events = engines.start(settings_ini("autoAnswer=all"))
    sipp = sipp_factory.uac(
        f"sip:100@127.0.0.1:{sip_port(manager)}",
        "uac_info_dtmf",
        hold_ms=200,
        params={"digit1": "5", "digit2": "#", "pause_ms": 200},
    )
    first = events.wait_for("dtmf_received", timeout=8, digit="5")
    events.wait_for("dtmf_received", timeout=5, digit="#")
    result = sipp.wait(10)
    assert result.successful == 1 and result.received("200") == 4, result
    got = [(e["digit"], e["method"]) for e in events.of("dtmf_received", call=first["call"])]
    assert got == [("5", "info"), ("#", "info")]


def test_post_dial_digits_follow_the_answer_with_microsips_timing(
    engines: Engines, baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    """``sip:bob@…,45,6`` dials bob, sends 45 one second after the answer and 6 a further
    1000 + 200 × 2 ms later (MicroSIP's post-dial timing)."""
    bob, _ = tone_peer(baresip_factory, "bob", 440.0, tmp_path)
    manager, events = engines.start()
    result = run_command_line(manager, f"sip:bob@{bob.sip_address},45,6")
    call = result[0]["result"]["call"]
    answered = float(events.wait_for("call_state", timeout=5, call=call, state="confirmed")["time"])
    arrived = {digit: wait_dtmf(bob, digit) - answered for digit in "456"}
    manager.hangup(call)
    assert dtmf_digits(bob) == ["4", "5", "6"]
    assert 0.9 <= arrived["4"] <= 1.5, arrived
    assert arrived["4"] <= arrived["5"] <= arrived["4"] + 0.5, arrived
    assert 2.3 <= arrived["6"] <= 2.9, arrived


# -- 5. SIP MESSAGE ------------------------------------------------------------------------


def test_sip_message_both_ways_with_baresip_keeps_utf8(
    engines: Engines, baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    """engine → baresip (and a 200 ``message_status``), baresip → engine
    (``message_received`` with the exact body), with non-ASCII text."""
    bob, aor = tone_peer(baresip_factory, "bob", 440.0, tmp_path)
    manager, events = engines.start()
    text = "Grüße, 東京 ✓"
    manager.send_message(aor, text)
    assert bob.wait_message(lambda m: m.text == text, 5).text == text
    status = events.wait_for("message_status", timeout=5, to_uri=aor)
    assert (status["code"], status["reason"]) == (200, "OK")

    reply = "Antwort: ça marche — 東京 ✓"
    bob.send_message(f"sip:100@127.0.0.1:{sip_port(manager)}", reply)
    got = events.wait_for("message_received", timeout=5)
    assert got["body"] == reply
    assert got["from_uri"].startswith("sip:bob@127.0.0.1")
    assert got["content_type"].startswith("text/plain")


def test_disable_messaging_refuses_to_send(engines: Engines) -> None:
    """``disableMessaging=1``: the API and MicroSIP's ``number text`` form both refuse."""
    manager, events = engines.start(settings_ini("disableMessaging=1"))
    with pytest.raises(EngineError) as info:
        manager.send_message("sip:bob@127.0.0.1:9", "hello")
    assert info.value.code == "disabled"
    with pytest.raises(EngineError) as info:
        run_command_line(manager, "sip:bob@127.0.0.1:9 hello there")
    assert info.value.code == "disabled"
    assert events.of("message_status") == []
