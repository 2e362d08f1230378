"""Number normalisation, ``dialingPrefix`` and the Cisco-like ``dialPlan``
(docs/microsip.md#dial-plan).

MicroSIP's ``FormatNumber`` turns what the user (or an integration) asked to dial into
what is really dialled; an account's ``dialingPrefix``/``dialPlan`` are part of the
drop-in contract because PBX users rely on them to reach the PSTN.  The steps, in
MicroSIP's order, are :func:`clean_number`, :func:`apply_dialing_prefix`,
:func:`apply_dial_plan` (all three skipped for the local "call by IP" account and for
``name <uri>`` targets, see :func:`format_number`), then :func:`to_sip_uri`.

Dial-plan syntax (MicroSIP compiles it to an ATL regular expression, anchored):

* the whole plan is trimmed of spaces and parentheses, then split at ``|`` into
  alternatives (empty ones skipped); the first alternative that matches the whole
  number wins; each alternative is trimmed the same way here (MicroSIP only trims the
  plan, so ``(9xxx)|(8xxx)`` never matched there);
* ``x``/``X`` is one digit (the spec and Cisco; MicroSIP's regex really has "any
  character" there);
* ``.`` repeats the previous element zero or more times (regex ``*``);
* ``[1-5]``, ``[02468]``, ``[^0]`` are character classes;
* ``<match:replace>`` matches ``match`` (same syntax) and replaces it with the literal
  ``replace``; ``<:9>`` inserts ``9``; ``<match>`` without a colon is just ``match``;
* ``\\c`` is the literal ``c``; every other character (digits, ``*``, ``#``, ``+``…)
  is literal.  In MicroSIP ``*`` and ``+`` were regex operators, so plans using them
  literally never worked there; treating them literally is what their authors meant.

A malformed plan raises :class:`DialPlanError` (MicroSIP silently skipped an
alternative its regex parser refused); a plan with no alternative at all is "no
plan".  A plan that does not match means nothing is dialled (``None``).
"""

from __future__ import annotations

import dataclasses
import functools
import re

from engine.errors import EngineError, InvalidTargetError

SEPARATORS = ".-()/ "
"""What a PSTN-looking number loses (MicroSIP's ``FormatNumber``)."""

MAX_PLAN_INPUT = 256
"""Longer numbers never match a non-empty plan: plans are regexes and a pathological
plan (``x.x.x.x.``) backtracks polynomially in the number's length."""

_PSTN_BODY = frozenset("0123456789*#" + SEPARATORS)
_DIGIT = "[0-9]"


class DialPlanError(EngineError):
    """A ``dialPlan`` value cannot be compiled; names the plan and the position."""

    code = "dialplan_error"

    def __init__(self, message: str, *, plan: str, position: int) -> None:
        super().__init__(f"dialPlan {plan!r}, position {position}: {message}")
        self.plan = plan
        self.position = position


# --------------------------------------------------------------------------- numbers


def is_pstn_number(number: str) -> bool:
    """True for what MicroSIP treats as a phone number: an optional leading ``+``,
    then only digits, ``*``, ``#`` and the separators ``.-()/`` and space.

    (MicroSIP's ``IsPSTNNnmber`` has a typo that accepts *anything* after a leading
    ``+``, and rejects ``+`` elsewhere; this is the rule it was meant to have.)
    """
    body = number[1:] if number.startswith("+") else number
    return bool(body) and all(ch in _PSTN_BODY for ch in body)


def clean_number(number: str) -> str:
    """Drop ``.-()/`` and spaces from a PSTN-looking number; anything else (a SIP URI,
    a user name) is returned unchanged, since those characters mean something there."""
    if not is_pstn_number(number):
        return number
    return number.translate({ord(ch): None for ch in SEPARATORS})


def apply_dialing_prefix(number: str, prefix: str) -> str:
    """Prepend the account's ``dialingPrefix`` the way MicroSIP does.

    ``number`` is expected already cleaned.  Only PSTN-looking numbers longer than 3
    characters (the ``+`` counts) get the prefix, so internal extensions stay
    reachable; a leading ``+`` is dropped when — and only when — the prefix is added
    (``dialingPrefix=00`` turns ``+4930…`` into ``004930…``).
    """
    if not prefix or len(number) <= 3 or not is_pstn_number(number):
        return number
    if number.startswith("+"):
        number = number[1:]
    return prefix + number


