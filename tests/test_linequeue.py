"""The queue of WM_COPYDATA ``dwData=2`` command lines: in order, failures logged
and never raised, a lifetime that ends with close()."""

from __future__ import annotations

import threading

import pytest
import structlog
from peers.process import wait_until

from engine.errors import EngineError
from engine.linequeue import LineQueue

STEP = 5.0


def test_the_line_queue_runs_in_order_logs_failures_and_drops_the_rest_on_close() -> None:
    ran: list[str] = []
    started, release = threading.Event(), threading.Event()

    def run(line: str) -> None:
        if line == "block":
            started.set()
            assert release.wait(STEP)
        if line == "fail":
            raise EngineError("no such call", code="not_found")
        ran.append(line)

    lines = LineQueue(run)
    assert not lines.alive  # no thread until the first line
    with structlog.testing.capture_logs() as logs:
        for line in ("a", "fail", "b"):
            lines.put(line)
        wait_until(lambda: ran == ["a", "b"], STEP, "the first lines to run in order")
        lines.put("block")
        assert started.wait(STEP)
        lines.put("dropped")
        closer = threading.Thread(target=lines.close)
        closer.start()  # waits for "block" to finish
        wait_until(lambda: lines.closed, STEP, "close to begin")
        release.set()
        closer.join(STEP)
    assert not closer.is_alive() and not lines.alive
    assert ran == ["a", "b", "block"]
    events = [(e["event"], e.get("code"), e.get("count")) for e in logs]
    assert ("queued_command_failed", "not_found", None) in events
    assert ("queued_commands_dropped", None, 1) in events
    with pytest.raises(EngineError) as info:
        lines.put("late")
    assert info.value.code == "stopped"


def test_closing_an_unused_queue_starts_no_thread_and_refuses_lines() -> None:
    lines = LineQueue(lambda line: None)
    lines.close()
    assert lines.closed and not lines.alive
    with pytest.raises(EngineError, match="no more queued command lines"):
        lines.put("/hangupall")
