"""MicroSIP's command-line grammar, as pure data: text in, typed actions out.

Integrations drive MicroSIP by running ``MicroSIP.exe <args>`` (or by sending the same
text with ``WM_COPYDATA``), so this grammar *is* the API a drop-in must honour.  The
module is pure (no I/O, no pjsua2, no numpy) because the ``microsip`` launcher imports
it and must start fast.

Precedence, in the order :func:`parse_command_line` applies it (MicroSIP 3.22's
``CommandLine`` → ``DialNumberFromCommandLine`` → ``DialNumber``; see
docs/microsip.md#command-line):

1. Reject what MicroSIP could never have received sensibly: more than
   :data:`MAX_COMMAND_LINE` characters, control characters (NUL included) or lone
   surrogates after trimming → :class:`GrammarError`.
2. Trim whitespace; remove one surrounding pair of double quotes (then trim again —
   MicroSIP does not, which only ever turned ``" 123"`` into a silent no-op).
3. Whole-string launcher words ``/exit``, ``/minimized``, ``/reset``, ``/resetnoask``
   give :class:`Exit`, :class:`Minimized`, :class:`Reset`.  MicroSIP handles these in
   the launching process only (see :func:`launcher_action`); parsing them here lets a
   raw ``WM_COPYDATA`` sender get what it meant instead of a call to ``/exit``.
4. ``msip:`` (case-sensitive) followed by an exact verb; ``msip:transfer_<target>``;
   ``msip:`` alone does nothing; anything else after ``msip:`` goes through step 5.
5. Everything else:
   a. ``%20`` → space, ``%2B`` → ``+`` (3.22; exact, upper-case escapes only);
   b. strip one scheme, case-insensitive: ``tel:``, ``sip:``, ``callto:``, ``dial:``,
      ``dialpad:``;
   c. a leading ``//`` is removed and, only then, one trailing ``/`` (as in 3.20.5);
   d. the first ``/account:N`` (N up to the next space) is cut out together with one
      adjacent space.  If ``/password:`` is in what remains, the result is
      :class:`SavePassword` (N, everything after ``/password:``) and nothing else;
      otherwise :class:`SwitchAccount` (N) followed by the actions for the rest;
   e. exact ``/answer``, ``/hangupall``, ``/hangupincoming``, ``/hangupcalling``;
      prefixes ``/dtmf:``, ``/password:``, ``/transfer:`` (their value is the whole
      rest of the string, so ``/dtmf:1,2`` is DTMF ``1,2`` → error: ``,`` is not a
      DTMF digit, and post-dial commas only exist when dialling);
   f. otherwise split at the first space: ``number text`` → :class:`SendMessage`,
      a lone ``number`` → :class:`Dial`.  Only then is the number split at commas
      into the target and post-dial DTMF groups, so ``123,4 hi`` messages
      ``123,4``.  ``sip:a@b c d`` sends ``c d`` to ``sip:a@b``.

Deliberate differences from MicroSIP, all in the direction of "say what is wrong"
rather than "silently do something odd":

* ``/account:`` with an empty, non-numeric or zero N, a second ``/account:``, an
  empty or malformed ``/dtmf:``/``/transfer:`` target, and a dial/message target
  starting with ``/`` (an unknown command such as ``/hangup``) raise
  :class:`GrammarError`; MicroSIP would ignore the switch or dial ``/hangup``.
* MicroSIP keeps ``sip:`` off the target and adds it back when building the URI; the
  result is the same URI, so here a ``sip:`` target with ``@`` keeps its scheme.
* ``/password:X /account:2`` stores ``X`` (MicroSIP stores ``X /account:2``), and
  ``101 /account:2 Hello`` messages ``Hello`` to 101 (MicroSIP's delete length bug
  cuts everything after the account number).
* An unknown ``msip:`` verb (a bare word such as ``msip:bogus``) and a dial,
  message or transfer target that is neither a number, a name (``user``,
  ``user@host``) nor a SIP URI (``'``, ``javascript:alert(1)``, ``--help``) raise
  :class:`GrammarError`; MicroSIP would send an INVITE for them.
* ``/dtmf:123?`` (MicroSIP: "type into the dial pad, do not send") is a
  :class:`Noop`: a headless engine has no dial pad.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from engine.errors import EngineError

MAX_COMMAND_LINE = 4096
"""Longest command line accepted (characters); MicroSIP has no limit, we need one."""

DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")
"""Characters pjsua can send as DTMF (RFC 2833, SIP INFO and in-band alike)."""

_WHITESPACE = " \t\r\n\v\f"  # what CString::Trim() removes for ASCII input
_REDACTED = "***"
_SCHEMES = ("tel:", "sip:", "callto:", "dial:", "dialpad:")


class GrammarError(EngineError):
    """The command line is malformed; the message says what and where."""

    code = "grammar_error"


# --------------------------------------------------------------------------- actions


@dataclasses.dataclass(frozen=True)
class Action:
    """Base of all actions: ``name`` is stable (logs, JSON, tests); ``to_dict`` is the
    one serialisation, and never contains a password in clear."""

    name: ClassVar[str] = "action"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.name}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.metadata.get("secret"):
                value = _REDACTED
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out


def _secret() -> Any:
    """A field that stays out of ``repr`` and is redacted by ``to_dict``."""
    return dataclasses.field(repr=False, metadata={"secret": True})


@dataclasses.dataclass(frozen=True)
class Answer(Action):
    """Answer the first ringing inbound call."""

    name: ClassVar[str] = "answer"


@dataclasses.dataclass(frozen=True)
class HangupAll(Action):
    """Hang up every call except ringing inbound ones."""

    name: ClassVar[str] = "hangupall"


@dataclasses.dataclass(frozen=True)
class HangupIncoming(Action):
    """Reject ringing inbound calls (3.22)."""

    name: ClassVar[str] = "hangupincoming"


@dataclasses.dataclass(frozen=True)
class HangupCalling(Action):
    """Hang up outbound calls not yet answered (3.20+)."""

    name: ClassVar[str] = "hangupcalling"


@dataclasses.dataclass(frozen=True)
class Hold(Action):
    """Toggle hold of the current call."""

    name: ClassVar[str] = "hold"


@dataclasses.dataclass(frozen=True)
class Transfer(Action):
    """Blind transfer (REFER) of the current call; ``target`` is not yet a URI."""

    name: ClassVar[str] = "transfer"
    target: str


@dataclasses.dataclass(frozen=True)
class Dtmf(Action):
    """Send DTMF on the current call (method from ``DTMFMethod``)."""

    name: ClassVar[str] = "dtmf"
    digits: str


@dataclasses.dataclass(frozen=True)
class MicMute(Action):
    name: ClassVar[str] = "micmute"


@dataclasses.dataclass(frozen=True)
class MicUnmute(Action):
    name: ClassVar[str] = "micunmute"


@dataclasses.dataclass(frozen=True)
class MicMuteToggle(Action):
    name: ClassVar[str] = "micmutetoggle"


@dataclasses.dataclass(frozen=True)
class SpeakMute(Action):
    name: ClassVar[str] = "speakmute"


@dataclasses.dataclass(frozen=True)
class SpeakUnmute(Action):
    name: ClassVar[str] = "speakunmute"


@dataclasses.dataclass(frozen=True)
class SpeakMuteToggle(Action):
    name: ClassVar[str] = "speakmutetoggle"


@dataclasses.dataclass(frozen=True)
class Volume(Action):
    """One volume step of the microphone or the speaker (``micup`` … ``speakdown``)."""

    name: ClassVar[str] = "volume"
    device: Literal["mic", "speaker"]
    step: Literal[1, -1]


@dataclasses.dataclass(frozen=True)
class Minimize(Action):
    """``msip:minimize`` hides the window; accepted and meaningless when headless."""

    name: ClassVar[str] = "minimize"


@dataclasses.dataclass(frozen=True)
class Exit(Action):
    name: ClassVar[str] = "exit"


@dataclasses.dataclass(frozen=True)
class Minimized(Action):
    """``/minimized``: start minimized; nothing to do for a running instance."""

    name: ClassVar[str] = "minimized"


@dataclasses.dataclass(frozen=True)
class Reset(Action):
    """``/reset`` (``ask``) or ``/resetnoask``: close and delete the settings."""

    name: ClassVar[str] = "reset"
    ask: bool = True


@dataclasses.dataclass(frozen=True)
class SwitchAccount(Action):
    """Make ``[Account<index>]`` active; the caller drops what follows if it is missing."""

    name: ClassVar[str] = "switchaccount"
    index: int


@dataclasses.dataclass(frozen=True)
class SavePassword(Action):
    """Store ``password`` in ``[Account<index>]`` (re-register if it is active)."""

    name: ClassVar[str] = "savepassword"
    index: int
    password: str = _secret()


@dataclasses.dataclass(frozen=True)
class PasswordOverride(Action):
    """In-memory password for the next registration; never saved."""

    name: ClassVar[str] = "passwordoverride"
    password: str = _secret()


@dataclasses.dataclass(frozen=True)
class Dial(Action):
    """Call ``target`` (a number or SIP URI before dialingPrefix/dialPlan); after the
    answer send each ``post_dial`` group as DTMF (an empty group is one more pause)."""

    name: ClassVar[str] = "dial"
    target: str
    post_dial: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SendMessage(Action):
    """Send a SIP MESSAGE ``text`` to ``target`` instead of calling."""

    name: ClassVar[str] = "sendmessage"
    target: str
    text: str


@dataclasses.dataclass(frozen=True)
class Noop(Action):
    """Accepted, nothing to do; ``reason`` says why (for the log)."""

    name: ClassVar[str] = "noop"
    reason: str = ""


_MSIP_VERBS: dict[str, Action] = {
    "answer": Answer(),
    "hangupall": HangupAll(),
    "hold": Hold(),
    "micmute": MicMute(),
    "micunmute": MicUnmute(),
    "micmuteclick": MicMuteToggle(),
    "speakmute": SpeakMute(),
    "speakunmute": SpeakUnmute(),
    "speakmuteclick": SpeakMuteToggle(),
    "micup": Volume("mic", 1),
    "micdown": Volume("mic", -1),
    "speakup": Volume("speaker", 1),
    "speakdown": Volume("speaker", -1),
    "minimize": Minimize(),
}

_LAUNCHER_WORDS: dict[str, Action] = {
    "/exit": Exit(),
    "/minimized": Minimized(),
    "/reset": Reset(ask=True),
    "/resetnoask": Reset(ask=False),
}

_EXACT_COMMANDS: dict[str, Action] = {
    "/answer": Answer(),
    "/hangupall": HangupAll(),
    "/hangupincoming": HangupIncoming(),
    "/hangupcalling": HangupCalling(),
}


# --------------------------------------------------------------------------- parsing


def parse_command_line(text: str) -> tuple[Action, ...]:
    """Turn one MicroSIP command line (as forwarded, program name excluded) into the
    actions MicroSIP 3.22 would perform, in order.  An empty tuple means "nothing".

    Only :class:`GrammarError` ever escapes: callers feed this untrusted text from
    other processes and must be able to log-and-continue on one exception type.
    """
    if not isinstance(text, str):
        raise GrammarError(f"command line must be text, not {type(text).__name__}")
    try:
        return _parse(text)
    except GrammarError:
        raise
    except Exception as exc:  # pragma: no cover - safety net, fuzzing finds none
        raise GrammarError(f"cannot parse command line: {exc!r}") from exc


def _parse(text: str) -> tuple[Action, ...]:
    line = _checked(text)
    if len(line) >= 1 and line[0] == '"' and line[-1] == '"':
        line = line[1:-1].strip(_WHITESPACE)
    if line in _LAUNCHER_WORDS:
        return (_LAUNCHER_WORDS[line],)
    if line.startswith("msip:"):
        return _parse_msip(line[5:])
    return _parse_rest(line)


def _checked(text: str) -> str:
    """Length, control-character and surrogate checks; returns the trimmed text."""
    if len(text) > MAX_COMMAND_LINE:
        raise GrammarError(
            f"command line is {len(text)} characters long; the limit is {MAX_COMMAND_LINE}"
        )
    line = text.strip(_WHITESPACE)
    offset = len(text) - len(text.lstrip(_WHITESPACE))
    for i, ch in enumerate(line):
        code = ord(ch)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            raise GrammarError(f"control character U+{code:04X} at position {offset + i}")
        if 0xD800 <= code <= 0xDFFF:
            raise GrammarError(f"lone surrogate U+{code:04X} at position {offset + i}")
    return line


def _parse_msip(cmd: str) -> tuple[Action, ...]:
    """``msip:<verb>``: exact verbs only; anything else is an ordinary command line."""
    verb = _MSIP_VERBS.get(cmd)
    if verb is not None:
        return (verb,)
    if cmd.startswith("transfer_"):
        return (Transfer(_transfer_target(cmd[9:], "msip:transfer_")),)
    if cmd and all(ch.isascii() and (ch.isalpha() or ch == "_") for ch in cmd):
        # A word is a verb, mistyped: MicroSIP would dial "bogus@domain" instead.
        raise GrammarError(f"unknown msip: verb {cmd!r} (verbs: {', '.join(_MSIP_VERBS)})")
    return _parse_rest(cmd)


def _parse_rest(line: str) -> tuple[Action, ...]:
    """Step 5 of the module docstring: decoding, scheme, ``//``, ``/account:``, commands."""
    line = line.replace("%20", " ").replace("%2B", "+").strip(_WHITESPACE)
    scheme = ""
    for prefix in _SCHEMES:
        if line[: len(prefix)].lower() == prefix:
            scheme, line = prefix[:-1], line[len(prefix) :]
            break
    if line.startswith("//"):
        line = line[2:]
        if line.endswith("/"):
            line = line[:-1]
    line = line.strip(_WHITESPACE)

    actions: list[Action] = []
    index, line = _extract_account(line)
    if index is not None:
        pos = line.find("/password:")
        if pos != -1:
            return (SavePassword(index, line[pos + 10 :]),)
        actions.append(SwitchAccount(index))
    if line:
        actions.extend(_parse_command(line, scheme))
    return tuple(actions)


