"""MicroSIP's mute buttons and volume steps on the engine's audio mixer; volumes
are saved to the ini as ``volumeInput`` / ``volumeOutput``, as MicroSIP saves them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from .config import Config

#: Volume change per MicroSIP micup/micdown/speakup/speakdown (0-100 scale).
VOLUME_STEP = 10


class ConfigHolder(Protocol):
    """Whoever owns the configuration the saved volumes go to (:class:`CallManager`)."""

    config: Config


class AudioLevels:
    """``set_levels`` and ``state`` reach the mixer (on the SIP thread); ``lock`` is
    the engine's, under which its configuration is replaced."""

    def __init__(
        self,
        holder: ConfigHolder,
        lock: threading.RLock,
        *,
        set_levels: Callable[..., dict[str, Any]],
        state: Callable[[], dict[str, Any]],
    ) -> None:
        self._holder = holder
        self._lock = lock
        self._set_levels = set_levels
        self._state = state

    def set(self, **changes: Any) -> dict[str, Any]:
        """Set ``mic_muted`` / ``speaker_muted`` / ``mic_volume`` / ``speaker_volume``
        (0-100); volumes are saved as ``volumeInput`` / ``volumeOutput``."""
        state = self._set_levels(**changes)
        saved = (
            {("Settings", "volumeInput"): str(state["mic_volume"])}
            if "mic_volume" in changes
            else {}
        )
        if "speaker_volume" in changes:
            saved[("Settings", "volumeOutput")] = str(state["speaker_volume"])
        if saved:
            with self._lock:
                self._holder.config = self._holder.config.with_values(saved)
        return state

    def toggle_mute(self, device: str) -> dict[str, Any]:
        key = "mic_muted" if device == "mic" else "speaker_muted"
        return self.set(**{key: not self._state()[key]})

    def step(self, device: str, step: int) -> dict[str, Any]:
        """MicroSIP's micup/micdown/speakup/speakdown: VOLUME_STEP per click."""
        key = "mic_volume" if device == "mic" else "speaker_volume"
        return self.set(**{key: int(self._state()[key]) + step * VOLUME_STEP})
