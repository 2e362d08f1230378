"""The conference bridge: microphone/speaker levels and mute, and local conferences.

pjsua re-creates a call's bridge slot on some media updates (an UPDATE after a
multi-codec answer, hold/resume), so every link made here is re-made from this
state whenever a call's audio is (re)connected (:meth:`Mixer.relink`).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import pjsua2 as pj

from ..errors import EngineError

if TYPE_CHECKING:
    from .call import PjCall
    from .media import Media

#: MicroSIP's volumes are 0..100 with 100 = unchanged; the bridge takes a factor.
MAX_VOLUME = 100


class CallLookup(Protocol):
    """The calls the mixer links (the stack's table)."""

    @property
    def calls(self) -> Mapping[int, PjCall]: ...

    def call(self, number: int) -> PjCall:
        """A started call, else NotFoundError/EngineError."""
        ...


class Mixer:
    """Levels and conference links, owned by the pjsua2 thread."""

    def __init__(self, media: Media, calls: CallLookup) -> None:
        self.media = media
        self._calls = calls
        self.mic_volume = MAX_VOLUME
        self.speaker_volume = MAX_VOLUME
        self.mic_muted = False
        self.speaker_muted = False
        self.conference: set[int] = set()

    # -- levels -------------------------------------------------------------------

    def effective_mic(self) -> float:
        return 0.0 if self.mic_muted else self.mic_volume / MAX_VOLUME

    def effective_speaker(self) -> float:
        return 0.0 if self.speaker_muted else self.speaker_volume / MAX_VOLUME

    def set_levels(
        self,
        *,
        mic_muted: bool | None = None,
        speaker_muted: bool | None = None,
        mic_volume: int | None = None,
        speaker_volume: int | None = None,
    ) -> dict[str, int | bool]:
        if mic_muted is not None:
            self.mic_muted = mic_muted
        if speaker_muted is not None:
            self.speaker_muted = speaker_muted
        if mic_volume is not None:
            self.mic_volume = max(0, min(MAX_VOLUME, mic_volume))
        if speaker_volume is not None:
            self.speaker_volume = max(0, min(MAX_VOLUME, speaker_volume))
        self.apply()
        return self.state()

    def state(self) -> dict[str, int | bool]:
        return {
            "mic_muted": self.mic_muted,
            "speaker_muted": self.speaker_muted,
            "mic_volume": self.mic_volume,
            "speaker_volume": self.speaker_volume,
        }

    def apply(self) -> None:
        """Push the levels to the bridge.

        pjsua2 names levels from the port's side: ``adjustTxLevel`` is what a port
        sends *into* the bridge, ``adjustRxLevel`` what it receives *from* it. The
        sound device is one slot for both directions, so the microphone is its Tx
        level and the speaker its Rx level. WAV players stand in for the microphone
        of a headless engine, so they follow the microphone level too. Levels are
        not set on the calls' own ports: that would also cut conference partners off.
        """
        device = self.media.null_device()
        device.adjustTxLevel(self.effective_mic())
        device.adjustRxLevel(self.effective_speaker())
        port = self.media.device_port
        if port is not None:  # real devices: the same two levels
            port.adjustTxLevel(self.effective_mic())
            port.adjustRxLevel(self.effective_speaker())
        for call in list(self._calls.calls.values()):
            self.apply_to_player(call)

    def apply_to_player(self, call: PjCall) -> None:
        if call.player is not None:
            call.player.adjustTxLevel(self.effective_mic())

    # -- conference ------------------------------------------------------------------

    def merge(self, numbers: list[int]) -> list[int]:
        """Everyone in ``numbers`` (and anyone already conferenced) hears everyone."""
        for number in numbers:
            if self.media.audio_media(self._calls.call(number)) is None:
                raise EngineError(f"call {number} has no active audio", code="invalid_state")
        self.conference.update(numbers)
        self._link_all()
        return sorted(self.conference)

    def split(self, numbers: list[int] | None = None) -> list[int]:
        """Take ``numbers`` (default: everyone) out of the conference."""
        leaving = set(self.conference if numbers is None else numbers) & self.conference
        for a, b in itertools.permutations(leaving | self.conference, 2):
            if a in leaving or b in leaving:
                self._link(a, b, on=False)
        self.conference -= leaving
        return sorted(self.conference)

    def relink(self, call: PjCall) -> None:
        if call.number in self.conference:
            self._link_all()

    def forget(self, number: int) -> None:
        self.conference.discard(number)

    def _link_all(self) -> None:
        for a, b in itertools.permutations(self.conference, 2):
            self._link(a, b, on=True)

    def _link(self, a: int, b: int, *, on: bool) -> None:
        src, dst = self._calls.calls.get(a), self._calls.calls.get(b)
        if src is None or dst is None:
            return
        am_src, am_dst = self.media.audio_media(src), self.media.audio_media(dst)
        if am_src is None or am_dst is None:
            return
        with contextlib.suppress(pj.Error):
            if on:
                am_src.startTransmit(am_dst)
            else:
                am_src.stopTransmit(am_dst)