def _extract_account(line: str) -> tuple[int | None, str]:
    """Cut the first ``/account:N`` (and one adjacent space) out of ``line``."""
    pos = line.find("/account:")
    if pos == -1:
        return None, line
    start = pos + 9
    end = line.find(" ", start)
    value = line[start:] if end == -1 else line[start:end]
    if not value:
        raise GrammarError(f"/account: at position {pos} needs an account number")
    if not (value.isascii() and value.isdigit()):
        raise GrammarError(f"/account:{value}: the account number must be digits")
    if len(value) > 6 or int(value) < 1:
        raise GrammarError(f"/account:{value}: account numbers run from 1 to 999999")
    left, right = line[:pos], line[start + len(value) :]
    if right.startswith(" "):
        right = right[1:]
    elif left.endswith(" "):
        left = left[:-1]
    rest = (left + right).strip(_WHITESPACE)
    if "/account:" in rest:
        raise GrammarError("more than one /account: in one command line")
    return int(value), rest


def _parse_command(line: str, scheme: str) -> tuple[Action, ...]:
    """The slash commands (docs/microsip.md#slash-commands), else a dial or a message."""
    exact = _EXACT_COMMANDS.get(line)
    if exact is not None:
        return (exact,)
    if line.startswith("/dtmf:"):
        return (_dtmf(line[6:]),)
    if line.startswith("/password:"):
        return (PasswordOverride(line[10:]),)
    if line.startswith("/transfer:"):
        return (Transfer(_transfer_target(line[10:], "/transfer:")),)
    return _dial_or_message(line, scheme)


