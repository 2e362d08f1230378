"""Carry out MicroSIP command-line actions (:mod:`engine.grammar`) on a CallManager.

This is what MicroSIP's ``DialNumberFromCommandLine`` does after parsing. It is
shared by every channel that accepts a MicroSIP command line: the ``microsip``
CLI, the control socket's ``commandline`` command and the WM_COPYDATA request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from . import grammar as g
from .dialplan import format_number
from .errors import EngineError, NotFoundError
from .events import CallDirection, CallStateName

if TYPE_CHECKING:
    from .manager import CallManager

log = structlog.get_logger("engine.actions")

RINGING = (CallStateName.INCOMING, CallStateName.EARLY)
UNANSWERED_OUT = (CallStateName.CALLING, CallStateName.EARLY, CallStateName.CONNECTING)


def _hangup_each(m: CallManager, numbers: list[int]) -> dict[str, Any]:
    """Hang up each call; one that ended meanwhile does not stop the others."""
    ended = []
    for number in numbers:
        try:
            m.hangup(number)
        except NotFoundError:
            continue
        ended.append(number)
    return {"hungup": ended}


def hangup_all(m: CallManager) -> dict[str, Any]:
    """Every call except ringing inbound ones (MicroSIP's ``/hangupall``)."""
    return _hangup_each(
        m,
        [
            c.call
            for c in m.calls()
            if c.state != CallStateName.DISCONNECTED
            and not (c.direction == CallDirection.IN and c.state in RINGING)
        ],
    )


def hangup_incoming(m: CallManager) -> dict[str, Any]:
    return _hangup_each(
        m, [c.call for c in m.calls() if c.direction == CallDirection.IN and c.state in RINGING]
    )


def hangup_calling(m: CallManager) -> dict[str, Any]:
    return _hangup_each(
        m,
        [
            c.call
            for c in m.calls()
            if c.direction == CallDirection.OUT and c.state in UNANSWERED_OUT
        ],
    )


def dial(m: CallManager, action: g.Dial) -> dict[str, Any]:
    """dialingPrefix and dialPlan of the account, then dial (deferred until registered)."""
    index = m.default_account()
    acc = m.account_config(index)
    number = format_number(
        action.target,
        dialing_prefix=acc.dialing_prefix,
        dial_plan=acc.dial_plan,
        is_local=index == 0 or "@" in action.target or action.target.startswith("sip"),
    )
    if number is None:
        raise EngineError(
            f"{action.target!r} does not match the dial plan of [Account{index}]",
            code="dialplan_mismatch",
        )
    call = m.dial_when_registered(number, index, action.post_dial)
    if call is None:
        return {"deferred": True, "target": number, "account": index}
    return {"call": call.call, "remote_uri": call.remote_uri}


def _switch(m: CallManager, action: g.SwitchAccount) -> dict[str, Any]:
    snap = m.switch_account(action.index)
    return {"account": action.index, "uri": snap.uri if snap else ""}


def _unsupported(what: str) -> Callable[[CallManager, Any], Any]:
    def run(_m: CallManager, _a: Any) -> Any:
        raise EngineError(f"{what} is not supported yet", code="not_supported")

    return run


_HANDLERS: dict[type[g.Action], Callable[[CallManager, Any], Any]] = {
    g.Answer: lambda m, a: {"call": m.answer().call},
    g.HangupAll: lambda m, a: hangup_all(m),
    g.HangupIncoming: lambda m, a: hangup_incoming(m),
    g.HangupCalling: lambda m, a: hangup_calling(m),
    g.Hold: lambda m, a: {"held": m.hold()},
    g.Transfer: lambda m, a: m.transfer(a.target),
    g.Dtmf: lambda m, a: {"method": m.send_dtmf(a.digits)},
    g.Dial: dial,
    g.SendMessage: lambda m, a: m.send_message(a.target, a.text),
    g.SwitchAccount: _switch,
    g.SavePassword: lambda m, a: m.save_password(a.index, a.password),
    g.PasswordOverride: lambda m, a: m.override_password(a.password),
    g.Exit: lambda m, a: m.request_exit(),
    g.Minimize: lambda m, a: None,
    g.Minimized: lambda m, a: None,
    g.Noop: lambda m, a: None,
    g.Reset: _unsupported("/reset (deleting the settings)"),
    g.MicMute: lambda m, a: m.audio_levels(mic_muted=True),
    g.MicUnmute: lambda m, a: m.audio_levels(mic_muted=False),
    g.MicMuteToggle: lambda m, a: m.toggle_mute("mic"),
    g.SpeakMute: lambda m, a: m.audio_levels(speaker_muted=True),
    g.SpeakUnmute: lambda m, a: m.audio_levels(speaker_muted=False),
    g.SpeakMuteToggle: lambda m, a: m.toggle_mute("speaker"),
    g.Volume: lambda m, a: m.volume_step(a.device, a.step),
}


def execute(m: CallManager, actions: tuple[g.Action, ...]) -> list[dict[str, Any]]:
    """Run ``actions`` in order; the first failure stops the rest (as MicroSIP drops
    the rest of a command line after ``/account:N`` names a missing account)."""
    results: list[dict[str, Any]] = []
    for action in actions:
        handler = _HANDLERS.get(type(action))
        if handler is None:  # a new grammar action without an executor is a bug here
            raise NotFoundError(f"no executor for action {action.name!r}")
        log.info("microsip_action", **action.to_dict())
        result = handler(m, action)
        results.append({"action": action.name, "result": result})
    return results


def run_command_line(m: CallManager, line: str) -> list[dict[str, Any]]:
    """Parse and run one MicroSIP command line (program name excluded)."""
    return execute(m, g.parse_command_line(line))
