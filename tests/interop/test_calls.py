"""Calls from the engine to Asterisk's test extensions (issue 9): echo, the 1 kHz
tone, busy, SRTP (SDES) and codec choice. Audio is measured (FFT), never just
"non-silent". See interop/asterisk/README.md for the extensions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from asterisk import Asterisk
from audio import dominant_frequency, frequencies_present, has_frequency
from engines import Serve, account_ini, history

pytestmark = pytest.mark.asterisk

#: In-band DTMF '1' is 697 Hz + 1209 Hz.
DIGIT_1_HZ = (697.0, 1209.0)


def start(asterisk: Asterisk, tmp_path: Path, user: str = "alice", **kw: str) -> Serve:
    engine = Serve(tmp_path / f"engine-{user}", account_ini(asterisk, user, **kw))
    engine.wait_registered()
    return engine


@pytest.fixture
def alice(asterisk: Asterisk, tmp_path: Path) -> Iterator[Serve]:
    engine = start(asterisk, tmp_path)
    try:
        yield engine
    finally:
        engine.stop()


def channel_codecs(asterisk: Asterisk) -> list[str]:
    """The codec of every PJSIP channel Asterisk has up (``core show channel``)."""
    names = re.findall(r"^(PJSIP/\S+?)!", asterisk.cli("core show channels concise"), re.M)
    codecs = []
    for name in names:
        info = asterisk.cli(f"core show channel {name}")
        match = re.search(r"NativeFormats:\s*\((\w+)\)", info)
        assert match, info
        codecs.append(match.group(1))
    return codecs


def test_echo_returns_what_the_engine_sends(alice: Serve) -> None:
    """Extension 100 echoes: a tone the engine sends comes back and is recorded.

    The tone is in-band DTMF '1' from the engine's tone generator, which feeds the
    call only (a WAV player would also feed our own recording): its 697 and 1209 Hz
    in the recording can only have come back from Asterisk. The same tone sent to
    the silent extension 102 is absent from that recording."""
    for exten, echoed in (("100", True), ("102", False)):
        call = alice.dial(exten)
        alice.request("dtmf", digits="1" * 12, call=call, method=1)
        rate, samples = alice.record_for(call, 2.5)
        alice.request("hangup", call=call)
        alice.wait_for("call_state", call=call, state="disconnected")
        found = frequencies_present(samples, rate, threshold_db=-30)
        for hz in DIGIT_1_HZ:
            heard = has_frequency(samples, rate, hz, tolerance_hz=15, threshold_db=-30)
            assert heard == echoed, (exten, hz, found)


def test_tone_extension_is_1khz(alice: Serve) -> None:
    """Extension 101 plays 1 kHz: the recording's dominant frequency is 1000 Hz ± 2 %."""
    call = alice.dial("101")
    rate, samples = alice.record_for(call, 2.0)
    alice.request("hangup", call=call)
    peak = dominant_frequency(samples, rate, 0.3)
    assert abs(peak - 1000.0) <= 20.0, peak


def test_busy_is_486_in_event_and_history(alice: Serve) -> None:
    """Extension 486 answers ``486 Busy Here``: the call's ``disconnected`` event and
    its history row carry it."""
    call: int = alice.request("dial", target="486")["call"]
    ended = alice.wait_for("call_state", call=call, state="disconnected")
    assert (ended["code"], ended["reason"]) == (486, "Busy Here"), ended
    alice.stop()
    [row] = history(alice)
    assert (row["sip_code"], row["sip_reason"]) == (486, "Busy Here"), row


def test_srtp_sdes_with_the_sdes_endpoint(asterisk: Asterisk, tmp_path: Path) -> None:
    """carol's endpoint requires SRTP with SDES keys: with ``SRTP=mandatory`` the call
    is set up and the 1 kHz tone arrives (decrypted); without SRTP Asterisk refuses
    the call."""
    plain = start(asterisk, tmp_path / "plain", "carol")
    try:
        call: int = plain.request("dial", target="101")["call"]
        ended = plain.wait_for("call_state", call=call, state="disconnected")
        assert ended["code"] == 488, ended
    finally:
        plain.stop()
    engine = start(asterisk, tmp_path / "srtp", "carol", account="SRTP=mandatory")
    try:
        call = engine.dial("101")
        info = asterisk.cli("pjsip show channelstats")
        rate, samples = engine.record_for(call, 2.0)
        assert abs(dominant_frequency(samples, rate, 0.3) - 1000.0) <= 20.0
        assert "carol" in info, info
    finally:
        engine.stop()


@pytest.mark.parametrize(
    ("codecs", "expected"),
    [("G722/16000/1 PCMU/8000/1", "g722"), ("PCMA/8000/1 PCMU/8000/1", "alaw")],
)
def test_codec_negotiated_as_audio_codecs_asks(
    asterisk: Asterisk, tmp_path: Path, codecs: str, expected: str
) -> None:
    """``audioCodecs`` first choice is what the call runs on, on Asterisk's side too,
    and the tone still measures 1 kHz."""
    ini = account_ini(asterisk, "alice").replace(
        "audioCodecs=PCMU/8000/1 PCMA/8000/1", f"audioCodecs={codecs}"
    )
    engine = Serve(tmp_path / "engine", ini)
    try:
        engine.wait_registered()
        call = engine.dial("101")
        assert channel_codecs(asterisk) == [expected]
        rate, samples = engine.record_for(call, 2.0)
        assert abs(dominant_frequency(samples, rate, 0.3) - 1000.0) <= 20.0
    finally:
        engine.stop()
