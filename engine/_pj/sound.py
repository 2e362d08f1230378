"""Real sound devices for a pjsua2 build compiled without any (``--disable-sound``).

pjsua2 keeps running on its null device (that is its clock). A :class:`DevicePort`
(an ``AudioMediaPort``) joins the conference bridge like another party: the bridge
asks it for microphone frames and hands it speaker frames, and two PortAudio
streams (python-sounddevice) move those frames to and from the real devices
through small jitter queues of numpy arrays.

Media callbacks run on pjmedia's clock thread under the GIL: they only copy
bytes. ``bytes(frame.buf)`` iterates the SWIG vector element by element (~210 µs
a frame), so :func:`_vector_bytes` reads the ``std::vector``'s buffer directly
(~1 µs), checked against ``len()``, falling back to the slow path if the layout
is ever not libstdc++'s.
"""

from __future__ import annotations

import collections
import ctypes
import threading
from typing import Any

import numpy as np
import pjsua2 as pj
import structlog

from ..errors import ConfigError
from .guard import callback

log = structlog.get_logger("engine.sound")

CLOCK_RATE = 16000
FRAME_MS = 20
SAMPLES = CLOCK_RATE * FRAME_MS // 1000
#: Frames queued per direction (100 ms): enough to absorb scheduling jitter,
#: little enough to keep the mouth-to-ear delay down. Older frames are dropped.
QUEUE_FRAMES = 5


def _vector_bytes(vec: Any) -> bytes:
    """The bytes of a SWIG ``std::vector<unsigned char>`` without per-item calls."""
    size = len(vec)
    try:
        base = int(vec.this)
        start = ctypes.c_void_p.from_address(base).value or 0
        finish = ctypes.c_void_p.from_address(base + ctypes.sizeof(ctypes.c_void_p)).value or 0
    except (AttributeError, TypeError, ValueError):
        return bytes(vec)
    if finish - start != size or (size and not start):
        return bytes(vec)  # not the layout we know: take the slow, safe path
    return ctypes.string_at(start, size)


class _Queue:
    """A bounded FIFO of int16 frames shared by a media thread and a PortAudio thread."""

    def __init__(self) -> None:
        self._frames: collections.deque[np.ndarray[Any, np.dtype[np.int16]]] = collections.deque(
            maxlen=QUEUE_FRAMES
        )
        self._lock = threading.Lock()
        self.underruns = 0

    def put(self, frame: np.ndarray[Any, np.dtype[np.int16]]) -> None:
        with self._lock:
            self._frames.append(frame)

    def get(self) -> np.ndarray[Any, np.dtype[np.int16]]:
        with self._lock:
            if self._frames:
                return self._frames.popleft()
        self.underruns += 1
        return np.zeros(SAMPLES, dtype=np.int16)


class DevicePort(pj.AudioMediaPort):  # type: ignore[misc]
    """The devices as one conference party: mic frames out, speaker frames in."""

    def __init__(self) -> None:
        super().__init__()
        self.mic = _Queue()
        self.speaker = _Queue()
        self.destroyed = False

    def create(self) -> None:
        fmt = pj.MediaFormatAudio()
        fmt.type = pj.PJMEDIA_TYPE_AUDIO
        fmt.clockRate = CLOCK_RATE
        fmt.channelCount = 1
        fmt.bitsPerSample = 16
        fmt.frameTimeUsec = FRAME_MS * 1000
        self.createPort("sound-device", fmt)

    def destroy(self) -> None:
        """Delete the C++ port now, on the calling (SIP) thread, while this object is
        still referenced; call it before dropping the last reference, on every path.

        pjmedia's clock calls the port every 20 ms even with nothing connected, and
        the wheel's ``delete AudioMediaPort`` releases the GIL before removing the port
        from the bridge. Were the delete left to the last ``del`` (or to a cycle in
        ``gc.collect()``), a callback waiting for the GIL would then run on an object
        already being freed and free it a second time: a corrupt heap and a segfault
        later, anywhere. Here the callback finds a live object that ignores it, and
        once the delete returns the port is out of the bridge. Idempotent.
        """
        if self.destroyed:
            return
        self.destroyed = True
        if self.thisown:  # the delete disowns the proxy: its dealloc deletes nothing
            self.__swig_destroy__(self)

    @callback
    def onFrameRequested(self, frame: pj.MediaFrame) -> None:
        if self.destroyed:
            return
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        frame.buf = pj.ByteVector(self.mic.get().tobytes())
        frame.size = SAMPLES * 2

    @callback
    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        if self.destroyed:
            return
        data = _vector_bytes(frame.buf)
        if len(data) == SAMPLES * 2:
            self.speaker.put(np.frombuffer(data, dtype=np.int16).copy())


class SoundDevices:
    """Opens the configured devices with sounddevice and feeds a :class:`DevicePort`."""

    def __init__(self, port: DevicePort, input_device: str, output_device: str) -> None:
        self.port = port
        self.input_device = input_device
        self.output_device = output_device
        self._streams: list[Any] = []

    def open(self) -> None:
        try:
            import sounddevice as sd
        except OSError as exc:  # PortAudio itself is missing
            raise ConfigError(f"audio devices need PortAudio (libportaudio2): {exc}") from None
        refused = getattr(sd, "PortAudioError", OSError)
        try:
            self._open_streams(sd)
            for stream in self._streams:
                stream.start()
        except refused as exc:  # e.g. the device refuses 16 kHz mono
            raise ConfigError(f"audio device refused the stream: {exc}") from None

    def _open_streams(self, sd: Any) -> None:
        if self.input_device:
            self._streams.append(
                sd.RawInputStream(
                    samplerate=CLOCK_RATE,
                    blocksize=SAMPLES,
                    channels=1,
                    dtype="int16",
                    device=_device(sd, self.input_device, "input", "audioInputDevice"),
                    callback=self._captured,
                )
            )
        if self.output_device:
            self._streams.append(
                sd.RawOutputStream(
                    samplerate=CLOCK_RATE,
                    blocksize=SAMPLES,
                    channels=1,
                    dtype="int16",
                    device=_device(sd, self.output_device, "output", "audioOutputDevice"),
                    callback=self._playback,
                )
            )

    def _captured(self, indata: Any, frames: int, _time: Any, _status: Any) -> None:
        if frames == SAMPLES:
            self.port.mic.put(np.frombuffer(bytes(indata), dtype=np.int16).copy())

    def _playback(self, outdata: Any, frames: int, _time: Any, _status: Any) -> None:
        chunk = self.port.speaker.get()
        if frames == SAMPLES:
            outdata[:] = chunk.tobytes()
        else:
            outdata[:] = bytes(len(outdata))

    def close(self) -> None:
        """Never raises: a device that vanished must not stop the engine's shutdown."""
        for stream in self._streams:
            try:
                stream.stop()
                stream.close()
            except Exception as exc:
                log.warning("sound_device_close_failed", error=repr(exc))
        self._streams.clear()


def _device(sd: Any, name: str, kind: str, key: str) -> int:
    """A device by exact name, else by a unique case-insensitive substring."""
    devices = list(sd.query_devices())
    channels = "max_input_channels" if kind == "input" else "max_output_channels"
    usable = [(i, d["name"]) for i, d in enumerate(devices) if d[channels] > 0]
    exact = [i for i, n in usable if n == name]
    if exact:
        return exact[0]
    partial = [i for i, n in usable if name.lower() in n.lower()]
    if len(partial) == 1:
        return partial[0]
    names = ", ".join(repr(n) for _, n in usable) or "none"
    raise ConfigError(f"{key}={name!r} matches no single {kind} device (have: {names})", key=key)
