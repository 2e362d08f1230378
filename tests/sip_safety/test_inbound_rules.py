"""The inbound path's pure parts: the INVITE checks, the release gate, the throttle."""

from __future__ import annotations

from engine._pj.inbound import Fault, ReleaseGate, StartThrottle, check_invite

HEAD = (
    "INVITE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{tp} 127.0.0.1:5;branch=z9hG4bK1\r\n"
    "From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: x\r\n"
    "CSeq: 1 INVITE\r\n"
)


def msg(extra: str = "", length: int = 4, body: str = "abcd", tp: str = "UDP") -> str:
    return HEAD.replace("{tp}", tp) + extra + f"Content-Length: {length}\r\n\r\n{body}"


def test_a_valid_invite_passes() -> None:
    assert check_invite(msg()) is None
    assert check_invite(msg(body="\u00e9\u00e9", length=4)) is None  # bytes, not characters


def test_duplicated_single_headers_in_long_or_compact_form() -> None:
    assert check_invite(msg("i: y\r\n")) == Fault(400, "Duplicate Call-ID header")
    assert check_invite(msg("t: <sip:c@h>\r\n")) == Fault(400, "Duplicate To header")
    assert check_invite(msg("From: <sip:c@h>\r\n")) == Fault(400, "Duplicate From header")


def test_short_body_only_matters_in_a_datagram() -> None:
    assert check_invite(msg(length=5)) == Fault(400, "Content-Length larger than the body")
    assert check_invite(msg(length=5, tp="TCP")) is None
    assert check_invite(msg(length=3)) is None  # extra bytes: PJSIP ignores them


def test_release_gate_spaces_ends_out() -> None:
    gate = ReleaseGate(budget=2, window=1.0)
    waits = [gate.reserve(10.0) for _ in range(5)]
    assert waits == [0.0, 0.0, 1.0, 1.0, 2.0]
    assert gate.reserve(20.0) == 0.0  # all bookings in the past: room again


def test_throttle_pauses_reading_until_the_window_has_room() -> None:
    throttle = StartThrottle(budget=3, window=1.0)
    for t in (0.0, 0.1, 0.2):
        throttle.started(t)
    assert abs(throttle.pause(0.5) - 0.5) < 1e-9
    assert throttle.pause(1.05) == 0.0
