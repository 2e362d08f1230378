"""The one place that decides what happens to a new inbound call.

MicroSIP 3.22's order (docs/microsip.md#incoming-order): duplicate caller → ``callWaiting`` /
``maxConcurrentCalls`` → ``denyIncoming`` (with the DND toggle) → auto-answer →
forwarding → else 180 Ringing. Pure and fast: it runs on the SIP thread for every
INVITE, and every decision becomes an ``incoming_decision`` event with its reason.

Readings where MicroSIP's documentation is thin (documented in the README):

* ``autoAnswerNumber`` narrows auto-answer to callers whose user part matches one
  of its wildcards (``*``, ``?``); empty means every caller.
* ``callWaiting=0`` refuses a call while any other call exists (486 Busy Here).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Sequence

from .config import AccountConfig, Settings
from .dialplan import to_sip_uri
from .events import CallStateName, DecisionAction
from .sipuri import header_value, split_name_addr, user_part
from .state import CallSnapshot, Decision

BUSY = 486
_ANSWER_AFTER = re.compile(r"answer-after\s*=\s*(\d+)", re.IGNORECASE)
_DENY_MODES = ("user", "domain", "userdomain", "remotedomain", "all", "button", "")


@dataclasses.dataclass(frozen=True)
class Toggles:
    """MicroSIP's three buttons, changeable at run time (``AA``, ``DND``, ``FWD``)."""

    aa: bool = False
    dnd: bool = False
    fwd: bool = False

    @classmethod
    def from_settings(cls, s: Settings) -> Toggles:
        return cls(aa=s.aa, dnd=s.dnd, fwd=s.fwd)


def _host(uri: str) -> str:
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    host = rest.split("@", 1)[1] if "@" in rest else rest
    return host.split(";", 1)[0].split(">", 1)[0].lower()


def _domain_only(host_port: str) -> str:
    return host_port.rsplit(":", 1)[0] if host_port.count(":") == 1 else host_port


def _denied(s: Settings, toggles: Toggles, acc: AccountConfig, invite: str, remote: str) -> bool:
    mode = s.deny_incoming
    if mode == "all":
        return True
    if mode == "button":
        return toggles.dnd
    to_uri = split_name_addr(header_value(invite, "To", "t") or "")[1]
    wrong_user = bool(acc.username) and user_part(to_uri) != acc.username
    my_domain = _domain_only(acc.domain.lower())
    wrong_domain = bool(acc.domain) and _domain_only(_host(to_uri)) != my_domain
    if mode == "user":
        return wrong_user
    if mode == "domain":
        return wrong_domain
    if mode == "userdomain":
        return wrong_user or wrong_domain
    if mode == "remotedomain":
        return bool(acc.domain) and _domain_only(_host(remote)) != my_domain
    return False


def _header_answer_delay(invite: str, configured: float) -> float | None:
    """Delay for a caller-requested answer (X-AUTOANSWER / Call-Info): ``answer-after=N``
    overrides ``autoAnswerDelay``; None when the caller did not ask."""
    info = header_value(invite, "Call-Info") or ""
    m = _ANSWER_AFTER.search(info)
    if m:
        return float(m.group(1))
    xaa = (header_value(invite, "X-AUTOANSWER") or "").strip().lower()
    if xaa in ("true", "1") or "auto answer" in info.lower():
        return configured
    return None


def _auto_answer(s: Settings, toggles: Toggles, invite: str, caller: str) -> Decision | None:
    if s.auto_answer_number and not any(
        fnmatch.fnmatchcase(caller, pattern.strip()) for pattern in s.auto_answer_number
    ):
        return None
    delay = float(s.auto_answer_delay)
    if s.auto_answer == "all" or (s.auto_answer == "button" and toggles.aa):
        why = "auto-answer (all)" if s.auto_answer == "all" else "auto-answer (AA on)"
        return Decision(DecisionAction.ANSWER, 200, why, delay)
    if s.auto_answer == "header":
        asked = _header_answer_delay(invite, delay)
        if asked is not None:
            return Decision(
                DecisionAction.ANSWER, 200, "auto-answer requested by the caller", asked
            )
    return None


def _forward(s: Settings, toggles: Toggles, acc: AccountConfig) -> Decision | None:
    if not s.forwarding_number:
        return None
    if s.forwarding == "all" or (s.forwarding == "button" and toggles.fwd):
        target = to_sip_uri(s.forwarding_number, acc.domain)
        return Decision(
            DecisionAction.FORWARD, 302, f"forwarded to {target}", float(s.forwarding_delay), target
        )
    return None


def decide(
    call: CallSnapshot,
    invite: str,
    settings: Settings,
    account: AccountConfig,
    others: Sequence[CallSnapshot],
    toggles: Toggles,
) -> Decision:
    """The decision for ``call`` given the INVITE text and the other live calls."""
    live = [c for c in others if c.call != call.call and c.state != CallStateName.DISCONNECTED]
    if any(c.remote_uri == call.remote_uri for c in live):
        why = "Already in call with this contact"
        return Decision(DecisionAction.REJECT, BUSY, why, phrase=why)
    if live and not settings.call_waiting:
        return Decision(DecisionAction.REJECT, BUSY, "Busy Here (callWaiting=0)")
    if settings.max_concurrent_calls and len(live) >= settings.max_concurrent_calls:
        why = "Maximum concurrent calls reached"
        return Decision(DecisionAction.REJECT, BUSY, why, phrase=why)
    if _denied(settings, toggles, account, invite, call.remote_uri):
        why = "Do not disturb" if settings.deny_incoming == "button" else "Busy Here"
        return Decision(
            DecisionAction.REJECT, BUSY, f"{why} (denyIncoming={settings.deny_incoming})"
        )
    answer = _auto_answer(settings, toggles, invite, call.remote_user)
    if answer is not None:
        return answer
    forward = _forward(settings, toggles, account)
    if forward is not None:
        return forward
    return Decision()
