"""The WM_COPYDATA payload (docs/microsip.md#wm-copydata): dwData 1/2, UTF-16LE + NUL,
and every way a foreign process can get it wrong; fuzzing that only CopyDataError
escapes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.copydata import (
    DEFAULT_MAX_BYTES,
    DW_QUEUED,
    DW_SYNC,
    CopyDataError,
    CopyDataRequest,
    decode_copydata,
    encode_copydata,
)
from engine.errors import EngineError


def _wire(text: str) -> bytes:
    """What MicroSIP's own launcher sends: cbData = 2 × (length + 1)."""
    return text.encode("utf-16-le") + b"\0\0"


@pytest.mark.parametrize(("dw_data", "mode"), [(DW_SYNC, "sync"), (DW_QUEUED, "queued")])
def test_modes(dw_data: int, mode: str) -> None:
    request = decode_copydata(dw_data, _wire('"msip:micmute"'))
    assert request == CopyDataRequest(mode, '"msip:micmute"')  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    ["5551234", "", "101 Hello there", "sip:Jürgen@pbx", "emoji 📞 ok", "x" * 32767],
)
def test_round_trip(text: str) -> None:
    payload = encode_copydata(text)
    assert payload == _wire(text)
    assert decode_copydata(1, payload).text == text


def test_text_stops_at_first_nul() -> None:
    payload = "123".encode("utf-16-le") + b"\0\0" + "456".encode("utf-16-le") + b"\0\0"
    assert decode_copydata(1, payload).text == "123"


def test_bytes_after_first_nul_are_not_decoded() -> None:
    payload = b"1\0\0\0" + b"\x00\xd8" + b"\0\0"  # lone surrogate after the C string
    assert decode_copydata(1, payload).text == "1"


def test_nul_bytes_straddling_code_units_are_not_a_terminator() -> None:
    payload = "\u0100\u0001".encode("utf-16-le") + b"\0\0"  # 00 01 01 00 00 00
    assert decode_copydata(2, payload).text == "\u0100\u0001"


def test_bytearray_and_memoryview_are_accepted() -> None:
    payload = _wire("42")
    assert decode_copydata(1, bytearray(payload)).text == "42"  # type: ignore[arg-type]
    assert decode_copydata(1, memoryview(payload)).text == "42"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dw_data", "payload", "kwargs", "fragment"),
    [
        (0, _wire("1"), {}, "unknown dwData 0"),
        (3, _wire("1"), {}, "unknown dwData 3"),
        (-1, _wire("1"), {}, "unknown dwData -1"),
        (2**64, _wire("1"), {}, "unknown dwData"),
        (True, _wire("1"), {}, "dwData must be an integer"),
        ("1", _wire("1"), {}, "dwData must be an integer"),
        (1, b"", {}, "empty payload"),
        (1, b"1\0\0", {}, "odd length"),
        (1, b"\0", {}, "odd length"),
        (1, "12".encode("utf-16-le"), {}, "does not end with a NUL"),
        (1, b"\x00\xd8\0\0", {}, "lone surrogate 0xD800"),
        (1, b"1\0\x00\xdc\0\0", {}, "invalid UTF-16LE at byte 2"),
        (1, b"1\0\x00\xd8", {}, "does not end with a NUL"),
        (1, _wire("x" * 10), {"max_bytes": 20}, "exceeds the limit of 20 bytes"),
        (1, b"\0" * (DEFAULT_MAX_BYTES + 2), {}, f"{DEFAULT_MAX_BYTES + 2} bytes exceeds"),
        (1, "5551234", {}, "payload must be bytes"),
        (1, None, {}, "payload must be bytes"),
        (1, _wire("1"), {"max_bytes": 1}, "max_bytes"),
        (1, _wire("1"), {"max_bytes": "big"}, "max_bytes"),
    ],
)
def test_errors(dw_data: object, payload: object, kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(CopyDataError) as info:
        decode_copydata(dw_data, payload, **kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert info.value.code == "copydata_error"
    assert isinstance(info.value, EngineError)


def test_limit_is_inclusive() -> None:
    payload = _wire("x" * 9)  # 20 bytes
    assert decode_copydata(1, payload, max_bytes=20).text == "x" * 9


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("a\0b", "NUL at position 1"), ("a\udc00", "lone surrogate U+DC00 at position 1")],
)
def test_encode_errors(text: str, fragment: str) -> None:
    with pytest.raises(CopyDataError, match=re.escape(fragment)):
        encode_copydata(text)


def test_encode_rejects_non_text() -> None:
    with pytest.raises(CopyDataError):
        encode_copydata(b"123")  # type: ignore[arg-type]


@settings(max_examples=3000, deadline=None)
@given(st.integers(min_value=-3, max_value=5), st.binary(max_size=200))
def test_fuzz_only_copydata_error_escapes(dw_data: int, payload: bytes) -> None:
    try:
        request = decode_copydata(dw_data, payload, max_bytes=128)
    except CopyDataError:
        return
    assert request.mode in ("sync", "queued")
    assert "\0" not in request.text
    assert len(payload) <= 128 and len(payload) % 2 == 0 and payload.endswith(b"\0\0")


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=100).map(lambda b: b[: len(b) // 2 * 2] + b"\0\0"))
def test_fuzz_terminated_payloads(payload: bytes) -> None:
    try:
        request = decode_copydata(2, payload)
    except CopyDataError as err:
        assert "lone surrogate" in str(err)
        return
    assert encode_copydata(request.text) == payload[: len(encode_copydata(request.text))]


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\0"), max_size=50))
def test_fuzz_round_trip(text: str) -> None:
    try:
        payload = encode_copydata(text)
    except CopyDataError:
        return
    assert decode_copydata(1, payload).text == text
