"""Issue 10, item 1: ``DTMFMethod=0`` (auto) falls back to in-band tones when the far
end offers no telephone-event, both for the ``dtmf`` command and for MicroSIP's
post-dial digits (``microsip 602,5``). A SIPp UAS answers with a PCMU-only SDP that
points the audio at a socket of this test, which measures the tones (numpy FFT)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import structlog
from audio import FloatArray, frequencies_present, has_frequency, rms_dbfs
from enginekit import BASE_INI, Engines, engines_fixture
from peers.process import wait_until
from peers.sipp import SippFactory

from .rtp import PCMU, RtpSink

pytestmark = pytest.mark.peers

SCENARIOS = Path(__file__).with_name("scenarios")
RATE = 8000
#: DTMF row/column frequencies (Hz) of the digits sent here.
DIGIT_HZ = {"5": (770.0, 1336.0), "9": (852.0, 1477.0)}


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def bursts(audio: FloatArray, window: float = 0.04) -> list[tuple[float, float]]:
    """(start, end) seconds of the loud stretches (the engine sends digital silence
    between tones: the null microphone)."""
    loud = [
        t
        for t in np.arange(0.0, len(audio) / RATE - window, window)
        if rms_dbfs(audio, RATE, t, t + window) > -30
    ]
    out: list[tuple[float, float]] = []
    for t in loud:
        if out and t - out[-1][1] < 2 * window:
            out[-1] = (out[-1][0], t + window)
        else:
            out.append((t, t + window))
    return out


def test_status_codes_are_pjprojects_own() -> None:
    """Each derived status code is the one pjproject names (its message text says so);
    run in a child process: one pjsua2 endpoint per process."""
    code = (
        "import pjsua2 as pj; from engine._pj import status as s\n"
        "ep = pj.Endpoint(); ep.libCreate(); c = pj.EpConfig()\n"
        "c.logConfig.level = c.logConfig.consoleLevel = 0; ep.libInit(c)\n"
        "for n in ('PJ_ETOOMANY', 'PJSIP_EBUSY', 'PJMEDIA_RTP_EREMNORFC2833'):\n"
        "    print(n, '|', ep.utilStrError(getattr(s, n)))\n"
        "ep.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    lines = dict(line.split(" | ", 1) for line in out.splitlines() if " | " in line)
    for name, message in lines.items():
        assert f"({name})" in message, (name, message)
    assert len(lines) == 3, out


def test_auto_dtmf_falls_back_to_inband_against_a_peer_without_telephone_event(
    engines: Engines, sipp_factory: SippFactory
) -> None:
    """Post-dial ``5`` and a ``dtmf 9`` command, both with DTMFMethod=0, reach the far
    end as the digits' dual tones in its PCMU audio, and no RFC 2833 event packet is
    sent (the SDP offered none)."""
    sink = RtpSink()
    try:
        sipp = sipp_factory.uas(
            SCENARIOS / "uas_no_rfc2833.xml", params={"rtp_port": sink.port}, bye_timeout_ms=20000
        )
        manager, events = engines.start()
        call = manager.dial(sipp.uri("pbx"), post_dial=("5",)).call
        events.wait_for("call_state", call=call, state="confirmed")
        # Post-dial goes 1 s after the answer (MicroSIP's timing): 160 ms of tone.
        sink.wait_packets(int(2.0 / 0.02), timeout=10)
        with structlog.testing.capture_logs() as logs:
            assert manager.send_dtmf("9", call, method=0) == "inband"
        # The fallback is expected, not an error (pjsua logs one if it is tried).
        assert [e for e in logs if e["log_level"] == "error"] == []
        sink.wait_packets(sink.count() + int(0.8 / 0.02), timeout=10)
        manager.hangup(call)
        events.wait_for("call_state", call=call, state="disconnected")
        assert sipp.wait(15).failed == 0
    finally:
        sink.close()
    assert sink.payload_types() == {PCMU}, f"not only PCMU: {sink.payload_types()}"
    audio = sink.pcmu_audio()
    found = bursts(audio)
    assert len(found) == 2, f"expected two tone bursts (5, then 9), found {found}"
    for (start, end), digit in zip(found, "59", strict=True):
        assert 0.1 <= end - start <= 0.3, f"digit {digit}: burst of {end - start:.2f} s"
        for hz in DIGIT_HZ[digit]:
            assert has_frequency(audio, RATE, hz, start, end, tolerance_hz=10), (
                digit,
                frequencies_present(audio, RATE, start, end),
            )


def test_post_dial_digits_that_cannot_be_sent_are_a_warning(
    engines: Engines, sipp_factory: SippFactory
) -> None:
    """``DTMFMethod=2`` (RFC 2833 only) against a peer without telephone-event: the
    post-dial digits cannot go; the log says so at warning level, naming the call."""
    sink = RtpSink()
    try:
        sipp = sipp_factory.uas(SCENARIOS / "uas_no_rfc2833.xml", params={"rtp_port": sink.port})
        manager, events = engines.start(BASE_INI.replace("[Account0]", "DTMFMethod=2\n[Account0]"))
        with structlog.testing.capture_logs() as logs:
            call = manager.dial(sipp.uri("pbx"), post_dial=("12",)).call
            events.wait_for("call_state", call=call, state="confirmed")
            wait_until(
                lambda: any(e["event"] == "post_dial_dtmf_failed" for e in logs),
                10,
                "post_dial_dtmf_failed in the log",
                interval=0.05,
            )
        manager.hangup(call)
    finally:
        sink.close()
    (entry,) = [e for e in logs if e["event"] == "post_dial_dtmf_failed"]
    assert entry["log_level"] == "warning"
    assert entry["call"] == call and entry["digits"] == "12"
    assert "RFC 2833" in entry["error"]
