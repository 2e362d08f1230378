"""Back by itself: ``serve --supervise``, systemd's notify protocol and its watchdog.

The engine is killed for real (SIGKILL, SIGABRT) in the middle of a call while
registered at Kamailio; the supervisor must bring it back on the same control
socket, registered again, with the interrupted call in the history. The
watchdog is checked where it matters: a SIP thread that cannot answer a no-op
command must stop the pings.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from enginekit import BASE_INI, Engines, ServeProcess, engines_fixture
from peers import Kamailio, SippFactory, require

from engine.control import ControlClient, ControlError
from engine.history import read_history
from engine.sdnotify import Watchdog, sd_notify
from engine.supervisor import Supervisor

from .kit import registrar_ini

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "scripts" / "systemd" / "microsip-engine.service"


class NotifySocket:
    """What systemd listens on: a Unix datagram socket; messages kept with their time."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []

    def wait(self, line: str, timeout: float, after: float = 0.0) -> float:
        """The time ``line`` arrived (after ``after``), waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            for at, message in self.messages:
                if at >= after and line in message.splitlines():
                    return at
            if time.monotonic() > deadline:
                raise AssertionError(f"no {line} in {timeout} s; got {self.messages}")
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def count(self, line: str, start: float, end: float) -> int:
        return sum(1 for at, m in self.messages if start <= at <= end and line in m.splitlines())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def test_sd_notify_reaches_a_path_and_an_abstract_socket(notify: NotifySocket) -> None:
    assert sd_notify("READY=1", {"NOTIFY_SOCKET": notify.path})
    notify.wait("READY=1", 2)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"microsip-engine-test-{os.getpid()}"
    abstract.bind("\0" + name)
    abstract.settimeout(2)
    try:
        assert sd_notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert abstract.recv(100) == b"STOPPING=1"
    finally:
        abstract.close()
    assert not sd_notify("READY=1", {})  # outside systemd: nothing, no error


def test_serve_says_ready_pings_the_watchdog_and_says_stopping(
    tmp_path: Path, notify: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine as systemd's Type=notify service with WatchdogSec=0.6."""
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    monkeypatch.setenv("WATCHDOG_USEC", "600000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    engine = ServeProcess(tmp_path, BASE_INI)
    try:
        ready = notify.wait("READY=1", 10)
        first = notify.wait("WATCHDOG=1", 5, after=ready)
        notify.wait("WATCHDOG=1", 5, after=first + 0.01)
        engine.proc.send_signal(signal.SIGTERM)
        notify.wait("STOPPING=1", 10)
    finally:
        code = engine.stop()
    assert code == 0


def test_a_stuck_sip_thread_stops_the_watchdog_pings(
    engines: Engines, notify: NotifySocket
) -> None:
    """Pings prove the SIP thread answers: while it is stuck, none may be sent."""
    manager, _ = engines.start()
    watchdog = Watchdog(manager.sip_thread_alive, 0.2, {"NOTIFY_SOCKET": notify.path}).start()
    try:
        notify.wait("WATCHDOG=1", 5)
        stuck_at = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            blocker = threading.Thread(target=manager._run, args=(time.sleep, 2.0))
            blocker.start()
            blocker.join(10)
        freed_at = time.monotonic()
        # A round trip that began before the block may still land in its first 0.4 s.
        assert notify.count("WATCHDOG=1", stuck_at + 0.4, freed_at) == 0, notify.messages
        assert any(e["event"] == "watchdog_sip_thread_unresponsive" for e in logs), logs
        notify.wait("WATCHDOG=1", 5, after=freed_at)  # and they come back
    finally:
        watchdog.stop()


def test_the_systemd_unit_is_valid_and_asks_for_notify_restart_and_watchdog() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "Restart=on-failure", "WatchdogSec=30", "NotifyAccess=main"):
        assert f"\n{line}\n" in text, line
    # systemd's own parser: it exits 0 on an unknown value, but says so on stderr.
    analyze = subprocess.run(
        [require("systemd-analyze"), "verify", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (analyze.returncode, analyze.stderr) == (0, ""), analyze.stderr


def _exits(code: int) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.exit({code})"]


def test_the_supervisor_gives_up_after_quick_crashes_and_says_why() -> None:
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        code = Supervisor(_exits(3), watchdog=0, max_quick=3).run()
        took = time.monotonic() - started
    assert code == 1
    crashes = [e for e in logs if e["event"] == "engine_crashed"]
    assert [e["restart_in"] for e in crashes] == [0.5, 1.0]  # backoff
    (gave_up,) = [e for e in logs if e["event"] == "supervisor_gave_up"]
    assert "crashed 3 times in a row" in gave_up["reason"] and "exit 3" in gave_up["reason"]
    assert took < 20


def test_under_systemd_the_child_pings_as_often_as_systemd_asks(notify: NotifySocket) -> None:
    """The child's pings are relayed upstream: its watchdog follows WatchdogSec."""
    systemd = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "4000000"}
    assert Supervisor(_exits(0), watchdog=30, env=systemd).watchdog == 4.0
    assert Supervisor(_exits(0), watchdog=0, env=systemd).watchdog == 4.0
    assert Supervisor(_exits(0), watchdog=2, env=systemd).watchdog == 2.0
    assert Supervisor(_exits(0), watchdog=30, env={}).watchdog == 30.0


def test_a_configuration_error_is_not_restarted() -> None:
    with structlog.testing.capture_logs() as logs:
        assert Supervisor(_exits(2), watchdog=0).run() == 2
    assert not [e for e in logs if e["event"] == "engine_crashed"]
    assert any("configuration" in e.get("reason", "") for e in logs)


# -- the real thing: killed mid-call while registered ----------------------------


def supervised(tmp: Path, ini: str, *extra: str) -> ServeProcess:
    """``serve --supervise`` (ServeProcess waits for the child's ready line)."""
    return ServeProcess(tmp, ini, "--supervise", *extra)


def engine_ready(engine: ServeProcess, restarts: int, timeout: float) -> dict[str, Any]:
    return engine.wait_log(
        lambda e: e.get("event") == "engine_ready" and e.get("restarts") == restarts,
        timeout,
        f"engine_ready after {restarts} restarts",
    )


def logged(engine: ServeProcess, event: str, timeout: float) -> dict[str, Any]:
    return engine.wait_log(lambda e: e.get("event") == event, timeout, event)


def _kamailio_ini(kamailio: Kamailio, history: Path) -> str:
    return registrar_ini(kamailio) + f"[Engine]\nhistoryPath={history}\n"


def _status_when_registered(control: str, deadline: float) -> dict[str, Any]:
    """Poll ``status`` until account 1 is registered; the time it took is checked."""
    last: Any = None
    while time.monotonic() < deadline:
        try:
            client = ControlClient(control, timeout=2)
            try:
                last = client.request("status")
            finally:
                client.close()
            if [a for a in last["accounts"] if a["state"] == "registered"]:
                return dict(last)
        except ControlError as exc:
            last = exc.message
        time.sleep(0.02)
    raise AssertionError(f"not back and registered in time: {last}")


@pytest.mark.peers
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGABRT], ids=["SIGKILL", "SIGABRT"])
def test_killed_mid_call_it_is_back_registered_with_the_call_interrupted(
    sig: signal.Signals, tmp_path: Path, kamailio: Kamailio, sipp_factory: SippFactory
) -> None:
    history = tmp_path / "history.sqlite3"
    engine = supervised(tmp_path, _kamailio_ini(kamailio, history))
    try:
        first = engine_ready(engine, 0, 20)
        _status_when_registered(engine.control, time.monotonic() + 10)
        uas = sipp_factory.uas("uas_answer", bye_timeout_ms=60000, timeout_s=90)
        client = ControlClient(engine.control, timeout=10)
        try:
            call = client.request("dial", target=uas.uri("far"))
            deadline = time.monotonic() + 10
            while client.request("status")["calls"][0]["state"] != "confirmed":
                assert time.monotonic() < deadline, "the call was not answered"
                time.sleep(0.02)
        finally:
            client.close()
        (open_row,) = read_history(history)
        assert open_row["status"] == "open"

        killed_at = time.monotonic()
        os.kill(first["pid"], sig)
        status = _status_when_registered(engine.control, killed_at + 5)
        back_after = time.monotonic() - killed_at
        second = engine_ready(engine, 1, 5)
        assert second["pid"] != first["pid"]
        assert status["calls"] == [] and back_after < 5
        crashed = logged(engine, "engine_crashed", 1)
        assert crashed["engine"] == f"killed by {sig.name}"
        # The new engine's own contact (the old one's stays until it expires).
        port = int(status["sip"][0].rsplit(":", 1)[1])
        assert [c for c in kamailio.registrations("alice") if f":{port}" in c]
        rows = read_history(history)
        (row,) = [r for r in rows if r["callId"] == call["sip_call_id"]]
        assert row["status"] == "interrupted", row
        assert row["start_time"] == open_row["start_time"] and row["answer_time"] is not None
        print(f"\nback and registered {back_after:.2f} s after {sig.name}")
    finally:
        code = engine.stop()
    assert code == 0, engine.log_path.read_text()[-3000:]


def test_a_stopped_engine_is_killed_by_the_supervisors_watchdog_and_restarted(
    tmp_path: Path,
) -> None:
    """SIGSTOP freezes every thread, the SIP thread too: no pings, so SIGABRT, then
    SIGKILL when it does not die (a stopped process cannot), then a new engine."""
    engine = supervised(tmp_path, BASE_INI, "--watchdog-sec", "1")
    try:
        first = engine_ready(engine, 0, 20)
        os.kill(first["pid"], signal.SIGSTOP)
        timeout = logged(engine, "engine_watchdog_timeout", 10)
        assert timeout["pid"] == first["pid"]
        crashed = logged(engine, "engine_crashed", 15)
        assert crashed["engine"] == "killed by SIGKILL"
        engine_ready(engine, 1, 10)
    finally:
        code = engine.stop()
    assert code == 0
