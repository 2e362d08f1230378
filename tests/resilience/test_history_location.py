"""Issue 10, item 5: ``microsip-engine history`` reads the database the running
engine writes (here an ``[Engine] historyPath`` the command's own configuration
does not name), and says so when no engine answers and it falls back."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from enginekit import BASE_INI, ServeProcess
from peers.process import wait_until
from peers.sipp import SippFactory

pytestmark = pytest.mark.peers


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    db = tmp_path / "elsewhere" / "engine-history.sqlite3"
    proc = ServeProcess(tmp_path, BASE_INI + f"[Engine]\nhistoryPath={db}\n")
    try:
        yield proc
    finally:
        proc.stop()


def history_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", "history", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_history_reads_the_running_engines_database(
    serve: ServeProcess, sipp_factory: SippFactory, tmp_path: Path
) -> None:
    sipp = sipp_factory.uas("uas_answer", bye_timeout_ms=10000)
    with serve.client() as client:
        call = client.request("dial", target=sipp.uri("pbx"))
        client.request("hangup", call=call["call"])
        assert client.request("status")["history"] == str(
            tmp_path / "elsewhere" / "engine-history.sqlite3"
        )

    def rows() -> list[dict[str, object]] | None:
        done = history_cli(serve.env)  # no --db, no --config: the engine's own database
        assert done.returncode == 0, done.stderr
        assert "no engine answers" not in done.stderr
        return json.loads(done.stdout) or None

    # The row is written as the call ends, on the engine's SIP thread.
    got = wait_until(rows, 10, "the call's history row", interval=0.2)
    assert [r["callId"] for r in got] == [call["sip_call_id"]], got


def test_history_without_an_engine_says_where_it_reads(serve: ServeProcess) -> None:
    env = dict(serve.env, MICROSIP_CONTROL=str(serve.tmp / "nobody" / "control.sock"))
    done = history_cli(env)
    assert done.returncode == 0, done.stderr
    assert "no engine answers" in done.stderr and "history.sqlite3" in done.stderr, done.stderr
