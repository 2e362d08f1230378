"""Media's recording watch: ``recording_saved`` once the WAV header is final, or on
force (shutdown) / after the deadline with ``complete`` false. No endpoint needed."""

from __future__ import annotations

import types
import wave
from pathlib import Path
from typing import Any

from engine._pj.media import Media
from engine.events import Event, RecordingSaved


def _recording_call(path: Path) -> Any:
    return types.SimpleNamespace(number=7, recorder=object(), recording_path=str(path))


def test_a_finalised_wav_is_reported_complete(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    with wave.open(str(path), "wb") as w:  # a closed WAV has its final RIFF size
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000)
    events: list[Event] = []
    media = Media(events.append)
    call = _recording_call(path)
    media.stop_recording(call)
    assert call.recorder is None and media.finalising
    media.check_recordings()
    assert not media.finalising
    [saved] = events
    assert isinstance(saved, RecordingSaved)
    assert (saved.call, saved.path, saved.complete, saved.seconds) == (7, str(path), True, 1.0)


def test_an_unfinished_wav_waits_then_is_reported_incomplete_on_force(tmp_path: Path) -> None:
    path = tmp_path / "open.wav"
    path.write_bytes(b"RIFF\0\0\0\0WAVE" + bytes(32))  # RIFF size 0: pjmedia still writing
    events: list[Event] = []
    media = Media(events.append)
    media.stop_recording(_recording_call(path))
    media.check_recordings()
    assert events == [] and media.finalising
    media.check_recordings(force=True)
    [saved] = events
    assert isinstance(saved, RecordingSaved) and not saved.complete
    assert not media.finalising


def test_stopping_a_call_that_records_nothing_reports_nothing() -> None:
    events: list[Event] = []
    media = Media(events.append)
    call: Any = types.SimpleNamespace(number=1, recorder=None, recording_path=None)
    media.stop_recording(call)
    media.check_recordings(force=True)
    assert events == [] and not media.finalising
