"""The one command table: every MicroSIP command-line action is a command of it,
and the queued WM_COPYDATA worker it owns stops when the table is closed.

Unit tests: the table is bound to an autospec of ``CallManager`` (no SIP stack).
The socket and command-line comparisons against a real engine are in
tests/test_command_channels.py.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import structlog
from peers.process import wait_until

from engine import grammar as g
from engine.actions import ROUTES, run_command_line
from engine.commands import CommandRegistry
from engine.commandset import build_registry
from engine.errors import EngineError
from engine.manager import CallManager

STEP = 5.0

#: Command lines that, together, parse into every action type of the grammar.
EVERY_ACTION = [
    "/answer",
    "/hangupall",
    "/hangupincoming",
    "/hangupcalling",
    "msip:hold",
    "/transfer:102",
    "/dtmf:12#",
    "/dtmf:12?",
    "101,45,,6",
    "101 hello there",
    "/account:2 101",
    "/account:2 /password:hunter2",
    "/password:hunter2",
    "/exit",
    "/minimized",
    "msip:minimize",
    "/reset",
    "/resetnoask",
    "msip:micmute",
    "msip:micunmute",
    "msip:micmuteclick",
    "msip:speakmute",
    "msip:speakunmute",
    "msip:speakmuteclick",
    "msip:micup",
    "msip:speakdown",
]


def grammar_action_types() -> set[type[g.Action]]:
    return {
        obj
        for obj in vars(g).values()
        if isinstance(obj, type) and issubclass(obj, g.Action) and obj is not g.Action
    }


@pytest.fixture
def manager() -> Any:
    m = mock.create_autospec(CallManager, instance=True)
    m.audio_levels.return_value = {"mic_muted": True}
    return m


@pytest.fixture
def registry(manager: Any) -> Iterator[CommandRegistry]:
    with build_registry(manager) as reg:
        yield reg


def test_every_grammar_action_has_a_row() -> None:
    """A new action in engine/grammar.py without a row in engine/actions.py fails here."""
    missing = {t.__name__ for t in grammar_action_types() - set(ROUTES)}
    assert not missing, f"grammar actions without a command: {sorted(missing)}"
    stale = {t.__name__ for t in set(ROUTES) - grammar_action_types()}
    assert not stale, f"rows for actions the grammar does not have: {sorted(stale)}"


def test_every_action_runs_a_registered_command_with_valid_params(
    registry: CommandRegistry,
) -> None:
    """Each action's row names a registered command, and the parameters it builds
    pass that command's validation (names and types)."""
    parsed = [action for line in EVERY_ACTION for action in g.parse_command_line(line)]
    assert {type(a) for a in parsed} == grammar_action_types(), "EVERY_ACTION misses one"
    for action in parsed:
        route = ROUTES[type(action)]
        assert route.command in registry.names(), (action.name, route.command)
        registry.validate(route.command, route.params(action))


def test_a_command_line_calls_the_manager_through_its_command(
    registry: CommandRegistry, manager: Any
) -> None:
    manager.volume_step.return_value = {"speaker_volume": 40}
    assert run_command_line(registry, "msip:speakdown") == [
        {"action": "volume", "result": {"speaker_volume": 40}}
    ]
    manager.volume_step.assert_called_once_with("speaker", -1)
    assert run_command_line(registry, "msip:micmute") == [
        {"action": "micmute", "result": {"mic_muted": True}}
    ]
    manager.audio_levels.assert_called_once_with(mic_muted=True)


@pytest.mark.usefixtures("unconfigured_structlog")
def test_passwords_reach_the_manager_but_no_log_or_result(
    registry: CommandRegistry, manager: Any
) -> None:
    manager.override_password.return_value = None  # as the real one
    with structlog.testing.capture_logs() as logs:
        saved = run_command_line(registry, "/account:2 /password:hunter2")
        override = registry.call("password_override", {"password": "hunter2"})
    manager.save_password.assert_called_once_with(2, "hunter2")
    manager.override_password.assert_called_once_with("hunter2")
    assert saved == [{"action": "savepassword", "result": None}] and override is None
    assert logs and "hunter2" not in repr(logs)


@pytest.mark.parametrize(
    ("command", "params", "message"),
    [
        ("toggle_mute", {"device": "mike"}, "device must be 'mic' or 'speaker'"),
        ("volume_step", {"device": "", "step": 1}, "device must be 'mic' or 'speaker'"),
        ("volume_step", {"device": "mic", "step": "up"}, "'step' must be int"),
        ("dial_number", {"target": "101", "post_dial": "1x"}, "not 'x'"),
        ("save_password", {"account": 1}, "missing required parameter 'password'"),
    ],
)
def test_bad_input_to_the_new_commands_is_refused_by_name(
    registry: CommandRegistry, command: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(EngineError, match=message) as info:
        registry.call(command, params)
    assert info.value.code == "bad_params"


def test_reset_is_refused_as_not_supported(registry: CommandRegistry) -> None:
    with pytest.raises(EngineError, match="not supported") as info:
        run_command_line(registry, "/resetnoask")
    assert info.value.code == "not_supported"


def queue_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "copydata-queue"}


def test_closing_the_table_stops_the_copydata_worker(manager: Any) -> None:
    before = queue_threads()
    registry = build_registry(manager)
    payload = base64.b64encode("msip:micmute".encode("utf-16-le") + b"\0\0").decode()
    reply = registry.call("copydata", {"dwData": 2, "payload_b64": payload})
    assert reply == {"queued": True, "actions": [{"action": "micmute"}]}
    wait_until(lambda: manager.audio_levels.called, STEP, "the queued line to run")
    [worker] = queue_threads() - before
    registry.close()
    assert not worker.is_alive()
    with pytest.raises(EngineError) as info:
        registry.call("copydata", {"dwData": 2, "payload_b64": payload})
    assert info.value.code == "stopped"
    registry.close()  # a second close does nothing
