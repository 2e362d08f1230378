"""A call's row exists from its start; a crash leaves it ``interrupted``, not lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from test_history import T0, incoming, state

from engine.events import CallStateName as S
from engine.history import INTERRUPTED_INFO, TYPE_IN, TYPE_OUT, CallHistory, read_history


def test_the_row_is_on_disk_from_the_start_and_completed_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    h = CallHistory(path)
    try:
        h.handle(incoming(1, T0))
        (row,) = read_history(path)  # another connection: committed, not just cached
        assert (row["status"], row["start_time"], row["answer_time"]) == ("open", T0, None)
        assert row["engine_pid"] == os.getpid() and row["end_time"] is None
        h.handle(state(1, "in", S.CONFIRMED, T0 + 3, 200, "OK"))
        (row,) = read_history(path)
        assert (row["status"], row["type"], row["answer_time"]) == ("open", TYPE_IN, T0 + 3)
        h.handle(state(1, "in", S.DISCONNECTED, T0 + 13, 200, "Normal call clearing", 10))
        (row,) = read_history(path)
        assert (row["status"], row["duration"], row["end_time"]) == ("ended", 10, T0 + 13)
        assert row["id"] == 1 and len(read_history(path)) == 1
    finally:
        h.close()
    assert not list(tmp_path.glob("history.sqlite3.open-*"))  # a clean stop leaves none


CRASHING_ENGINE = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from test_history import T0, incoming, state
    from engine.events import CallStateName as S
    from engine.history import CallHistory

    h = CallHistory(sys.argv[1])
    h.handle(incoming(1, T0))
    h.handle(state(1, "in", S.CONFIRMED, T0 + 2, 200, "OK"))
    h.handle(state(2, "out", S.CALLING, T0 + 5))
    print("in calls", flush=True)
    time.sleep(60)
    """
)


def test_calls_of_a_killed_engine_are_marked_interrupted_by_the_next(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    tests_dir = str(Path(__file__).parent)
    engine = subprocess.Popen(
        [sys.executable, "-c", CRASHING_ENGINE, str(path), tests_dir],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert engine.stdout is not None and engine.stdout.readline() == "in calls\n"
        # While it lives, another engine on the same database leaves its calls alone.
        assert CallHistory(path).recover_interrupted() == 0
        assert {r["status"] for r in read_history(path)} == {"open"}
    finally:
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
    restarted = CallHistory(path)  # recovery runs at construction
    try:
        rows = {r["callId"]: r for r in read_history(path)}
        answered, dialling = rows["in-1@pbx"], rows["out-2@pbx"]
        assert answered["status"] == dialling["status"] == "interrupted"
        assert (answered["start_time"], answered["answer_time"]) == (T0, T0 + 2)
        assert (answered["type"], dialling["type"]) == (TYPE_IN, TYPE_OUT)
        assert (dialling["start_time"], dialling["sip_reason"]) == (T0 + 5, "interrupted")
        assert answered["info"] == INTERRUPTED_INFO
        assert not list(tmp_path.glob("history.sqlite3.open-*"))
        assert restarted.recover_interrupted() == 0  # once only
    finally:
        restarted.close()
