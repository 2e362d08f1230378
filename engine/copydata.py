"""The ``WM_COPYDATA`` payload MicroSIP accepts from integrations
(docs/microsip.md#wm-copydata).

A second ``MicroSIP.exe`` (or any integration) sends its raw command line as a
``COPYDATASTRUCT``: ``dwData`` 1 = run it now, 2 = queue it (3.20+); ``lpData`` =
UTF-16LE text, NUL-terminated; ``cbData`` = 2 × (length + 1).  MicroSIP itself
casts ``lpData`` to a C string and never looks at ``cbData``; a receiver that takes
bytes from other processes must check them, so every deviation is an error naming
the problem.

Decisions:

* the terminator must be the *last* code unit (``cbData`` covers it, as MicroSIP's
  own sender does), otherwise the sender's length is wrong — an error;
* the text is what a C-string reader sees: it ends at the *first* NUL; whatever
  follows an earlier NUL is ignored, exactly as MicroSIP ignores it;
* invalid UTF-16 (a lone surrogate) before that NUL is an error, because it cannot
  become Python text that later layers could log or re-encode safely.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from engine.errors import EngineError

DW_SYNC = 1
"""``dwData`` for "run now, reply FALSE" (the only value before 3.20)."""
DW_QUEUED = 2
"""``dwData`` for "queue, reply FALSE at once" (3.20+): the sender never blocks."""

DEFAULT_MAX_BYTES = 65536

_MODES: dict[int, Literal["sync", "queued"]] = {DW_SYNC: "sync", DW_QUEUED: "queued"}


class CopyDataError(EngineError):
    """A ``WM_COPYDATA`` payload is unusable; the message says precisely why."""

    code = "copydata_error"


@dataclasses.dataclass(frozen=True)
class CopyDataRequest:
    """A decoded request: ``mode`` from ``dwData``, ``text`` the raw command line."""

    mode: Literal["sync", "queued"]
    text: str


def decode_copydata(
    dw_data: int, payload: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> CopyDataRequest:
    """Validate and decode one ``WM_COPYDATA`` (``dwData``, the ``cbData`` bytes).

    Only :class:`CopyDataError` escapes, whatever the bytes: the payload comes from
    another process and the caller must be able to reject it and carry on.
    """
    mode = _mode(dw_data)
    data = _as_bytes(payload)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 2:
        raise CopyDataError(f"max_bytes must be an integer of at least 2, not {max_bytes!r}")
    size = len(data)
    if size > max_bytes:
        raise CopyDataError(f"payload of {size} bytes exceeds the limit of {max_bytes} bytes")
    if size == 0:
        raise CopyDataError("empty payload: expected UTF-16LE text and a NUL terminator")
    if size % 2:
        raise CopyDataError(f"payload of {size} bytes has an odd length: not UTF-16LE")
    if data[-2:] != b"\0\0":
        raise CopyDataError(
            f"payload of {size} bytes does not end with a NUL terminator (last code "
            f"unit 0x{int.from_bytes(data[-2:], 'little'):04X})"
        )
    end = _first_nul(data)
    try:
        text = data[:end].decode("utf-16-le")
    except UnicodeDecodeError as exc:
        unit = int.from_bytes(data[exc.start : exc.start + 2], "little")
        raise CopyDataError(
            f"invalid UTF-16LE at byte {exc.start}: lone surrogate 0x{unit:04X}"
        ) from None
    return CopyDataRequest(mode, text)


def encode_copydata(text: str) -> bytes:
    """The ``lpData`` bytes an integration sends for ``text``: UTF-16LE plus a NUL
    (so ``cbData`` = ``len(result)`` = 2 × (length + 1) for BMP text)."""
    if not isinstance(text, str):
        raise CopyDataError(f"text must be str, not {type(text).__name__}")
    if "\0" in text:
        raise CopyDataError(
            f"text contains NUL at position {text.index(chr(0))}; the receiver would stop there"
        )
    try:
        return text.encode("utf-16-le") + b"\0\0"
    except UnicodeEncodeError as exc:
        raise CopyDataError(
            f"text has a lone surrogate U+{ord(text[exc.start]):04X} at position {exc.start}"
        ) from None


def _mode(dw_data: int) -> Literal["sync", "queued"]:
    if isinstance(dw_data, bool) or not isinstance(dw_data, int):
        raise CopyDataError(f"dwData must be an integer, not {type(dw_data).__name__}")
    mode = _MODES.get(dw_data)
    if mode is None:
        raise CopyDataError(f"unknown dwData {dw_data} (1 = sync, 2 = queued)")
    return mode


def _as_bytes(payload: bytes) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        try:
            return bytes(payload)
        except (TypeError, ValueError) as exc:
            raise CopyDataError(f"payload is not readable as bytes: {exc}") from None
    raise CopyDataError(f"payload must be bytes, not {type(payload).__name__}")


def _first_nul(data: bytes) -> int:
    """Byte offset of the first NUL *code unit* (an even offset)."""
    offset = data.find(b"\0\0")
    while offset != -1 and offset % 2:  # 00 00 straddling two code units is no NUL
        offset = data.find(b"\0\0", offset + 1)
    return len(data) if offset == -1 else offset  # -1 cannot happen: terminator checked
