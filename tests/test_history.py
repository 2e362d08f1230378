"""Call history: MicroSIP's ``call_log`` rows with integrator columns, the row limit,
WAL durability across ``kill -9``, a broken database, and one real SIPp call.

Events are fed in the order the engine emits them (``observe`` for every event,
``record_end`` for the disconnected one, as ``handle`` does).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from enginekit import BASE_INI, Engines, engines_fixture, sip_port
from peers.process import wait_until
from peers.sipp import SippFactory

from engine.cli import history as history_cli
from engine.config import EngineSettings
from engine.events import CallState, CallStateName, Event, IncomingCall
from engine.history import (
    TYPE_IN,
    TYPE_MISSED,
    TYPE_OUT,
    CallHistory,
    default_history_path,
    read_history,
)

S = CallStateName
T0 = 1_700_000_000.25


def incoming(call: int, t: float) -> IncomingCall:
    return IncomingCall(
        time=t,
        call=call,
        sip_call_id=f"in-{call}@pbx",
        account=1,
        remote_uri="sip:+15551234@pbx.example.com",
        remote_user="+15551234",
        display_name="Alice",
        to_uri="sip:100@pbx.example.com",
    )


def state(
    call: int,
    direction: str,
    st: CallStateName,
    t: float,
    code: int = 0,
    reason: str = "",
    duration: float = 0.0,
    uri: str = "sip:bob@other.example.org:5070;transport=tcp",
) -> CallState:
    inbound = direction == "in"
    return CallState(
        time=t,
        call=call,
        sip_call_id=f"{direction}-{call}@pbx",
        account=1,
        direction=direction,
        state=st,
        code=code,
        reason=reason,
        remote_uri="sip:+15551234@pbx.example.com" if inbound else uri,
        remote_user="+15551234" if inbound else uri.split(":")[1].split("@")[0],
        display_name="Alice" if inbound else "",
        duration=duration,
    )


def play(history: CallHistory, *events: Event) -> dict[str, Any]:
    """Feed the events; return the row the last (disconnected) one wrote."""
    for event in events:
        history.handle(event)
    return history.rows(1)[0]


@pytest.fixture
def history(tmp_path: Path) -> Iterator[CallHistory]:
    h = CallHistory(tmp_path / "data" / "history.sqlite3")
    yield h
    h.close()


def test_inbound_answered_call(history: CallHistory) -> None:
    row = play(
        history,
        incoming(1, T0),
        state(1, "in", S.EARLY, T0 + 0.01, 180, "Ringing"),
        state(1, "in", S.CONNECTING, T0 + 4.0, 200, "OK"),
        state(1, "in", S.CONFIRMED, T0 + 4.1, 200, "OK"),
        state(1, "in", S.DISCONNECTED, T0 + 64.6, 200, "Normal call clearing", 60.5),
    )
    assert row == {
        "id": 1,
        "callId": "in-1@pbx",
        "number": "+15551234",  # the user part, as MicroSIP; the URI is remote_uri
        "name": "Alice",
        "type": TYPE_IN,
        "time": int(T0),
        "duration": 60,
        "info": "",
        "direction": "in",
        "account": 1,
        "sip_code": 200,
        "sip_reason": "Normal call clearing",
        "remote_uri": "sip:+15551234@pbx.example.com",
        "start_time": T0,
        "answer_time": T0 + 4.1,
        "end_time": T0 + 64.6,
        "status": "ended",
        "engine_pid": os.getpid(),
    }


def test_inbound_missed_call(history: CallHistory) -> None:
    row = play(
        history,
        incoming(2, T0),
        state(2, "in", S.EARLY, T0 + 0.01, 180, "Ringing"),
        state(2, "in", S.DISCONNECTED, T0 + 20, 487, "Request Terminated"),
    )
    assert (row["type"], row["duration"], row["answer_time"]) == (TYPE_MISSED, 0, None)
    assert (row["sip_code"], row["info"]) == (487, "Request Terminated")
    assert (row["start_time"], row["end_time"]) == (T0, T0 + 20)


def test_inbound_busy_call(history: CallHistory) -> None:
    """Rejected with 486 (DND, busy): never answered, so MicroSIP's type 2."""
    row = play(
        history,
        incoming(3, T0),
        state(3, "in", S.DISCONNECTED, T0 + 0.002, 486, "Busy Here"),
    )
    assert (row["type"], row["sip_code"], row["sip_reason"], row["info"]) == (
        TYPE_MISSED,
        486,
        "Busy Here",
        "Busy Here",
    )