def _dtmf(value: str) -> Action:
    """``/dtmf:<digits>``; a trailing ``?`` means "type, do not send" in MicroSIP."""
    delayed = value.endswith("?")
    digits = value[:-1] if delayed else value
    if not digits:
        raise GrammarError("/dtmf: needs at least one digit")
    _check_dtmf(digits, "/dtmf:")
    if delayed:
        return Noop(reason=f"/dtmf:{digits}? only fills MicroSIP's dial pad")
    return Dtmf(digits)


def _check_dtmf(digits: str, where: str) -> None:
    for i, ch in enumerate(digits):
        if ch not in DTMF_DIGITS:
            raise GrammarError(
                f"{where}{digits}: {ch!r} at position {i} is not a DTMF digit (0-9 * # A-D)"
            )


def _transfer_target(value: str, where: str) -> str:
    if not value:
        raise GrammarError(f"{where} needs a target")
    if any(ch in _WHITESPACE for ch in value):
        raise GrammarError(f"{where}{value}: a transfer target cannot contain spaces")
    _check_target(value)
    return value


def _dial_or_message(line: str, scheme: str) -> tuple[Action, ...]:
    """``number text`` sends a MESSAGE, a lone ``number`` is dialled (``DialNumber``)."""
    number, _, text = line.partition(" ")
    number, text = number.strip(_WHITESPACE), text.strip(_WHITESPACE)
    if not number:
        return ()
    if number.startswith("/"):
        # Only the name: whatever follows a ':' may be a secret (/Password:x).
        raise GrammarError(f"unknown command {number.split(':', 1)[0]!r}")
    if scheme == "sip" and "@" in number:
        number = "sip:" + number
    if not number.startswith(","):  # that one is _dial's "nothing to dial"
        _check_target(number.partition(",")[0])
    if text:
        return (SendMessage(number, text),)
    return (_dial(number),)


