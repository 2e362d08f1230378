"""Test tones and their measurement: WAV/PCMU writing, FFT peak finding, RMS.

Tones go into calls as a 16-bit mono WAV (baresip's ``aufile`` source and our
engine) or as raw G.711 mu-law bytes (SIPp's ``rtp_stream`` sends a file's bytes
verbatim as PCMU payload, header included, so its input has no header).
Recordings come back as WAV and are measured with numpy: Hann-windowed FFT
with parabolic peak interpolation, so a 0.5 s window resolves well below 1 Hz.
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "FloatArray",
    "dominant_frequency",
    "frequencies_present",
    "has_frequency",
    "read_wav",
    "rms",
    "rms_dbfs",
    "tone",
    "ulaw_decode",
    "ulaw_encode",
    "wav_to_pcmu",
    "write_pcmu",
    "write_tone_pcmu",
    "write_tone_wav",
    "write_wav",
]

FloatArray = npt.NDArray[np.float64]

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635
_ULAW_EXP_THRESHOLDS = np.array([2, 4, 8, 16, 32, 64, 128])


def tone(
    freq_hz: float | Sequence[float],
    seconds: float,
    rate: int = 8000,
    amplitude: float = 0.5,
) -> FloatArray:
    """A sine (or the sum of several, sharing ``amplitude``) in [-1, 1]."""
    freqs = [float(freq_hz)] if isinstance(freq_hz, int | float) else [float(f) for f in freq_hz]
    if not freqs:
        raise ValueError("need at least one frequency")
    t = np.arange(round(seconds * rate)) / rate
    out = sum(np.sin(2 * np.pi * f * t) for f in freqs)
    return np.asarray(out, dtype=np.float64) * (amplitude / len(freqs))


def _to_pcm16(samples: npt.ArrayLike) -> npt.NDArray[np.int16]:
    x = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0)
    return np.round(x * 32767).astype(np.int16)


def write_wav(path: Path, samples: npt.ArrayLike, rate: int = 8000) -> Path:
    """Write float samples in [-1, 1] as 16-bit mono PCM WAV."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(_to_pcm16(samples).astype("<i2").tobytes())
    return path


def write_tone_wav(
    path: Path,
    freq_hz: float | Sequence[float],
    seconds: float,
    rate: int = 8000,
    amplitude: float = 0.5,
) -> Path:
    """A 16-bit mono PCM WAV of a tone (or a chord of several tones)."""
    return write_wav(path, tone(freq_hz, seconds, rate, amplitude), rate)


def ulaw_encode(samples: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """G.711 mu-law encode float samples in [-1, 1] (the classic Sun g711.c)."""
    pcm = _to_pcm16(samples).astype(np.int32)
    sign = np.where(pcm < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(pcm), _ULAW_CLIP) + _ULAW_BIAS
    exponent = np.searchsorted(_ULAW_EXP_THRESHOLDS, magnitude >> 7, side="right")
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    encoded: npt.NDArray[np.uint8] = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return encoded


def ulaw_decode(data: bytes | npt.NDArray[np.uint8]) -> FloatArray:
    """G.711 mu-law decode to float samples in [-1, 1]."""
    u = ~np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.float64) / 32768.0


def write_pcmu(path: Path, samples: npt.ArrayLike) -> Path:
    """Raw mu-law bytes, no header (SIPp ``rtp_stream`` input, 8 kHz)."""
    path.write_bytes(ulaw_encode(samples).tobytes())
    return path


def write_tone_pcmu(
    path: Path, freq_hz: float | Sequence[float], seconds: float, amplitude: float = 0.5
) -> Path:
    """A raw 8 kHz mu-law tone for SIPp."""
    return write_pcmu(path, tone(freq_hz, seconds, 8000, amplitude))


def wav_to_pcmu(src: Path, dst: Path) -> Path:
    """Convert an 8 kHz WAV (any PCM width, first channel) to raw mu-law."""
    rate, samples = read_wav(src, channel=0)
    if rate != 8000:
        raise ValueError(f"{src}: PCMU needs 8000 Hz, not {rate}")
    return write_pcmu(dst, samples)


def read_wav(path: Path, channel: int | None = None) -> tuple[int, FloatArray]:
    """Read a PCM WAV as ``(rate, mono float samples in [-1, 1])``.

    Multi-channel files give ``channel`` (0-based) or, when None, the mean of
    all channels.
    """
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        channels = w.getnchannels()
        width = w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        data = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float64) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)
    else:
        raise ValueError(f"{path}: unsupported sample width {width}")
    frames = data.reshape(-1, channels)
    if channels == 1:
        return rate, frames[:, 0].copy()
    if channel is None:
        return rate, frames.mean(axis=1)
    if not 0 <= channel < channels:
        raise ValueError(f"{path}: no channel {channel} (has {channels})")
    return rate, frames[:, channel].copy()