def test_outbound_answered_call(history: CallHistory) -> None:
    row = play(
        history,
        state(4, "out", S.CALLING, T0),
        state(4, "out", S.EARLY, T0 + 1, 180, "Ringing"),
        state(4, "out", S.CONFIRMED, T0 + 3, 200, "OK"),
        state(4, "out", S.DISCONNECTED, T0 + 13.5, 200, "OK", 10.5),
    )
    assert (row["type"], row["direction"], row["duration"]) == (TYPE_OUT, "out", 10)
    # Another domain than the account's: still the user part (issue 13, item 9).
    assert row["number"] == "bob"
    assert row["remote_uri"].startswith("sip:bob@other.example.org:5070")
    assert row["name"] == row["number"]  # no display name: MicroSIP shows the number
    assert (row["start_time"], row["answer_time"], row["end_time"]) == (T0, T0 + 3, T0 + 13.5)


@pytest.mark.parametrize(("code", "reason"), [(404, "Not Found"), (486, "Busy Here")])
def test_outbound_failed_call(history: CallHistory, code: int, reason: str) -> None:
    row = play(
        history,
        state(5, "out", S.CALLING, T0),
        state(5, "out", S.DISCONNECTED, T0 + 0.3, code, reason),
    )
    assert (row["type"], row["sip_code"], row["info"], row["answer_time"]) == (
        TYPE_OUT,
        code,
        reason,
        None,
    )


def test_one_row_per_call_even_if_told_twice(history: CallHistory) -> None:
    end = state(6, "out", S.DISCONNECTED, T0, 404, "Not Found")
    assert history.record_end(end) == 1
    assert history.record_end(end) is None
    history.handle(end)
    assert len(history.rows()) == 1


def test_row_limit_keeps_the_newest(tmp_path: Path) -> None:
    h = CallHistory(tmp_path / "h.sqlite3", max_rows=5)
    for n in range(1, 9):
        h.record_end(state(n, "out", S.DISCONNECTED, T0 + n, 404, "Not Found"))
    assert [r["callId"] for r in h.rows()] == [f"out-{n}@pbx" for n in range(8, 3, -1)]
    h.close()


def test_wal_mode_private_files_and_fast_commits(tmp_path: Path) -> None:
    """The database is in WAL mode (persistent: another connection sees it), in a
    0700 directory, readable by its owner only, and a committed row costs well under
    a millisecond (median of 300)."""
    path = tmp_path / "new" / "dir" / "history.sqlite3"
    h = CallHistory(path)
    assert h.journal_mode == "wal"
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()
    assert (path.parent.stat().st_mode & 0o777, path.parent.parent.stat().st_mode & 0o777) == (
        0o700,
        0o700,
    )
    assert path.stat().st_mode & 0o777 == 0o600
    timings = []
    for n in range(1, 301):
        end = state(n, "out", S.DISCONNECTED, T0, 200, "OK", 1.0)
        began = time.perf_counter()
        assert h.record_end(end) is not None
        timings.append(time.perf_counter() - began)
    median = statistics.median(timings)
    assert median < 0.001, f"median commit {median * 1e6:.0f} µs"
    h.close()


KILLED_WRITER = """
import sys, time
from engine.events import CallState, CallStateName
from engine.history import CallHistory
h = CallHistory(sys.argv[1])
h.record_end(CallState(call=1, sip_call_id="killed@pbx", account=0, direction="in",
    state=CallStateName.DISCONNECTED, code=200, reason="OK", remote_uri="sip:a@b",
    remote_user="a", duration=5.0))
print("done", flush=True)
time.sleep(60)
"""


def test_row_survives_kill_9_right_after_record_end(tmp_path: Path) -> None:
    """A process records a row, says "done", and is SIGKILLed: the row is there
    (still in the WAL file, nothing checkpointed) when the database is reopened."""
    path = tmp_path / "history.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until "done" (or the child dies)
        assert line.strip() == "done"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    wal = Path(f"{path}-wal")
    assert wal.exists() and wal.stat().st_size > 0
    (row,) = read_history(path)
    assert (row["callId"], row["type"], row["duration"]) == ("killed@pbx", TYPE_IN, 5)


