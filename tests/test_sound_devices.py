"""Real sound devices through sounddevice: the bridge carries audio both ways.

This machine has no sound card. The audio test therefore swaps in a stand-in
``sounddevice`` module whose streams call back in real time (20 ms), like
PortAudio's, with a 440 Hz microphone and a recording speaker; the far end is
baresip. A second test opens real PortAudio streams on an ALSA null device
(configured in a private ``~/.asoundrc``) to prove device lookup, open and close
against the real library.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from audio import dominant_frequency, has_frequency, write_tone_wav
from enginekit import BASE_INI, Engines, ServeProcess, engines_fixture
from peers.baresip import BaresipFactory

pytestmark = pytest.mark.peers

RATE = 16000


class _FakeStream:
    """Calls ``callback`` every block on a thread, in real time, as PortAudio does."""

    def __init__(self, device: int, blocksize: int, callback: Callable[..., None], **_: Any):
        self.device, self.blocksize, self.callback = device, blocksize, callback
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        period = self.blocksize / RATE
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            next_at += period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def tick(self) -> None:
        raise NotImplementedError


class FakeDevices:
    """A stand-in ``sounddevice`` module: one microphone playing a tone, one speaker."""

    def __init__(self, mic_hz: float) -> None:
        self.mic_hz = mic_hz
        self.heard: list[bytes] = []
        self.opened: list[str] = []
        devices = self

        class RawInputStream(_FakeStream):
            phase = 0

            def tick(self) -> None:
                n = np.arange(self.phase, self.phase + self.blocksize)
                self.phase += self.blocksize
                tone = (np.sin(2 * np.pi * devices.mic_hz * n / RATE) * 8000).astype("<i2")
                self.callback(memoryview(tone.tobytes()), self.blocksize, None, None)

        class RawOutputStream(_FakeStream):
            def tick(self) -> None:
                out = bytearray(self.blocksize * 2)
                self.callback(memoryview(out), self.blocksize, None, None)
                devices.heard.append(bytes(out))

        def query_devices() -> list[dict[str, Any]]:
            return [
                {"name": "Fake Mic", "max_input_channels": 1, "max_output_channels": 0},
                {"name": "Fake Speaker", "max_input_channels": 0, "max_output_channels": 2},
            ]

        def opened(cls: type[_FakeStream], kind: str) -> Callable[..., _FakeStream]:
            def make(**kw: Any) -> _FakeStream:
                devices.opened.append(f"{kind}:{kw['device']}")
                return cls(**kw)

            return make

        self.module = types.ModuleType("sounddevice")
        self.module.RawInputStream = opened(RawInputStream, "in")  # type: ignore[attr-defined]
        self.module.RawOutputStream = opened(RawOutputStream, "out")  # type: ignore[attr-defined]
        self.module.query_devices = query_devices  # type: ignore[attr-defined]

    def samples(self) -> Any:
        return np.frombuffer(b"".join(self.heard), dtype="<i2").astype(float) / 32768


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def devices_ini(mic: str, speaker: str) -> str:
    settings = f"audioInputDevice={mic}\naudioOutputDevice={speaker}\n"
    return BASE_INI.replace("[Settings]\n", "[Settings]\n" + settings)


def test_microphone_and_speaker_carry_the_call_both_ways(
    engines: Engines,
    baresip_factory: BaresipFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    fake = FakeDevices(mic_hz=440.0)
    monkeypatch.setitem(sys.modules, "sounddevice", fake.module)
    bob = baresip_factory("bob", wav=write_tone_wav(tmp_path / "bob.wav", 700.0, 60.0))
    bob_uri = bob.add_local_account("bob")
    manager, events = engines.start(devices_ini("Fake Mic", "speaker"))
    assert fake.opened == ["in:0", "out:1"]  # exact name, and a unique part of one
    call = manager.dial(bob_uri)
    events.wait_for("call_state", call=call.call, state="confirmed")
    events.wait_for("media_state", call=call.call, status="active")
    heard_from = len(fake.heard)
    time.sleep(2.5)  # audio to measure
    manager.hangup(call.call)
    events.wait_for("call_state", call=call.call, state="disconnected")
    speaker = np.frombuffer(b"".join(fake.heard[heard_from:]), dtype="<i2").astype(float) / 32768
    assert abs(dominant_frequency(speaker, RATE, 0.5) - 700.0) < 10  # bob through our speaker
    rate, received = bob.last_recording(10).read_received()
    assert has_frequency(received, rate, 440.0, 0.5)  # our microphone at bob


def test_a_device_that_does_not_exist_is_a_warning_not_a_failure(
    engines: Engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A microsip.ini written on Windows names Windows devices: the engine still runs."""
    fake = FakeDevices(mic_hz=440.0)
    monkeypatch.setitem(sys.modules, "sounddevice", fake.module)
    manager, _ = engines.start(devices_ini("Microphone (Realtek Audio)", ""))
    assert fake.opened == [] and manager.status()["accounts"]


def test_real_portaudio_streams_open_and_close_on_an_alsa_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real sounddevice/PortAudio path, on an ALSA null PCM from ~/.asoundrc."""
    probe = subprocess.run(
        [sys.executable, "-c", "import sounddevice"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        pytest.fail(f"sounddevice/PortAudio does not import: {probe.stderr[-300:]}")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(
        'pcm.enginetest {\n type null\n hint { show on description "engine test" }\n}\n'
    )
    monkeypatch.setenv("HOME", str(home))
    proc = ServeProcess(tmp_path, devices_ini("enginetest", "enginetest"))
    try:
        log = proc.log_path.read_text()
        assert "sound_device_unavailable" not in log, log[-2000:]
        assert proc.client().request("status")["accounts"]
    finally:
        code = proc.stop()
    assert code == 0, proc.log_path.read_text()[-2000:]


def test_null_audio_keeps_the_devices_closed(
    engines: Engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeDevices(mic_hz=440.0)
    monkeypatch.setitem(sys.modules, "sounddevice", fake.module)
    engines.start(devices_ini("Fake Mic", "Fake Speaker") + "[Engine]\nnullAudio=1\n")
    assert fake.opened == []