# --------------------------------------------------------------------------- dial plan


@dataclasses.dataclass(frozen=True)
class _Alternative:
    regex: re.Pattern[str]
    replacements: tuple[str, ...]  # one per capture group, in order


@dataclasses.dataclass(frozen=True)
class DialPlan:
    """A compiled ``dialPlan``; compile once at configuration time to report errors."""

    source: str
    alternatives: tuple[_Alternative, ...]

    def apply(self, number: str) -> str | None:
        """The rewritten number, or ``None`` if no alternative matches (no call)."""
        if not self.alternatives:
            return number
        if len(number) > MAX_PLAN_INPUT:
            return None
        for alt in self.alternatives:
            m = alt.regex.fullmatch(number)
            if m is not None:
                return _rewrite(number, m, alt.replacements)
        return None


def _rewrite(number: str, m: re.Match[str], replacements: tuple[str, ...]) -> str:
    """Replace each ``<match:replace>`` group's text, keep everything between them."""
    out: list[str] = []
    prev = 0
    for group, replacement in enumerate(replacements, start=1):
        start, end = m.span(group)
        if start < 0:  # pragma: no cover - groups are never optional
            continue
        out.append(number[prev:start])
        out.append(replacement)
        prev = end
    out.append(number[prev:])
    return "".join(out)


@functools.lru_cache(maxsize=64)
def compile_dial_plan(plan: str) -> DialPlan:
    """Compile ``plan``; raises :class:`DialPlanError` naming the bad position."""
    alternatives: list[_Alternative] = []
    for offset, token in _split_alternatives(plan):
        pattern, replacements = _Translator(plan, token, offset).run()
        try:
            regex = re.compile(pattern)
        except re.error as exc:  # pragma: no cover - the translator escapes everything
            raise DialPlanError(str(exc), plan=plan, position=offset) from exc
        alternatives.append(_Alternative(regex, replacements))
    return DialPlan(plan, tuple(alternatives))


def apply_dial_plan(number: str, plan: str) -> str | None:
    """Apply a Cisco-like ``plan`` to ``number``: the rewritten number, the number
    unchanged for an empty plan, or ``None`` when the plan does not match."""
    return compile_dial_plan(plan).apply(number)


def _split_alternatives(plan: str) -> list[tuple[int, str]]:
    """``|``-separated, non-empty alternatives with their offsets in ``plan``."""
    out: list[tuple[int, str]] = []
    start = 0
    for part in plan.split("|"):
        left = part.lstrip(" ()")
        token = left.rstrip(" ()")
        if token:
            out.append((start + len(part) - len(left), token))
        start += len(part) + 1
    return out


def _repeat(atom: str) -> str:
    """``atom*``; a ``<match:replace>`` group repeats *inside* its capture, so the
    replacement covers every repetition (``<1:>.`` drops all leading 1s)."""
    if atom.startswith("("):
        return "((?:" + atom[1:-1] + ")*)"
    return atom + "*"


