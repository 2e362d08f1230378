"""MicroSIP's command-line grammar (docs/microsip.md#launcher and #command-line):
every documented form, the edge cases where precedence matters, and fuzzing that
only GrammarError escapes."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import EngineError
from engine.grammar import (
    MAX_COMMAND_LINE,
    Action,
    Answer,
    Dial,
    Dtmf,
    Exit,
    GrammarError,
    HangupAll,
    HangupCalling,
    HangupIncoming,
    Hold,
    MicMute,
    MicMuteToggle,
    MicUnmute,
    Minimize,
    Minimized,
    Noop,
    PasswordOverride,
    Reset,
    SavePassword,
    SendMessage,
    SpeakMute,
    SpeakMuteToggle,
    SpeakUnmute,
    SwitchAccount,
    Transfer,
    Volume,
    join_argv,
    launcher_action,
    parse_command_line,
)

SPEC_EXAMPLES: list[tuple[str, tuple[Action, ...]]] = [
    ("5551234", (Dial("5551234"),)),
    ("sip:101@pbx.example.com", (Dial("sip:101@pbx.example.com"),)),
    ("tel:+15551234", (Dial("+15551234"),)),
    ("callto://5551234/", (Dial("5551234"),)),
    ("/answer", (Answer(),)),
    ("/hangupall", (HangupAll(),)),
    ("/dtmf:1234#", (Dtmf("1234#"),)),
    ("/transfer:200", (Transfer("200"),)),
    ('"msip:micmute"', (MicMute(),)),
    ("5551234 /account:2", (SwitchAccount(2), Dial("5551234"))),
    ("/account:2 /password:secret", (SavePassword(2, "secret"),)),
    ("101 Hello there", (SendMessage("101", "Hello there"),)),
    ("/exit", (Exit(),)),
]

MSIP_VERBS: list[tuple[str, Action]] = [
    ("answer", Answer()),
    ("hangupall", HangupAll()),
    ("hold", Hold()),
    ("micmute", MicMute()),
    ("micunmute", MicUnmute()),
    ("micmuteclick", MicMuteToggle()),
    ("speakmute", SpeakMute()),
    ("speakunmute", SpeakUnmute()),
    ("speakmuteclick", SpeakMuteToggle()),
    ("micup", Volume("mic", 1)),
    ("micdown", Volume("mic", -1)),
    ("speakup", Volume("speaker", 1)),
    ("speakdown", Volume("speaker", -1)),
    ("minimize", Minimize()),
    ("transfer_200", Transfer("200")),
    ("transfer_sip:bob@pbx", Transfer("sip:bob@pbx")),
]

MORE: list[tuple[str, tuple[Action, ...]]] = [
    # schemes, case-insensitive, exactly one stripped
    ("SIP:101@pbx.example.com", (Dial("sip:101@pbx.example.com"),)),
    ("sip:101", (Dial("101"),)),
    ("sip://101@pbx/", (Dial("sip:101@pbx"),)),
    ("TEL:5551234", (Dial("5551234"),)),
    ("dial:5551234", (Dial("5551234"),)),
    ("dialpad:5551234", (Dial("5551234"),)),
    ("Callto:5551234", (Dial("5551234"),)),
    ("tel:sip:101@h", (Dial("sip:101@h"),)),
    # "//" then exactly one trailing "/", and only after "//"
    ("//5551234/", (Dial("5551234"),)),
    ("callto://5551234//", (Dial("5551234/"),)),
    # %20 / %2B (3.22), upper-case escapes only
    ("%2B15551234", (Dial("+15551234"),)),
    ("101%20Hello%20there", (SendMessage("101", "Hello there"),)),
    ("tel:%2B4930123", (Dial("+4930123"),)),
    ("%2b1", (Dial("%2b1"),)),
    # quoting and trimming
    ('  "5551234"  ', (Dial("5551234"),)),
    ('"101 Hello there"', (SendMessage("101", "Hello there"),)),
    ('""', ()),
    ('"', ()),
    ("", ()),
    ("   ", ()),
    ('"/answer"', (Answer(),)),
    ('101 "Hello there"', (SendMessage("101", '"Hello there"'),)),
    # post-dial
    ("123,456,78", (Dial("123", ("456", "78")),)),
    ("123,,456", (Dial("123", ("", "456")),)),
    ("123,", (Dial("123"),)),
    ("sip:101@pbx,99#", (Dial("sip:101@pbx", ("99#",)),)),
    ("123,4 hi", (SendMessage("123,4", "hi"),)),
    # messages
    ("sip:a@b c d", (SendMessage("sip:a@b", "c d"),)),
    ("101   spaced   out  ", (SendMessage("101", "spaced   out"),)),
    ("alice@example.com hi", (SendMessage("alice@example.com", "hi"),)),
    # slash commands
    ("/hangupincoming", (HangupIncoming(),)),
    ("/hangupcalling", (HangupCalling(),)),
    ("/password:s3cr3t", (PasswordOverride("s3cr3t"),)),
    ("/password:", (PasswordOverride(""),)),
    ("/password:with space", (PasswordOverride("with space"),)),
    ("/dtmf:*ABCD#0", (Dtmf("*ABCD#0"),)),
    ("/dtmf:12?", (Noop("/dtmf:12? only fills MicroSIP's dial pad"),)),
    ("/transfer:sip:bob@pbx", (Transfer("sip:bob@pbx"),)),
    # /account:N anywhere
    ("/account:2", (SwitchAccount(2),)),
    ("/account:2 5551234", (SwitchAccount(2), Dial("5551234"))),
    ("/account:3 /answer", (SwitchAccount(3), Answer())),
    ("/hangupall /account:1", (SwitchAccount(1), HangupAll())),
    ("101 /account:2 Hello", (SwitchAccount(2), SendMessage("101", "Hello"))),
    ("/password:x /account:2", (SavePassword(2, "x"),)),
    ("5551234 /account:2 /password:a b", (SavePassword(2, "a b"),)),
    ("/account:2 /password:", (SavePassword(2, ""),)),
    ("sip:101@h /account:2", (SwitchAccount(2), Dial("sip:101@h"))),
    # msip: passes anything else through the ordinary grammar
    ("msip:123", (Dial("123"),)),
    ("msip:sip:101@pbx", (Dial("sip:101@pbx"),)),
    ("msip:/answer", (Answer(),)),
    ("msip:123 /account:2", (SwitchAccount(2), Dial("123"))),
    ("msip:", ()),
    ("msip:+4930123", (Dial("+4930123"),)),
    # names MicroSIP dials as they are (user, user@host, unicode letters)
    ("bob", (Dial("bob"),)),
    ("bob.smith@pbx.example.com:5062", (Dial("bob.smith@pbx.example.com:5062"),)),
    ("müller", (Dial("müller"),)),
    ("*97", (Dial("*97"),)),
    ("555-1234", (Dial("555-1234"),)),
    ('"msip:hold"', (Hold(),)),
    # launcher words
    ("/minimized", (Minimized(),)),
    ("/reset", (Reset(ask=True),)),
    ("/resetnoask", (Reset(ask=False),)),
]


@pytest.mark.parametrize(("text", "expected"), SPEC_EXAMPLES + MORE)
def test_parses(text: str, expected: tuple[Action, ...]) -> None:
    assert parse_command_line(text) == expected


@pytest.mark.parametrize(("verb", "expected"), MSIP_VERBS)
def test_msip_verbs(verb: str, expected: Action) -> None:
    assert parse_command_line("msip:" + verb) == (expected,)
    assert parse_command_line(f'"msip:{verb}"') == (expected,)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("/account:x 123", "must be digits"),
        ("/account:", "needs an account number"),
        ("/account: 123", "needs an account number"),
        ("/account:0", "1 to 999999"),
        ("/account:1234567", "1 to 999999"),
        ("/account:²", "must be digits"),
        ("/account:1 /account:2", "more than one"),
        ("/dtmf:", "at least one digit"),
        ("/dtmf:?", "at least one digit"),
        ("/dtmf:1,2", "','"),
        ("/dtmf:12 34", "' '"),
        ("/dtmf:E", "'E'"),
        ("/transfer:", "needs a target"),
        ("/transfer:200 300", "cannot contain spaces"),
        ("msip:transfer_", "needs a target"),
        ("123,4x5", "'x'"),
        (",123", "nothing to dial"),
        ("/hangup", "unknown command"),
        ("/EXIT", "unknown command"),
        ("/answer now", "unknown command"),
        ("/account:2 /exit", "unknown command"),
        ("12\x003", "U+0000 at position 2"),
        ("12\x1b3", "U+001B"),
        ("12\x853", "U+0085"),
        ("12\ud8003", "surrogate"),
        ("1" * (MAX_COMMAND_LINE + 1), "limit"),
        # issue 13 item 4: neither a number, a name MicroSIP would dial, nor a SIP URI
        ("msip:bogus", "unknown msip: verb 'bogus'"),
        ("msip:ANSWER", "unknown msip: verb 'ANSWER'"),
        ("MSIP:answer", "is not a number, a name or a SIP URI"),
        ("'", "is not a number, a name or a SIP URI"),
        ("javascript:alert(1)", "is not a number, a name or a SIP URI"),
        ("--help", "is not a number, a name or a SIP URI"),
        ("--version hello", "is not a number, a name or a SIP URI"),
        ("bob@", "is not a number, a name or a SIP URI"),
        ("bob@<evil>", "is not a number, a name or a SIP URI"),
        ("/transfer:'", "is not a number, a name or a SIP URI"),
    ],
)
def test_grammar_errors(text: str, fragment: str) -> None:
    with pytest.raises(GrammarError) as info:
        parse_command_line(text)
    assert fragment in str(info.value)
    assert info.value.code == "grammar_error"
    assert isinstance(info.value, EngineError)


def test_trailing_newline_and_max_length_are_fine() -> None:
    assert parse_command_line("5551234\r\n") == (Dial("5551234"),)
    assert parse_command_line("1" * MAX_COMMAND_LINE) == (Dial("1" * MAX_COMMAND_LINE),)


def test_non_str_is_a_grammar_error() -> None:
    with pytest.raises(GrammarError):
        parse_command_line(b"5551234")  # type: ignore[arg-type]


def test_names_are_stable() -> None:
    names: dict[type[Action], str] = {
        Answer: "answer",
        HangupAll: "hangupall",
        HangupIncoming: "hangupincoming",
        HangupCalling: "hangupcalling",
        Hold: "hold",
        Transfer: "transfer",
        Dtmf: "dtmf",
        MicMute: "micmute",
        MicUnmute: "micunmute",
        MicMuteToggle: "micmutetoggle",
        SpeakMute: "speakmute",
        SpeakUnmute: "speakunmute",
        SpeakMuteToggle: "speakmutetoggle",
        Volume: "volume",
        Minimize: "minimize",
        Exit: "exit",
        Minimized: "minimized",
        Reset: "reset",
        SwitchAccount: "switchaccount",
        SavePassword: "savepassword",
        PasswordOverride: "passwordoverride",
        Dial: "dial",
        SendMessage: "sendmessage",
        Noop: "noop",
    }
    for cls, name in names.items():
        assert cls.name == name


def test_to_dict_and_repr_never_show_passwords() -> None:
    for action in (SavePassword(2, "hunter2"), PasswordOverride("hunter2")):
        assert "hunter2" not in repr(action)
        assert "hunter2" not in str(action)
        d = action.to_dict()
        assert "hunter2" not in json.dumps(d)
        assert d["password"] == "***"
    assert SavePassword(2, "hunter2").to_dict() == {
        "action": "savepassword",
        "index": 2,
        "password": "***",
    }


def test_to_dict_shapes() -> None:
    assert Dial("123", ("4", "5")).to_dict() == {
        "action": "dial",
        "target": "123",
        "post_dial": ["4", "5"],
    }
    assert Answer().to_dict() == {"action": "answer"}
    assert Volume("mic", -1).to_dict() == {"action": "volume", "device": "mic", "step": -1}
    assert SendMessage("101", "hi").to_dict() == {
        "action": "sendmessage",
        "target": "101",
        "text": "hi",
    }


def test_actions_are_frozen_and_hashable() -> None:
    action = Dial("123")
    with pytest.raises(dataclasses.FrozenInstanceError):
        action.target = "456"  # type: ignore[misc]
    assert len({Dial("1"), Dial("1"), Answer()}) == 2


# --------------------------------------------------------------------------- launcher


@pytest.mark.parametrize(
    ("argv_text", "expected"),
    [
        ("/exit", "exit"),
        ("/minimized", "minimized"),
        ("/reset", "reset"),
        ("/resetnoask", "reset"),
        ("/answer", "noop_if_not_running"),
        ("/hangupall", "noop_if_not_running"),
        ("/EXIT", "forward"),
        (" /exit", "forward"),
        ("/exit ", "forward"),
        ('"/exit"', "forward"),
        ("/hangupincoming", "forward"),
        ("5551234", "forward"),
        ("", "forward"),
    ],
)
def test_launcher_action(argv_text: str, expected: str) -> None:
    assert launcher_action(argv_text) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["msip:micmute"], "msip:micmute"),
        (["101", "Hello", "there"], "101 Hello there"),
        (["101 Hello there"], '"101 Hello there"'),
        (["101", "Hello there"], '101 "Hello there"'),
        (["/account:2", "/password:a b"], '/account:2 "/password:a b"'),
        ([""], '""'),
        ([], ""),
        (['say "hi"'], '"say "hi""'),
    ],
)
def test_join_argv(argv: list[str], expected: str) -> None:
    assert join_argv(argv) == expected


def test_join_argv_round_trips_through_the_grammar() -> None:
    assert parse_command_line(join_argv(["101 Hello there"])) == (
        SendMessage("101", "Hello there"),
    )
    assert parse_command_line(join_argv(["101", "Hello", "there"])) == (
        SendMessage("101", "Hello there"),
    )
    assert parse_command_line(join_argv(["msip:micmute"])) == (MicMute(),)


# --------------------------------------------------------------------------- fuzzing

_FRAGMENTS = st.sampled_from(
    [
        "msip:",
        "/account:",
        "/password:",
        "/dtmf:",
        "/transfer:",
        "/answer",
        "/hangupall",
        "/exit",
        "sip:",
        "tel:",
        "callto:",
        "dial:",
        "dialpad:",
        "//",
        "/",
        '"',
        " ",
        ",",
        "@",
        "%20",
        "%2B",
        "transfer_",
        "?",
        "#",
        "*",
        "+",
        "0",
        "12",
        "9999999",
        "\x00",
        "\t",
        "\ud800",
    ]
)
_TEXT = st.one_of(
    st.text(max_size=64),
    st.lists(st.one_of(_FRAGMENTS, st.text(max_size=4)), max_size=12).map("".join),
)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT)
def test_fuzz_only_grammar_error_escapes(text: str) -> None:
    try:
        actions = parse_command_line(text)
    except GrammarError:
        return
    assert isinstance(actions, tuple)
    for action in actions:
        assert isinstance(action, Action)
        json.dumps(action.to_dict())
        if isinstance(action, Dial):
            assert action.target and " " not in action.target
        if isinstance(action, SendMessage):
            assert action.target and action.text


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(max_size=10), max_size=6))
def test_fuzz_join_argv_never_fails(argv: list[str]) -> None:
    joined = join_argv(argv)
    assert isinstance(launcher_action(joined), str)
    with contextlib.suppress(GrammarError):
        parse_command_line(joined)