#: What a SIP user part may hold (RFC 3261 ``user``: unreserved, escaped, user-unreserved).
_USER_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()%&=+$,;?/#"
)
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.:[]")


def _check_target(target: str) -> None:
    """A dial or message target must be a number, a name MicroSIP would dial
    (``user`` or ``user@host``) or a SIP URI: ``'``, ``javascript:alert(1)`` or
    ``--help`` would otherwise become an INVITE to the PBX."""
    lowered = target.lower()
    if lowered.startswith(("sip:", "sips:")):
        rest = target[target.index(":") + 1 :]
        if rest and not any(ch in '<>"' for ch in rest):
            return
    else:
        user, at, host = target.partition("@")
        user_ok = (
            user
            and not user.startswith("-")
            and any(ch.isalnum() for ch in user)
            and all(ch in _USER_CHARS or (ord(ch) > 127 and ch.isalnum()) for ch in user)
        )
        host_ok = not at or (host and all(ch in _HOST_CHARS for ch in host))
        if user_ok and host_ok:
            return
    raise GrammarError(f"{target!r} is not a number, a name or a SIP URI; not dialling")


def _dial(number: str) -> Dial:
    """Split ``123,456,78`` into the target and post-dial DTMF groups."""
    pos = number.find(",")
    if pos == -1:
        return Dial(number)
    if pos == 0:
        raise GrammarError(f"{number!r}: nothing to dial before ','")
    groups = number[pos + 1 :].split(",")
    while groups and not groups[-1]:
        groups.pop()
    for group in groups:
        _check_dtmf(group, "post-dial ")
    return Dial(number[:pos], tuple(groups))