class _Translator:
    """Turns one alternative into a Python regex plus its replacement strings."""

    def __init__(self, plan: str, token: str, offset: int) -> None:
        self.plan = plan
        self.token = token
        self.offset = offset
        self.replacements: list[str] = []

    def error(self, message: str, index: int) -> DialPlanError:
        return DialPlanError(message, plan=self.plan, position=self.offset + index)

    def run(self) -> tuple[str, tuple[str, ...]]:
        atoms = self.atoms(0, len(self.token), in_group=False)
        return "".join(atoms), tuple(self.replacements)

    def atoms(self, i: int, end: int, *, in_group: bool) -> list[str]:
        """Regex atoms for ``token[i:end]``; each ``.`` starts the previous atom over."""
        token = self.token
        atoms: list[str] = []
        repeated = False
        while i < end:
            ch = token[i]
            if ch == ".":
                if not atoms:
                    raise self.error("'.' has nothing before it to repeat", i)
                if not repeated:
                    atoms[-1] = _repeat(atoms[-1])
                    repeated = True
                i += 1
                continue
            repeated = False
            if ch in "xX":
                atoms.append(_DIGIT)
                i += 1
            elif ch == "[":
                i = self.char_class(i, end, atoms)
            elif ch == "<" and not in_group:
                i = self.group(i, end, atoms)
            elif ch in "<>[]()":  # '<' here is nested; '(' ')' only wrap alternatives
                raise self.error(f"unexpected {ch!r}", i)
            elif ch == "\\":
                if i + 1 >= end:
                    raise self.error("'\\' at the end escapes nothing", i)
                atoms.append(re.escape(token[i + 1]))
                i += 2
            else:
                atoms.append(re.escape(ch))
                i += 1
        return atoms

    def char_class(self, i: int, end: int, atoms: list[str]) -> int:
        """``[...]`` with ranges and an optional leading ``^``; returns the next index."""
        close = self.token.find("]", i + 1, end)
        if close == -1:
            raise self.error("'[' without ']'", i)
        body = self.token[i + 1 : close]
        negate = body.startswith("^")
        if negate:
            body = body[1:]
        if not body:
            raise self.error("empty character class", i)
        pieces: list[str] = []
        k = 0
        while k < len(body):
            if k + 2 < len(body) and body[k + 1] == "-":
                low, high = body[k], body[k + 2]
                if low > high:
                    raise self.error(f"range {low}-{high} runs backwards", i + 1 + k)
                pieces.append(f"{re.escape(low)}-{re.escape(high)}")
                k += 3
            else:
                pieces.append(re.escape(body[k]))
                k += 1
        atoms.append("[" + ("^" if negate else "") + "".join(pieces) + "]")
        return close + 1

    def group(self, i: int, end: int, atoms: list[str]) -> int:
        """``<match:replace>`` (a capture group) or ``<match>`` (inlined)."""
        close = self.token.find(">", i + 1, end)
        if close == -1:
            raise self.error("'<' without '>'", i)
        colon = self.token.find(":", i + 1, close)
        if colon == -1:
            atoms.extend(self.atoms(i + 1, close, in_group=True))
            return close + 1
        inner = self.atoms(i + 1, colon, in_group=True)
        atoms.append("(" + "".join(inner) + ")")
        self.replacements.append(self.token[colon + 1 : close])
        return close + 1


# --------------------------------------------------------------------------- pipeline


def format_number(
    target: str, *, dialing_prefix: str = "", dial_plan: str = "", is_local: bool = False
) -> str | None:
    """MicroSIP's ``FormatNumber`` minus the post-dial split (the grammar did that):
    clean, prefix, dial plan.  The local "call by IP" account and targets written as
    ``name <uri>`` are left alone, as in MicroSIP.  ``None`` means "do not dial"."""
    if is_local or ("<" in target and ">" in target):
        return target
    number = apply_dialing_prefix(clean_number(target), dialing_prefix)
    return apply_dial_plan(number, dial_plan)


_TRANSPORTS = {"": "", "udp": "", "tcp": ";transport=tcp", "tls": ";transport=tls"}


def to_sip_uri(target: str, domain: str, *, transport: str | None = None) -> str:
    """The SIP URI MicroSIP's ``GetSIPURI`` builds for ``target``.

    * anything already containing ``sip:``/``sips:`` (a URI or ``name <uri>``) is
      kept as is;
    * ``user@host`` gets ``sip:``;
    * a bare number or name becomes ``sip:<target>@<domain>``;
    * with an empty ``domain`` (the local "call by IP" account) the target is the
      host itself: ``192.168.1.20:5062`` → ``sip:192.168.1.20:5062``.

    ``transport`` ``"tcp"``/``"tls"`` appends ``;transport=…`` (inside ``<…>``) unless
    the URI already names one; ``None``/``"udp"`` adds nothing.
    """
    text = target.strip()
    if not text:
        raise InvalidTargetError("empty dial target")
    lowered = text.lower()
    if "sip:" in lowered or "sips:" in lowered:
        uri = text
    elif "@" in text:
        uri = "sip:" + text
    elif domain:
        uri = f"sip:{text}@{domain}"
    else:
        uri = "sip:" + text
    suffix = _TRANSPORTS.get((transport or "").lower())
    if suffix is None:
        raise InvalidTargetError(f"unknown transport {transport!r} (udp, tcp or tls)")
    if not suffix or ";transport=" in uri.lower():
        return uri
    if uri.endswith(">"):
        return uri[:-1] + suffix + ">"
    return uri + suffix
