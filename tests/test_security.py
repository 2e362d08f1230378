"""TLS and SRTP against a second engine (a real `microsip-engine serve` process).

The second engine answers automatically and plays a tone through its control
socket; this engine records the call and the tone is measured.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audio import dominant_frequency, read_wav, write_tone_wav
from buildkit import EXPECTED
from enginekit import BASE_INI, Engines, EventLog, ServeProcess, engines_fixture
from peers.process import wait_until

pytestmark = pytest.mark.peers


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


@pytest.fixture
def far_end(tmp_path: Path) -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for proc in started:
        proc.stop()


def serve_far_end(tmp: Path, settings: str, account0: str = "", engine: str = "") -> ServeProcess:
    ini = f"""[Settings]
accountId=0
autoAnswer=all
audioCodecs=PCMU/8000/1
{settings}
[Account0]
transport=
{account0}
[Engine]
{engine}
"""
    tmp.mkdir(exist_ok=True)
    return ServeProcess(tmp, ini)


def port_of(proc: ServeProcess, kind: str) -> int:
    for addr in proc.ready["sip"]:
        if addr.startswith(kind + ":"):
            return int(addr.rsplit(":", 1)[1])
    raise AssertionError(f"no {kind} listener in {proc.ready['sip']}")


def play_at_far_end(proc: ServeProcess, wav: Path) -> None:
    client = proc.client()
    calls = wait_until(
        lambda: [c for c in client.request("calls") if c["state"] == "confirmed"] or None,
        10,
        "the far end to answer",
        interval=0.05,
    )
    client.request("play", call=calls[0]["call"], wav=str(wav))
    client.close()


def call_and_measure(
    manager: Any, events: EventLog, far: ServeProcess, uri: str, tmp: Path
) -> float:
    call = manager.dial(uri)
    events.wait_for("call_state", call=call.call, state="confirmed")
    play_at_far_end(far, write_tone_wav(tmp / "700.wav", 700.0, 30.0))
    rec = tmp / "near.wav"
    manager.record(call.call, str(rec))
    time.sleep(2.0)  # two seconds of audio to measure
    manager.hangup(call.call)
    events.wait_for("recording_saved", call=call.call)
    rate, samples = read_wav(rec)
    return dominant_frequency(samples, rate, 0.5)


def test_call_over_tls_with_a_verified_certificate(
    engines: Engines, far_end: list[ServeProcess], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = certificate
    far = serve_far_end(
        tmp_path / "far", "", engine=f"tlsCertFile={cert}\ntlsKeyFile={key}\ntlsCaFile={cert}"
    )
    far_end.append(far)
    ini = BASE_INI.replace("transport=", "transport=tls") + f"[Engine]\ntlsCaFile={cert}\n"
    manager, events = engines.start(ini)
    assert manager.status()["limits"]["tls_max"] == EXPECTED.tls  # measured from the build
    uri = f"sip:far@127.0.0.1:{port_of(far, 'tls')}"
    heard = call_and_measure(manager, events, far, uri, tmp_path)
    assert abs(heard - 700.0) < 10
    # The far end warned at start iff its build stops at TLS 1.2 (the wheel).
    far_log = far.log_path.read_text()
    assert ('"tls_outdated"' in far_log) is (EXPECTED.tls == "1.2")


def test_tls_refuses_an_unverifiable_server(
    engines: Engines, far_end: list[ServeProcess], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    """No CA for the far end's self-signed certificate: the call must fail."""
    cert, key = certificate
    far = serve_far_end(tmp_path / "far", "", engine=f"tlsCertFile={cert}\ntlsKeyFile={key}")
    far_end.append(far)
    manager, events = engines.start(BASE_INI.replace("transport=", "transport=tls"))
    uri = f"sip:far@127.0.0.1:{port_of(far, 'tls')}"
    call = manager.dial(uri)
    failed = events.wait(
        lambda e: e["event"] == "transport" and e["kind"].startswith("tls") and e["error"],
        10,
        "a failed TLS transport",
    )
    assert failed["state"] in ("shutdown", "disconnected"), failed
    ended = events.wait_for("call_state", call=call.call, state="disconnected")
    assert ended["code"] >= 400, ended
    assert not events.of("call_state", call=call.call, state="confirmed")
    assert not events.of("media_state", call=call.call)


def test_mandatory_srtp_call_carries_audio(
    engines: Engines, far_end: list[ServeProcess], tmp_path: Path
) -> None:
    far = serve_far_end(tmp_path / "far", "", account0="SRTP=optional")
    far_end.append(far)
    manager, events = engines.start(BASE_INI.replace("transport=", "transport=\nSRTP=mandatory"))
    uri = f"sip:far@127.0.0.1:{port_of(far, 'udp')}"
    heard = call_and_measure(manager, events, far, uri, tmp_path)
    assert abs(heard - 700.0) < 10


def test_mandatory_vs_disabled_srtp_is_rejected_with_a_clear_event(
    engines: Engines, far_end: list[ServeProcess], tmp_path: Path
) -> None:
    far = serve_far_end(tmp_path / "far", "")  # SRTP disabled (MicroSIP's default)
    far_end.append(far)
    manager, events = engines.start(BASE_INI.replace("transport=", "transport=\nSRTP=mandatory"))
    call = manager.dial(f"sip:far@127.0.0.1:{port_of(far, 'udp')}")
    ended = events.wait_for("call_state", call=call.call, state="disconnected")
    assert ended["code"] == 488 and ended["reason"] == "Not Acceptable Here", ended