def _segment(samples: npt.ArrayLike, rate: int, start_s: float, end_s: float | None) -> FloatArray:
    x = np.asarray(samples, dtype=np.float64)
    start = max(0, round(start_s * rate))
    end = len(x) if end_s is None else min(len(x), round(end_s * rate))
    if end - start < 16:
        raise ValueError(
            f"segment {start_s}-{end_s} s has {max(0, end - start)} samples "
            f"(signal is {len(x) / rate:.3f} s)"
        )
    return x[start:end]


def _spectrum(x: FloatArray) -> FloatArray:
    return np.asarray(np.abs(np.fft.rfft(x * np.hanning(len(x)))), dtype=np.float64)


def _interpolated_peak(mag: FloatArray, index: int) -> float:
    """Parabolic interpolation on log magnitude around bin ``index``."""
    if 0 < index < len(mag) - 1:
        a, b, c = np.log(mag[index - 1 : index + 2] + 1e-12)
        denom = a - 2 * b + c
        if denom != 0:
            return float(index + 0.5 * (a - c) / denom)
    return float(index)


def dominant_frequency(
    samples: npt.ArrayLike,
    rate: int,
    start_s: float = 0.0,
    end_s: float | None = None,
    *,
    min_hz: float = 20.0,
) -> float:
    """The strongest frequency (Hz) in ``[start_s, end_s)``, ignoring DC."""
    x = _segment(samples, rate, start_s, end_s)
    mag = _spectrum(x)
    lo = int(np.ceil(min_hz * len(x) / rate))
    index = lo + int(np.argmax(mag[lo:]))
    return _interpolated_peak(mag, index) * rate / len(x)


def frequencies_present(
    samples: npt.ArrayLike,
    rate: int,
    start_s: float = 0.0,
    end_s: float | None = None,
    *,
    threshold_db: float = -20.0,
    min_hz: float = 20.0,
    separation_hz: float = 30.0,
) -> list[float]:
    """Spectral peaks within ``threshold_db`` of the strongest, ascending (Hz).

    A peak must be the maximum within ``separation_hz`` either side, which
    keeps Hann-window leakage (sidelobes at -31 dB) from counting as tones.
    """
    x = _segment(samples, rate, start_s, end_s)
    mag = _spectrum(x)
    hz_per_bin = rate / len(x)
    lo = int(np.ceil(min_hz / hz_per_bin))
    if lo >= len(mag) or mag[lo:].max() <= 0:
        return []
    floor = mag[lo:].max() * 10 ** (threshold_db / 20)
    half = max(1, int(separation_hz / hz_per_bin))
    peaks: list[float] = []
    for i in np.flatnonzero(mag >= floor):
        if i < lo:
            continue
        window = mag[max(lo, i - half) : i + half + 1]
        if mag[i] == window.max() and not (peaks and i * hz_per_bin - peaks[-1] < separation_hz):
            peaks.append(_interpolated_peak(mag, int(i)) * hz_per_bin)
    return peaks


def has_frequency(
    samples: npt.ArrayLike,
    rate: int,
    freq_hz: float,
    start_s: float = 0.0,
    end_s: float | None = None,
    *,
    tolerance_hz: float = 5.0,
    threshold_db: float = -20.0,
) -> bool:
    """True when a peak within ``tolerance_hz`` of ``freq_hz`` is present."""
    found = frequencies_present(samples, rate, start_s, end_s, threshold_db=threshold_db)
    return any(abs(f - freq_hz) <= tolerance_hz for f in found)


def rms(
    samples: npt.ArrayLike, rate: int, start_s: float = 0.0, end_s: float | None = None
) -> float:
    """Root mean square of ``[start_s, end_s)`` (full scale = 1.0)."""
    x = _segment(samples, rate, start_s, end_s)
    return float(np.sqrt(np.mean(x * x)))


def rms_dbfs(
    samples: npt.ArrayLike, rate: int, start_s: float = 0.0, end_s: float | None = None
) -> float:
    """RMS in dB relative to full scale (a full-scale sine is about -3 dBFS)."""
    return 20.0 * float(np.log10(max(rms(samples, rate, start_s, end_s), 1e-10)))
