"""The audio plumbing: devices, each call's players and recorders, and their links.

pjsua2 runs on its null device (that is the bridge's clock); real devices join the
bridge as a :class:`~engine._pj.sound.DevicePort`. :class:`Media` owns both, links a
call's stream to them and to the call's WAV player and recorder, re-makes those
links whenever a media update brings a new bridge slot, and reports a recording
once pjmedia has finalised its WAV. One object, handed to the calls and to the
:class:`~engine._pj.mixer.Mixer`: nothing else touches the bridge's ports.

Runs on the SIP thread only. Destroy order matters (see :meth:`Media.close`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pjsua2 as pj
import structlog

from ..errors import ConfigError
from ..events import Event, MediaStatus, RecordingSaved
from .resources import wav_finalised

if TYPE_CHECKING:
    from .call import PjCall
    from .sound import DevicePort, SoundDevices

log = structlog.get_logger("engine.stack")

#: Media states with an audio stream to attach to (held calls keep theirs).
_STREAMING = (MediaStatus.ACTIVE, MediaStatus.REMOTE_HOLD, MediaStatus.LOCAL_HOLD)
_PJ_STREAMING = (
    pj.PJSUA_CALL_MEDIA_ACTIVE,
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD,
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD,
)
#: Seconds a closed recording may take to get its final WAV header before it is
#: reported as incomplete.
FINALISE_WITHIN = 2.0


def _no_relink(_call: PjCall) -> None:
    pass


class Media:
    """Devices and per-call audio links on the conference bridge (SIP thread only)."""

    def __init__(self, emit: Callable[[Event], None]) -> None:
        self._emit = emit
        self.endpoint: pj.Endpoint | None = None
        self.device_port: DevicePort | None = None
        self.sound: SoundDevices | None = None
        #: Conference links to re-make with a call's new slot (the mixer's).
        self.relink: Callable[[PjCall], None] = _no_relink
        self._closing: list[tuple[int, str, float]] = []

    # -- devices ------------------------------------------------------------------

    def open(self, endpoint: pj.Endpoint, input_device: str, output_device: str) -> None:
        """Start on ``endpoint`` (libStart done); open the real devices if configured."""
        self.endpoint = endpoint
        if input_device or output_device:
            self._open_sound_devices(input_device, output_device)

    def _open_sound_devices(self, input_device: str, output_device: str) -> None:
        """A bridge party for the real devices (the null device stays the clock).
        Imported here: numpy and PortAudio cost ~10 MB an engine without devices
        should not carry."""
        from .sound import DevicePort, SoundDevices

        port = DevicePort()
        sound = SoundDevices(port, input_device, output_device)
        try:
            port.create()
            sound.open()
        except BaseException as exc:
            sound.close()
            port.destroy()  # never left to the local's release: see DevicePort.destroy
            if not isinstance(exc, ConfigError):
                raise
            # A microsip.ini from Windows names Windows devices: keep running, silent.
            log.warning("sound_device_unavailable", error=exc.message, fallback="null device")
            return
        self.device_port, self.sound = port, sound

    def null_device(self) -> pj.AudioMedia:
        """The null device's port: the bridge's clock, and the engine's microphone."""
        assert self.endpoint is not None
        return self.endpoint.audDevManager().getCaptureDevMedia()

    def close(self) -> None:
        """Stop PortAudio, then destroy its port, then forget the endpoint. The port
        is destroyed while still referenced (see :meth:`DevicePort.destroy`)."""
        if self.sound is not None:
            self.sound.close()  # stop PortAudio before its port goes away
            self.sound = None
        if self.device_port is not None:
            self.device_port.destroy()  # before the reference goes (see destroy)
            self.device_port = None
        self.endpoint = None

    # -- a call's audio -------------------------------------------------------------

    def audio_media(self, call: PjCall) -> pj.AudioMedia | None:
        """The call's active audio stream, or None (never call getAudioMedia blindly)."""
        if not call.started or call.media_status not in _STREAMING:
            return None
        ci = call.getInfo()  # bind first: iterating a temporary reads freed memory
        media = ci.media
        for index in range(len(media)):
            if media[index].type == pj.PJMEDIA_TYPE_AUDIO and media[index].status in _PJ_STREAMING:
                return call.getAudioMedia(index)
        return None

    def connect(self, call: PjCall, index: int) -> None:
        """(Re)connect the call's stream ``index``: a media update may bring a new slot."""
        if self.endpoint is None:
            return  # closed: pjsua may still report a call's media during libDestroy
        am = call.getAudioMedia(index)
        adm = self.endpoint.audDevManager()
        adm.getCaptureDevMedia().startTransmit(am)
        am.startTransmit(adm.getPlaybackDevMedia())
        device = self.device_port
        if device is not None:  # real microphone and speaker (sounddevice)
            device.startTransmit(am)
            am.startTransmit(device)
        self.relink(call)
        if call.player is not None:
            call.player.startTransmit(am)
        if call.recorder is not None:
            am.startTransmit(call.recorder)
            if call.player is not None:
                call.player.startTransmit(call.recorder)

    def play(self, call: PjCall, path: str, loop: bool, level: float) -> None:
        """Play a WAV to the far end at ``level`` (the microphone's: it stands in for one)."""
        self.stop_playing(call)
        player = pj.AudioMediaPlayer()
        player.createPlayer(path, 0 if loop else pj.PJMEDIA_FILE_NO_LOOP)
        call.player = player
        player.adjustTxLevel(level)
        am = self.audio_media(call)
        if am is not None:
            player.startTransmit(am)
            if call.recorder is not None:
                player.startTransmit(call.recorder)

    def stop_playing(self, call: PjCall) -> None:
        call.player = None  # the C++ destructor disconnects it, on this thread

    def record(self, call: PjCall, path: str) -> None:
        self.stop_recording(call)
        recorder = pj.AudioMediaRecorder()
        recorder.createRecorder(path)
        call.recorder = recorder
        call.recording_path = path
        # Our side (the microphone) always feeds the recorder: besides being half of
        # the conversation, it keeps the WAV on wall-clock time while the call's own
        # stream is away (on hold the bridge sends no frames and the WAV would skip).
        self.null_device().startTransmit(recorder)
        if self.device_port is not None:
            self.device_port.startTransmit(recorder)
        am = self.audio_media(call)
        if am is not None:
            am.startTransmit(recorder)
            if call.player is not None:
                call.player.startTransmit(recorder)

    def stop_recording(self, call: PjCall) -> None:
        if call.recorder is None:
            return
        # Destroying the recorder finalises the WAV, asynchronously: pjmedia's
        # bridge removes the port on its clock thread. check_recordings reports it.
        call.recorder = None
        if call.recording_path:
            self._closing.append(
                (call.number, call.recording_path, time.monotonic() + FINALISE_WITHIN)
            )

    def release(self, call: PjCall) -> None:
        """Drop the call's players, recorder and tones (the call has ended)."""
        self.stop_playing(call)
        self.stop_recording(call)
        call.tones = None

    # -- recordings being finalised ---------------------------------------------------

    @property
    def finalising(self) -> bool:
        """A closed recording still waits for its final WAV header."""
        return bool(self._closing)

    def check_recordings(self, force: bool = False) -> None:
        """Emit ``recording_saved`` once pjmedia has written the final WAV header."""
        still: list[tuple[int, str, float]] = []
        for number, path, deadline in self._closing:
            done, size, seconds = wav_finalised(path)
            if done or force or time.monotonic() > deadline:
                self._emit(
                    RecordingSaved(
                        call=number,
                        path=path,
                        bytes=size,
                        seconds=round(seconds, 3),
                        complete=done,
                    )
                )
            else:
                still.append((number, path, deadline))
        self._closing = still
