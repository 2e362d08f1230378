"""The engine's assembly (``engine/assembly.py``): parts start and stop in one known
order, a stop request ends the wait at once, and ``status`` is one SIP-thread trip."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from enginekit import BASE_INI, EventLog, ServeProcess, write_ini

from engine.assembly import Channels, Engine, Lifecycle, Part, Shutdown
from engine.config import load_config
from engine.control import ControlClient
from engine.errors import EngineError
from engine.manager import CallManager


class Recorder:
    """Parts that write ``start <name>`` / ``stop <name> (<reason>)`` into one list."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def part(self, name: str, *, fail: bool = False, closes_last: bool = False) -> Part:
        def start() -> None:
            if fail:
                raise EngineError(f"{name} cannot start")
            self.log.append(f"start {name}")

        def stop(reason: str) -> None:
            self.log.append(f"stop {name} ({reason})")

        return Part(name, start, stop, closes_last=closes_last)


def test_parts_stop_in_reverse_with_the_channels_last() -> None:
    rec = Recorder()
    life = Lifecycle(
        [
            rec.part("history"),
            rec.part("manager"),
            rec.part("commands"),
            rec.part("control", closes_last=True),
            rec.part("tcp", closes_last=True),
        ]
    )
    life.start()
    life.stop("signal")
    life.stop("again")  # a second stop does nothing
    assert rec.log == [
        "start history",
        "start manager",
        "start commands",
        "start control",
        "start tcp",
        "stop commands (signal)",
        "stop manager (signal)",
        "stop history (signal)",
        "stop tcp (signal)",
        "stop control (signal)",
    ]


def test_a_part_failing_to_start_stops_those_started_and_raises() -> None:
    rec = Recorder()
    life = Lifecycle(
        [rec.part("history"), rec.part("manager"), rec.part("commands", fail=True), rec.part("x")]
    )
    with pytest.raises(EngineError, match="commands cannot start"):
        life.start()
    assert rec.log == [
        "start history",
        "start manager",
        "stop manager (start failed)",
        "stop history (start failed)",
    ]
    life.stop("later")  # nothing left to stop
    assert len(rec.log) == 4


def test_a_part_failing_to_stop_does_not_keep_the_others_running() -> None:
    rec = Recorder()

    def broken(_reason: str) -> None:
        raise RuntimeError("boom")

    life = Lifecycle([rec.part("history"), Part("broken", stop=broken), rec.part("commands")])
    life.start()
    life.stop("stop")
    assert rec.log == [
        "start history",
        "start commands",
        "stop commands (stop)",
        "stop history (stop)",
    ]


def test_shutdown_wakes_the_waiter_at_once_and_keeps_the_first_reason() -> None:
    shutdown = Shutdown()
    try:
        assert shutdown.wait(0) is None
        shutdown.nudge()
        assert shutdown.wait(5) is None  # woken, not asked to stop
        timer = threading.Timer(0.05, shutdown.request, ["exit command"])
        timer.start()
        began = time.monotonic()
        assert shutdown.wait(30) == "exit command"
        assert time.monotonic() - began < 2
        shutdown.request("signal")
        assert shutdown.wait(0) == "exit command"
    finally:
        shutdown.close()
    shutdown.request("after close")  # ignored, no write to a reused descriptor


def test_a_signal_handler_wakes_the_waiter() -> None:
    """What ``serve`` does: the handler writes to a pipe, the main thread's select
    returns (PEP 475 would otherwise resume it after the handler)."""
    shutdown = Shutdown()
    previous = signal.signal(signal.SIGUSR1, lambda *_: shutdown.request("signal"))
    try:
        threading.Timer(0.05, os.kill, [os.getpid(), signal.SIGUSR1]).start()
        began = time.monotonic()
        assert shutdown.wait(30) == "signal"
        assert time.monotonic() - began < 2
    finally:
        signal.signal(signal.SIGUSR1, previous)
        shutdown.close()


# -- a real engine in this process -----------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    config = load_config(write_ini(tmp_path / "microsip.ini", BASE_INI))
    control = str(tmp_path / "ctl" / "control.sock")
    manager = CallManager(config, bind_address="127.0.0.1", sip_port=0, control=control)
    engine = Engine(manager, Channels(control, idle_timeout=60.0))
    try:
        yield engine
    finally:
        engine.stop()
        engine.shutdown.close()


