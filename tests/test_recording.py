"""Call recording: MicroSIP's file names, both parties in the WAV, complete after SIGTERM."""

from __future__ import annotations

import re
import signal
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from audio import frequencies_present, has_frequency, read_wav, write_tone_wav
from enginekit import BASE_INI, Engines, ServeProcess, engines_fixture, sip_port
from peers.process import wait_until
from peers.sipp import SippFactory

pytestmark = pytest.mark.peers

# YYYYMMDD-HHMMSS-<remote user>-<incoming|outgoing>-<account label, made file-safe>.wav
NAME = re.compile(r"^\d{8}-\d{6}-sipp-incoming-Local_\(call_by_IP_address\)\.wav$")


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def ini(tmp_path: Path, extra: str = "") -> str:
    settings = f"autoAnswer=all\nautoRecording=1\nrecordingPath={tmp_path / 'rec'}\n{extra}"
    return BASE_INI.replace("[Account0]", settings + "[Account0]")


def test_auto_recording_holds_both_parties_under_microsips_name(
    engines: Engines, sipp_factory: SippFactory, tmp_path: Path
) -> None:
    """SIPp sends 1 kHz; the engine plays 440 Hz into the call: the WAV has both."""
    manager, events = engines.start(ini(tmp_path))
    sipp = sipp_factory.uac(
        f"sip:100@127.0.0.1:{sip_port(manager)}",
        "uac_policy",
        hold_ms=3000,
        params={"headers": "Subject: rec", "caller": "sipp"},
    )
    confirmed = events.wait_for("call_state", state="confirmed")
    manager.play(confirmed["call"], str(write_tone_wav(tmp_path / "440.wav", 440.0, 30.0)))
    assert sipp.wait(20).successful == 1
    saved = events.wait_for("recording_saved", call=confirmed["call"])
    path = Path(saved["path"])
    assert path.parent == tmp_path / "rec" and NAME.match(path.name), path.name
    assert saved["complete"] and saved["seconds"] > 2
    rate, samples = read_wav(path)
    found = frequencies_present(samples, rate, 0.5, threshold_db=-25)
    assert has_frequency(samples, rate, 1000.0, 0.5, threshold_db=-25), found
    assert has_frequency(samples, rate, 440.0, 0.5, threshold_db=-25), found


def test_on_demand_recording_and_stop(
    engines: Engines, sipp_factory: SippFactory, tmp_path: Path
) -> None:
    manager, events = engines.start(ini(tmp_path).replace("autoRecording=1", "autoRecording=0"))
    sipp = sipp_factory.uac(
        f"sip:100@127.0.0.1:{sip_port(manager)}",
        "uac_policy",
        hold_ms=3000,
        params={"headers": "Subject: rec", "caller": "sipp"},
    )
    call = events.wait_for("call_state", state="confirmed")["call"]
    path = Path(manager.record(call))
    assert NAME.match(path.name)
    time.sleep(1.0)  # one second of audio to record
    manager.stop_recording(call)
    saved = events.wait_for("recording_saved", call=call)
    assert saved["complete"] and 0.5 < saved["seconds"] < 2.5
    with wave.open(str(path)) as w:
        assert w.getnframes() > 0
    sipp.wait(20)


def test_recording_is_a_complete_wav_after_sigterm(
    tmp_path: Path, sipp_factory: SippFactory
) -> None:
    proc = ServeProcess(tmp_path, ini(tmp_path))
    try:
        sipp = sipp_factory.uac(
            f"sip:100@127.0.0.1:{proc.sip_port()}",
            "uac_policy",
            hold_ms=10000,
            params={"headers": "Subject: rec", "caller": "sipp"},
        )
        client = proc.client()
        wait_until(
            lambda: [c for c in client.request("calls") if c["recording"]] or None,
            10,
            "a recording to start",
            interval=0.05,
        )
        client.close()
        time.sleep(1.5)  # a call with audio in progress
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(5) == 0
        sipp.wait(15)
    finally:
        proc.stop()
    (wav_path,) = (tmp_path / "rec").glob("*.wav")
    with wave.open(str(wav_path)) as w:
        frames = w.getnframes()
        assert frames / w.getframerate() > 1.0
    rate, samples = read_wav(wav_path)
    assert has_frequency(samples, rate, 1000.0, 0.3)
