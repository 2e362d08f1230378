"""Issue 10, items 4 and 6: faults a user must see at the default log level, in a
real ``microsip-engine serve`` process (JSON logs, no ``--log-level``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from enginekit import ServeProcess
from peers.kamailio import Kamailio

from .kit import registrar_ini

pytestmark = pytest.mark.peers


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[ServeProcess]]:
    procs: list[ServeProcess] = []
    try:
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def serve(started: list[ServeProcess], tmp_path: Path, ini: str) -> ServeProcess:
    started.append(ServeProcess(tmp_path, ini))
    return started[-1]


def is_event(name: str) -> Any:
    return lambda e: e.get("event") == name


def test_wrong_password_is_one_clear_warning_without_the_secret(
    kamailio: Kamailio, started: list[ServeProcess], tmp_path: Path
) -> None:
    """A 401/403 from the registrar is a warning-level ``registration failed 401 …``
    line naming the account and the registrar; the password is nowhere in the log."""
    proc = serve(started, tmp_path, registrar_ini(kamailio, password="Wr0ngSecret-xyz"))
    entry = proc.wait_log(is_event("registration_failed"), 15, "a registration_failed line")
    assert entry["level"] == "warning", entry
    assert entry["account"] == 1 and entry["code"] in (401, 403), entry
    assert entry["detail"].startswith(f"registration failed {entry['code']} "), entry
    assert "password" in entry["detail"]  # the hint: which key to check
    assert kamailio.address in entry["registrar"]
    assert "Wr0ngSecret-xyz" not in proc.log_path.read_text()


def test_account_without_domain_is_named_at_start_and_in_status(
    started: list[ServeProcess], tmp_path: Path
) -> None:
    """``[Account1]`` without ``domain``: MicroSIP skips it; the engine says which
    account and which key, in a start-up warning and in ``status``."""
    proc = serve(
        started,
        tmp_path,
        """[Settings]
accountId=1
[Account1]
server=127.0.0.1:5999
username=alice
password=x
""",
    )
    entry = proc.wait_log(
        lambda e: e.get("event") == "config_warning" and "[Account1]" in e.get("detail", ""),
        5,
        "a config_warning naming [Account1]",
    )
    assert entry["level"] == "warning"
    assert "domain" in entry["detail"]
    with proc.client() as client:
        warnings = client.request("status")["config_warnings"]
    assert any("[Account1]" in w and "'domain'" in w for w in warnings), warnings
    shown = subprocess.run(
        [sys.executable, "-m", "engine", "status"],
        env=proc.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    assert any(
        line.startswith("warning:") and "[Account1]" in line for line in shown.stdout.splitlines()
    ), shown.stdout
