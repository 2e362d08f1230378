"""The sound-device port dies on the SIP thread while Python still references it.

pjmedia's clock calls the port every 20 ms even with nothing connected. If the
last reference to the ``DevicePort`` went first, the wheel's delete (which
releases the GIL) let a callback already waiting for the GIL run on the dying
object and free it twice: a segfault, at shutdown or when a device is missing.
The race is made deterministic here: the SIP thread holds the GIL for three clock
ticks right before the port is released (a long switch interval, and a busy
``SoundDevices.close``), so the clock thread is always waiting inside
``put_frame`` at that moment. Before the fix every run below crashed (SIGSEGV).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys, time, types

    cycles, mic = int(sys.argv[1]), sys.argv[2]
    sd = types.ModuleType("sounddevice")  # streams that do nothing: no PortAudio needed

    class Stream:
        def __init__(self, **_kw): pass
        def start(self): pass
        def stop(self): pass
        def close(self): pass

    sd.RawInputStream = sd.RawOutputStream = Stream
    sd.query_devices = lambda: [
        {"name": "Fake Mic", "max_input_channels": 1, "max_output_channels": 0},
        {"name": "Fake Speaker", "max_input_channels": 0, "max_output_channels": 2},
    ]
    sys.modules["sounddevice"] = sd

    from engine._pj import sound
    from engine._pj.stack import PjStack, StackSettings
    from engine.behaviour import MicroSipBehaviour

    close = sound.SoundDevices.close

    def close_holding_the_gil(self):
        close(self)
        until = time.perf_counter() + 0.06  # three clock ticks without yielding
        while time.perf_counter() < until:
            pass

    sound.SoundDevices.close = close_holding_the_gil
    sys.setswitchinterval(1.0)  # no forced GIL hand-over during the busy loop
    settings = StackSettings(
        sip_port=0, bind_address="127.0.0.1", pjsip_log_level=1,
        audio_input_device=mic, audio_output_device="Fake Speaker",
    )
    for _ in range(cycles):
        stack = PjStack(settings, lambda _event: None, MicroSipBehaviour)
        stack.start()
        opened = stack.run(lambda: stack.media.device_port is not None)
        stack.stop()
        print("cycle:", "opened" if opened else "fallback", flush=True)
    print("cycle: survived", flush=True)
    """
)


@pytest.mark.parametrize(
    ("mic", "path"),
    [("Fake Mic", "opened"), ("Microphone (Realtek Audio)", "fallback")],
    ids=["shutdown", "missing-device-fallback"],
)
def test_the_port_is_destroyed_before_it_is_dropped(mic: str, path: str, tmp_path: Path) -> None:
    """Start/stop with sound devices (or a missing one) while the clock waits on the GIL."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, "4", mic],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    lines = [ln[7:] for ln in proc.stdout.splitlines() if ln.startswith("cycle: ")]
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert lines == [path] * 4 + ["survived"], proc.stdout