def test_corrupt_database_is_logged_and_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"this is not a database, " * 200)
    with structlog.testing.capture_logs() as logs:
        h = CallHistory(path)
        h.observe(incoming(1, T0))
        assert h.record_end(state(1, "in", S.DISCONNECTED, T0 + 1, 487, "x")) is None
        assert h.rows() == []
        h.close()
    events = [(e["event"], e["log_level"]) for e in logs]
    assert ("history_open_failed", "error") in events
    assert ("history_write_failed", "error") in events


def test_locked_database_is_logged_and_the_caller_goes_on(tmp_path: Path) -> None:
    """Another writer holds the lock: record_end gives up after its short busy
    timeout, logs, and returns; the next call writes normally."""
    path = tmp_path / "history.sqlite3"
    h = CallHistory(path, busy_timeout=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with structlog.testing.capture_logs() as logs:
        began = time.monotonic()
        assert h.record_end(state(1, "out", S.DISCONNECTED, T0, 404, "Not Found")) is None
        assert time.monotonic() - began < 1.0
    assert any(e["event"] == "history_write_failed" for e in logs)
    blocker.execute("ROLLBACK")
    blocker.close()
    assert h.record_end(state(2, "out", S.DISCONNECTED, T0, 404, "Not Found")) is not None
    h.close()


def test_default_path_follows_the_configuration(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": "relative/ignored"}
    assert default_history_path(None, env) == (
        tmp_path / "home" / ".local" / "share" / "microsip-engine" / "history.sqlite3"
    )
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    assert default_history_path(EngineSettings(), env) == (
        tmp_path / "xdg" / "microsip-engine" / "history.sqlite3"
    )
    assert default_history_path(EngineSettings(data_dir=str(tmp_path / "d")), env) == (
        tmp_path / "d" / "history.sqlite3"
    )
    assert default_history_path(
        EngineSettings(data_dir="x", history_path=str(tmp_path / "h.db")), env
    ) == (tmp_path / "h.db")


def test_microsip_database_gains_the_integrator_columns(tmp_path: Path) -> None:
    """A MicroSIP 3.22 call_log (8 columns, one row) is extended, not replaced."""
    path = tmp_path / "microsip.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE call_log (id INTEGER PRIMARY KEY AUTOINCREMENT, callId TEXT NOT NULL, "
            "number TEXT NOT NULL, name TEXT NOT NULL, type INTEGER, time INTEGER, "
            "duration INTEGER, info TEXT NOT NULL)"
        )
        db.execute("INSERT INTO call_log VALUES (1, 'old', '100', 'Old', 1, 1600000000, 9, '')")
    db.close()
    h = CallHistory(path)
    h.record_end(state(1, "out", S.DISCONNECTED, T0, 404, "Not Found"))
    rows = h.rows()
    assert [r["callId"] for r in rows] == ["out-1@pbx", "old"]
    assert rows[1]["sip_code"] == 0 and rows[1]["start_time"] is None
    h.close()


def test_cli_prints_json_and_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``microsip-engine history`` reads the file directly (no engine running)."""
    import argparse

    path = tmp_path / "h.sqlite3"
    h = CallHistory(path)
    play(
        h,
        incoming(1, T0),
        state(1, "in", S.CONFIRMED, T0 + 1, 200, "OK"),
        state(1, "in", S.DISCONNECTED, T0 + 75, 200, "OK", 74),
    )
    h.record_end(state(2, "out", S.DISCONNECTED, T0 + 80, 486, "Busy Here"))
    h.close()
    parser = argparse.ArgumentParser()
    history_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["history", "--json", "--limit", "1", "--db", str(path)])
    assert args.func(args) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["callId"], row["sip_code"]) == ("out-2@pbx", 486)
    args = parser.parse_args(["history", "--db", str(path)])
    assert history_cli.run(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TIME", "TYPE", "NUMBER", "NAME", "DURATION", "SIP"]
    assert "out" in lines[1] and "486 Busy Here" in lines[1]
    assert "in" in lines[2].split() and "0:01:14" in lines[2] and "200 OK" in lines[2]
    args = parser.parse_args(["history", "--db", str(tmp_path / "none.sqlite3"), "--json"])
    assert history_cli.run(args) == 0 and json.loads(capsys.readouterr().out) == []
    assert not (tmp_path / "none.sqlite3").exists()


def test_cli_uses_the_configured_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = tmp_path / "microsip.ini"
    ini.write_text(f"[Settings]\n[Engine]\ndataDir={tmp_path / 'data'}\n")
    monkeypatch.setenv("MICROSIP_INI", str(ini))
    monkeypatch.setenv("MICROSIP_CONTROL", str(tmp_path / "no-engine.sock"))  # none answers
    h = CallHistory(tmp_path / "data" / "history.sqlite3")
    h.record_end(state(1, "out", S.DISCONNECTED, T0, 404, "Not Found"))
    h.close()
    import argparse

    assert history_cli.run(argparse.Namespace(json=True, limit=10, db=None, config=None)) == 0
    assert [r["callId"] for r in json.loads(capsys.readouterr().out)] == ["out-1@pbx"]


# -- a real call --------------------------------------------------------------------------


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


@pytest.mark.peers
def test_real_sipp_call_is_recorded(
    engines: Engines, sipp_factory: SippFactory, tmp_path: Path
) -> None:
    """SIPp calls the engine, we answer, SIPp hangs up: the engine's own history has one
    answered inbound row with SIPp's Call-ID, user, display name and consistent times,
    committed before the disconnected event was published."""
    db = tmp_path / "history.sqlite3"
    manager, events = engines.start(BASE_INI + f"[Engine]\nhistoryPath={db}\n")
    rows_when_ended: list[list[dict[str, Any]]] = []

    def look(event: Event) -> None:
        if isinstance(event, CallState) and event.state is S.DISCONNECTED:
            rows_when_ended.append(read_history(db, 10))

    manager.subscribe(look)
    port = sip_port(manager)
    sipp = sipp_factory.uac(f"sip:100@127.0.0.1:{port}", "uac_send_bye", hold_ms=1200)
    call = events.wait_for("incoming_call")
    events.wait_for("call_state", call=call["call"], state="early")
    manager.answer(call["call"])
    ended = events.wait_for("call_state", call=call["call"], state="disconnected")
    assert sipp.wait(15).successful == 1
    # The subscriber runs on its own thread.
    wait_until(lambda: rows_when_ended or None, 5, "the subscriber to see the call end")
    assert len(rows_when_ended[0]) == 1  # already there when published
    (row,) = read_history(db, 10)
    assert row["callId"] == call["sip_call_id"]
    assert (row["type"], row["direction"], row["account"]) == (TYPE_IN, "in", 0)
    assert call["remote_uri"] == "sip:sipp@127.0.0.1"  # SIPp's From
    assert (row["number"], row["name"]) == ("sipp", "SIPp")
    assert row["remote_uri"] == call["remote_uri"]
    assert row["sip_code"] == ended["code"] and row["sip_reason"] == ended["reason"]
    assert row["start_time"] < row["answer_time"] < row["end_time"]
    assert 1.0 < row["end_time"] - row["answer_time"] < 5.0
    assert row["duration"] == int(ended["duration"]) >= 1
    assert row["time"] == int(row["start_time"])


@pytest.mark.peers
def test_kill_9_right_after_a_call_ended_loses_no_row(
    tmp_path: Path, sipp_factory: SippFactory
) -> None:
    """The engine process is killed the moment its event stream says the call ended."""
    from enginekit import ServeProcess

    db = tmp_path / "kill9.sqlite3"
    ini = BASE_INI.replace("[Settings]\n", "[Settings]\nautoAnswer=all\n")
    proc = ServeProcess(tmp_path, ini + f"[Engine]\nhistoryPath={db}\n")
    try:
        with proc.client().events(["call_state"], idle_timeout=10) as stream:
            sipp = sipp_factory.uac(
                f"sip:100@127.0.0.1:{proc.sip_port()}", "uac_send_bye", hold_ms=300
            )
            for event in stream:
                if event["state"] == "disconnected":
                    proc.proc.send_signal(signal.SIGKILL)
                    break
        assert proc.proc.wait(5) == -signal.SIGKILL
        sipp.wait(15)
    finally:
        proc.stop()
    rows = read_history(db, 10)
    assert len(rows) == 1 and rows[0]["sip_code"] == 200, rows