def spy_on(target: Any, name: str, log: list[str], label: str) -> None:
    """Record ``label`` in ``log`` each time ``target.name`` is called."""
    original: Callable[..., Any] = getattr(target, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        log.append(label)
        return original(*args, **kwargs)

    setattr(target, name, spy)


def test_the_engine_stops_its_parts_in_order_and_the_exit_command_ends_the_wait(
    engine: Engine,
) -> None:
    order: list[str] = []
    m = engine.manager
    spy_on(m.history, "close", order, "history")
    spy_on(m.hooks, "close", order, "hooks")
    spy_on(m, "shut_down", order, "manager")
    events = EventLog()
    m.subscribe(events)
    engine.start()
    assert engine.registry is not None and engine.control is not None
    spy_on(engine.registry, "close", order, "commands")
    spy_on(engine.control, "close", order, "control")
    with ControlClient(engine.channels.control, timeout=10) as client:
        assert client.request("status")["capacity"]["calls"] == 0
        began = time.monotonic()
        client.request("exit")
        reason = engine.wait(every=60.0)  # no polling: the command wakes it
    assert reason == "exit command"
    assert time.monotonic() - began < 2
    engine.stop(reason)
    assert order == ["commands", "manager", "hooks", "history", "control"]
    assert events.of("engine_stopping", reason="exit command")
    assert not os.path.exists(engine.channels.control)  # the socket is gone


def test_a_channel_that_cannot_start_stops_the_engine(engine: Engine) -> None:
    """The control socket cannot be created (a path too long for AF_UNIX): the
    manager that already started is stopped ("start failed"), the error propagates."""
    events = EventLog()
    engine.manager.subscribe(events)
    engine.channels = Channels("/tmp/" + "x" * 120 + "/control.sock", idle_timeout=60.0)
    with pytest.raises(EngineError, match="too long"):
        engine.start()
    assert not engine.manager.running
    assert events.of("engine_stopping", reason="start failed")


def test_status_is_one_trip_to_the_sip_thread(engine: Engine) -> None:
    engine.start()
    stack = engine.manager._stack
    trips: list[Any] = []
    original = stack.run

    def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        trips.append(func)
        return original(func, *args, **kwargs)

    stack.run = counting  # type: ignore[method-assign]
    try:
        status = engine.manager.status()
    finally:
        stack.run = original  # type: ignore[method-assign]
    assert len(trips) == 1
    assert status["capacity"] == {"max_calls": status["limits"]["max_calls"], "calls": 0}
    assert status["sip"] and status["accounts"][0]["account"] == 0
    assert set(status["audio"]) == {"mic_muted", "speaker_muted", "mic_volume", "speaker_volume"}
    assert status["limits"]["tls_max"]


def test_serve_exits_at_once_on_the_exit_command(tmp_path: Path) -> None:
    """The service waits on its stop request, not in 0.2 s polls: ``exit`` to the
    socket closing is the engine's own shutdown time, and the log is unchanged."""
    with ServeProcess(tmp_path, BASE_INI) as proc:
        with proc.client() as client:
            client.request("exit")
        assert proc.proc.wait(10) == 0
        names = [e.get("event") for e in proc.log_entries()]
    assert names.index("ready") < names.index("stopping") < names.index("stopped")
    stopping = next(e for e in proc.log_entries() if e.get("event") == "stopping")
    assert stopping["reason"] == "exit command"


FAILING_WAIT = """\
import os, sys, time
from engine import assembly
from engine.cli.admin import main

FLAG = sys.argv.pop(1)

def wait(self, *args, **kwargs):  # the service's wait fails once the flag file exists
    while not os.path.exists(FLAG):
        time.sleep(0.02)
    raise RuntimeError("the wait failed")

assembly.Engine.wait = wait
sys.exit(main())
"""


def test_serve_stops_the_engine_when_its_wait_fails(tmp_path: Path) -> None:
    """Whatever goes wrong in the service's loop, the engine is still stopped (calls
    hung up, accounts un-REGISTERed, pjsua2 destroyed in order): the stream sees
    ``engine_stopping``, and the error is not swallowed."""
    script = tmp_path / "failing_wait.py"
    script.write_text(FAILING_WAIT)
    flag = tmp_path / "fail-now"
    with ServeProcess(tmp_path, BASE_INI, launcher=(str(script), str(flag))) as proc:
        events = proc.events  # subscribed before the failure
        flag.touch()
        stopping = events.wait_for("engine_stopping", timeout=10)
        assert stopping["reason"] == "error"
        assert proc.proc.wait(10) != 0
    assert "the wait failed" in proc.log_path.read_text()
