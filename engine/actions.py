"""Carry out MicroSIP command-line actions (:mod:`engine.grammar`) as engine commands.

This is what MicroSIP's ``DialNumberFromCommandLine`` does after parsing. Each
action type is one row of :data:`ROUTES`: the command of the one table
(:mod:`engine.commandset`) that does it and the parameters the action gives it, so
a command line runs the very commands the control socket, TCP control and
WM_COPYDATA run. Used by the ``commandline`` and ``copydata`` commands, and so by
the ``microsip`` CLI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from . import grammar as g
from .errors import NotFoundError

if TYPE_CHECKING:
    from .commands import CommandRegistry

log = structlog.get_logger("engine.actions")


def _no_params(_action: Any) -> dict[str, Any]:
    return {}


@dataclasses.dataclass(frozen=True)
class Route:
    """The command an action runs: ``params`` builds its parameters from the action,
    ``result`` (when set) shapes the command's result into the action's."""

    command: str
    params: Callable[[Any], dict[str, Any]] = _no_params
    result: Callable[[Any], Any] | None = None


def _fixed(**params: Any) -> Callable[[Any], dict[str, Any]]:
    """Parameters that do not depend on the action (``msip:micmute``: mute)."""
    return lambda _action: dict(params)


#: Every grammar action, onto one command (tests/test_command_table.py checks that
#: no action type is missing).
ROUTES: dict[type[g.Action], Route] = {
    g.Answer: Route("answer", result=lambda call: {"call": call["call"]}),
    g.HangupAll: Route("hangup_all"),
    g.HangupIncoming: Route("hangup_incoming"),
    g.HangupCalling: Route("hangup_calling"),
    g.Hold: Route("hold"),
    g.Transfer: Route("transfer", lambda a: {"target": a.target}),
    g.Dtmf: Route("dtmf", lambda a: {"digits": a.digits}),
    g.Dial: Route(
        "dial_number", lambda a: {"target": a.target, "post_dial": ",".join(a.post_dial)}
    ),
    g.SendMessage: Route("message", lambda a: {"target": a.target, "text": a.text}),
    g.SwitchAccount: Route("switch_account", lambda a: {"account": a.index}),
    g.SavePassword: Route("save_password", lambda a: {"account": a.index, "password": a.password}),
    g.PasswordOverride: Route("password_override", lambda a: {"password": a.password}),
    g.Exit: Route("exit"),
    g.Minimize: Route("noop"),
    g.Minimized: Route("noop"),
    g.Noop: Route("noop"),
    g.Reset: Route("reset"),
    g.MicMute: Route("audio", _fixed(mic_muted=True)),
    g.MicUnmute: Route("audio", _fixed(mic_muted=False)),
    g.MicMuteToggle: Route("toggle_mute", _fixed(device="mic")),
    g.SpeakMute: Route("audio", _fixed(speaker_muted=True)),
    g.SpeakUnmute: Route("audio", _fixed(speaker_muted=False)),
    g.SpeakMuteToggle: Route("toggle_mute", _fixed(device="speaker")),
    g.Volume: Route("volume_step", lambda a: {"device": a.device, "step": a.step}),
}


def run_action(commands: CommandRegistry, action: g.Action) -> Any:
    """Run one action as its command; returns the action's result."""
    route = ROUTES.get(type(action))
    if route is None:  # a new grammar action without a row is a bug here
        raise NotFoundError(f"no command for action {action.name!r}")
    result = commands.call(route.command, route.params(action))
    return result if route.result is None else route.result(result)


def execute(commands: CommandRegistry, actions: tuple[g.Action, ...]) -> list[dict[str, Any]]:
    """Run ``actions`` in order; the first failure stops the rest (as MicroSIP drops
    the rest of a command line after ``/account:N`` names a missing account)."""
    results: list[dict[str, Any]] = []
    for action in actions:
        log.info("microsip_action", **action.to_dict())  # passwords masked
        results.append({"action": action.name, "result": run_action(commands, action)})
    return results


def run_command_line(commands: CommandRegistry, line: str) -> list[dict[str, Any]]:
    """Parse and run one MicroSIP command line (program name excluded)."""
    return execute(commands, g.parse_command_line(line))