# --------------------------------------------------------------------------- launcher


LauncherAction = Literal["exit", "minimized", "reset", "noop_if_not_running", "forward"]

_LAUNCHER: dict[str, LauncherAction] = {
    "/exit": "exit",
    "/minimized": "minimized",
    "/reset": "reset",
    "/resetnoask": "reset",
    "/answer": "noop_if_not_running",
    "/hangupall": "noop_if_not_running",
}


def launcher_action(argv_text: str) -> LauncherAction:
    """What the *launching* process does with its own command line
    (docs/microsip.md#launcher).

    MicroSIP compares its raw command line as a whole, exactly and case-sensitively
    (``lstrcmp``), so ``" /exit"`` or ``/EXIT`` are forwarded like anything else:

    * ``"exit"`` — close the running instance; nothing running: just exit;
    * ``"minimized"`` — start minimized; a running instance is left alone;
    * ``"reset"`` — close the instance and delete its settings;
    * ``"noop_if_not_running"`` — forward if running, else exit without starting;
    * ``"forward"`` — forward to the running instance, or start and run it once.
    """
    return _LAUNCHER.get(argv_text, "forward")


def join_argv(argv: list[str]) -> str:
    """Rebuild the raw command line MicroSIP would have seen for ``argv``.

    MicroSIP never splits its command line into arguments: it trims the raw text and
    strips one outer pair of quotes.  A shell has already removed the user's quotes
    from ``argv``, so an argument containing whitespace (or an empty one) is wrapped
    in double quotes again, and every other argument is passed verbatim; arguments
    are joined with single spaces.  Embedded quotes are *not* backslash-escaped
    (``subprocess.list2cmdline`` would), because MicroSIP never unescapes them.

    Hence ``["msip:micmute"]`` → ``msip:micmute`` (what ``"msip:micmute"`` becomes
    after MicroSIP's unquoting), ``["101", "Hello", "there"]`` → ``101 Hello there``
    (a MESSAGE), and ``["101 Hello there"]`` → ``"101 Hello there"`` (the same).
    """
    parts: list[str] = []
    for arg in argv:
        if arg == "" or any(ch in _WHITESPACE for ch in arg):
            parts.append(f'"{arg}"')
        else:
            parts.append(arg)
    return " ".join(parts)
