"""Number cleaning, dialingPrefix, the Cisco-like dialPlan and SIP URI building
(docs/microsip.md#dial-plan, MicroSIP's FormatNumber/GetSIPURI)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.dialplan import (
    MAX_PLAN_INPUT,
    DialPlanError,
    apply_dial_plan,
    apply_dialing_prefix,
    clean_number,
    compile_dial_plan,
    format_number,
    is_pstn_number,
    to_sip_uri,
)
from engine.errors import EngineError, InvalidTargetError


@pytest.mark.parametrize(
    ("raw", "pstn", "cleaned"),
    [
        ("5551234", True, "5551234"),
        ("+1 (555) 123-4567", True, "+15551234567"),
        ("030/123.45-6", True, "030123456"),
        ("*72#", True, "*72#"),
        ("+", False, "+"),
        ("", False, ""),
        ("1+2", False, "1+2"),
        ("alice", False, "alice"),
        ("101@pbx.example.com", False, "101@pbx.example.com"),
        ("sip:555-1234@h", False, "sip:555-1234@h"),
        ("192.168.1.20", True, "192168120"),
    ],
)
def test_clean_number(raw: str, pstn: bool, cleaned: str) -> None:
    assert is_pstn_number(raw) is pstn
    assert clean_number(raw) == cleaned


@pytest.mark.parametrize(
    ("number", "prefix", "expected"),
    [
        ("5551234", "9", "95551234"),
        ("+4930123", "00", "004930123"),
        ("+123", "0", "0123"),  # the "+" counts towards "longer than 3"
        ("+12", "0", "+12"),
        ("101", "9", "101"),  # extensions keep working
        ("1012", "9", "91012"),
        ("5551234", "", "5551234"),
        ("alice1234", "9", "alice1234"),
        ("*7212", "9", "9*7212"),
    ],
)
def test_dialing_prefix(number: str, prefix: str, expected: str) -> None:
    assert apply_dialing_prefix(number, prefix) == expected


@pytest.mark.parametrize(
    ("plan", "number", "expected"),
    [
        ("", "5551234", "5551234"),
        ("  ", "abc", "abc"),
        ("()", "abc", "abc"),
        ("xxx", "101", "101"),
        ("xxx", "1012", None),
        ("xxx", "abc", None),
        ("xxx|9xxxxxxx", "95551234", "95551234"),
        ("(xxx|9xxxxxxx)", "95551234", "95551234"),
        ("(xxx)|(9xxxxxxx)", "101", "101"),
        ("xxx | 9x.", "9", "9"),
        ("9x.", "912345678901", "912345678901"),
        ("1x.", "2123", None),
        ("[1-5]xx", "512", "512"),
        ("[1-5]xx", "612", None),
        ("[^0]xx", "012", None),
        ("[02468]", "4", "4"),
        ("<:9>xxxxxxx", "5551234", "95551234"),
        ("<0:+49>x.", "030123", "+4930123"),
        ("<00:+>x.", "0049301", "+49301"),
        ("xxx<#:>", "101#", "101"),
        ("<9:>xxx<*:>x", "9123*4", "1234"),
        ("<9>xxx", "9123", "9123"),
        ("*xx", "*72", "*72"),
        ("+x.", "+4930", "+4930"),
        ("\\xx", "x5", "x5"),
        ("xxx|<:0>x.", "12345", "012345"),
        ("x..", "12", "12"),
        ("<1:>.x", "1115", "5"),
        ("<1:>.x", "5", "5"),
        ("X.", "", ""),
        ("x<0:>.", "5000", "5"),
        ("x<0:9>.", "5", "59"),
    ],
)
def test_dial_plan(plan: str, number: str, expected: str | None) -> None:
    assert apply_dial_plan(number, plan) == expected


@pytest.mark.parametrize(
    ("plan", "position", "fragment"),
    [
        (".x", 0, "nothing before it"),
        ("xxx|.", 4, "nothing before it"),
        ("<9:xxx", 0, "'<' without '>'"),
        ("xx>", 2, "unexpected '>'"),
        ("[1-5xx", 0, "'[' without ']'"),
        ("x]", 1, "unexpected ']'"),
        ("[]", 0, "empty character class"),
        ("[^]", 0, "empty character class"),
        ("[5-1]", 1, "runs backwards"),
        ("x(x)x", 1, "unexpected '('"),
        ("<1<2:3>>", 2, "unexpected '<'"),
        ("xx\\", 2, "escapes nothing"),
        ("<:.>x", 0, None),  # fine: "." inside the replacement is literal
    ],
)
def test_dial_plan_errors(plan: str, position: int, fragment: str | None) -> None:
    if fragment is None:
        assert apply_dial_plan("5", plan) == ".5"
        return
    with pytest.raises(DialPlanError) as info:
        compile_dial_plan(plan)
    err = info.value
    assert err.plan == plan
    assert err.position == position
    assert fragment in str(err)
    assert repr(plan) in str(err)
    assert err.code == "dialplan_error"
    assert isinstance(err, EngineError)


def test_long_numbers_never_match_a_plan_and_stay_fast() -> None:
    number = "1" * MAX_PLAN_INPUT + "a"
    started = time.monotonic()
    assert apply_dial_plan(number[:-1], "x.x.x.x.x.") == number[:-1]
    assert apply_dial_plan("1" * (MAX_PLAN_INPUT - 1) + "a", "x.x.x.") is None
    assert apply_dial_plan(number, "x.") is None
    assert apply_dial_plan(number, "") == number
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    ("target", "kwargs", "expected"),
    [
        ("+1 (555) 123-4567", {"dialing_prefix": "00"}, "0015551234567"),
        ("555-1234", {"dial_plan": "<:9>xxxxxxx"}, "95551234"),
        ("555-1234", {"dialing_prefix": "0", "dial_plan": "0xxxxxxx"}, "05551234"),
        ("5551234", {"dial_plan": "xxx"}, None),
        ("192.168.1.20", {"dial_plan": "xxx", "is_local": True}, "192.168.1.20"),
        ('"Bob" <sip:bob@h>', {"dial_plan": "xxx"}, '"Bob" <sip:bob@h>'),
        ("sip:101@h", {"dialing_prefix": "9"}, "sip:101@h"),
    ],
)
def test_format_number(target: str, kwargs: dict[str, object], expected: str | None) -> None:
    assert format_number(target, **kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target", "domain", "transport", "expected"),
    [
        ("5551234", "pbx.example.com", None, "sip:5551234@pbx.example.com"),
        ("sip:101@pbx.example.com", "other", None, "sip:101@pbx.example.com"),
        ("SIP:101@pbx", "other", None, "SIP:101@pbx"),
        ("sips:101@pbx", "other", None, "sips:101@pbx"),
        ("101@pbx.example.com", "other", None, "sip:101@pbx.example.com"),
        ("192.168.1.20", "", None, "sip:192.168.1.20"),
        ("192.168.1.20:5062", "", None, "sip:192.168.1.20:5062"),
        ("5551234", "pbx", "tcp", "sip:5551234@pbx;transport=tcp"),
        ("5551234", "pbx", "TLS", "sip:5551234@pbx;transport=tls"),
        ("5551234", "pbx", "udp", "sip:5551234@pbx"),
        ('"Bob" <sip:bob@h>', "pbx", "tcp", '"Bob" <sip:bob@h;transport=tcp>'),
        ("sip:bob@h;transport=udp", "pbx", "tcp", "sip:bob@h;transport=udp"),
        ("  101 ", "pbx", None, "sip:101@pbx"),
    ],
)
def test_to_sip_uri(target: str, domain: str, transport: str | None, expected: str) -> None:
    assert to_sip_uri(target, domain, transport=transport) == expected


def test_to_sip_uri_errors() -> None:
    with pytest.raises(InvalidTargetError):
        to_sip_uri("  ", "pbx")
    with pytest.raises(InvalidTargetError, match="unknown transport"):
        to_sip_uri("101", "pbx", transport="sctp")


_PLAN_CHARS = st.text(alphabet="x X.0123456789<>:[]^-()|\\*#+a", max_size=16)


@settings(max_examples=2000, deadline=None)
@given(_PLAN_CHARS, st.text(alphabet="0123456789*#+a", max_size=20))
def test_fuzz_plans_compile_or_raise_dialplan_error(plan: str, number: str) -> None:
    try:
        result = apply_dial_plan(number, plan)
    except DialPlanError as err:
        assert 0 <= err.position <= len(plan)
        return
    assert result is None or isinstance(result, str)


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=30), st.text(alphabet="0123456789+", max_size=4))
def test_fuzz_clean_and_prefix(number: str, prefix: str) -> None:
    cleaned = clean_number(number)
    if is_pstn_number(number):
        assert not set(cleaned) & set(".-()/ ")
    else:
        assert cleaned == number
    apply_dialing_prefix(cleaned, prefix)
