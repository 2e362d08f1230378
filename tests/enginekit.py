"""Test helpers for driving a real engine: start one from an ini text, wait for events.

Waits go through events (:class:`EventLog`, fed by the bus in this process or by a
``serve`` process's event stream) or, for what is not an event, through
``peers.process.wait_until``: one hard-deadline helper, no sleep-and-hope."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from peers.process import PeerError, wait_until

from engine import actions
from engine.commandset import build_registry
from engine.config import load_config
from engine.events import Event
from engine.manager import CallManager

Predicate = Callable[[dict[str, Any]], bool]


class EventLog:
    """A bus handler that keeps every event (as ``to_dict()``) and lets tests wait for one."""

    name = "test-event-log"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def on_event(self, event: Event) -> None:
        self.add(event.to_dict())

    def add(self, event: dict[str, Any]) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait(self, predicate: Predicate, timeout: float = 10.0, what: str = "") -> dict[str, Any]:
        """The first event (past or future) matching ``predicate``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events:
                    if predicate(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [(e["event"], e.get("state"), e.get("code")) for e in self.events]
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what or 'an event'}; "
                        f"saw {kinds[-30:]}"
                    )
                self._cond.wait(left)

    def of(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        with self._cond:
            return [
                e
                for e in self.events
                if e["event"] == kind and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait_for(self, kind: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        return self.wait(
            lambda e: e["event"] == kind and all(e.get(k) == v for k, v in fields.items()),
            timeout,
            f"{kind} {fields}",
        )


def write_ini(path: Path, text: str, encoding: str = "utf-8") -> Path:
    if encoding == "utf-16":
        path.write_bytes(b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le"))
    else:
        path.write_text(text, encoding=encoding)
    return path


BASE_INI = """[Settings]
accountId=0
enableLocalAccount=1
sourcePort=0
audioCodecs=PCMU/8000/1 PCMA/8000/1
[Account0]
transport=
"""


class Engines:
    """Starts engines in this process (one at a time: pjsua2 allows one endpoint)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[CallManager] = []

    def start(self, ini: str = BASE_INI) -> tuple[CallManager, EventLog]:
        path = write_ini(self.tmp / "microsip.ini", ini)
        manager = CallManager(load_config(path), bind_address="127.0.0.1", sip_port=0)
        events = EventLog()
        manager.subscribe(events)
        manager.start()
        self.running.append(manager)
        return manager, events

    def stop_all(self) -> None:
        for manager in self.running:
            manager.stop()
        self.running.clear()


def run_command_line(manager: CallManager, line: str) -> list[dict[str, Any]]:
    """Run a MicroSIP command line on ``manager`` the way every channel does: as
    commands of the engine's one command table."""
    with build_registry(manager) as commands:
        return actions.run_command_line(commands, line)


def sip_port(manager: CallManager, kind: str = "udp") -> int:
    for addr in manager.sip_addresses():
        if addr.startswith(kind + ":"):
            return int(addr.rsplit(":", 1)[1])
    raise AssertionError(f"no {kind} transport in {manager.sip_addresses()}")


def engines_fixture(tmp_path: Path) -> Iterator[Engines]:
    engines = Engines(tmp_path)
    try:
        yield engines
    finally:
        engines.stop_all()


class ServeProcess:
    """``microsip-engine serve`` as a real child process, JSON logs in a file."""

    _stream: Any = None
    _events: EventLog | None = None

    def __init__(
        self, tmp: Path, ini: str | None, *extra: str, launcher: Sequence[str] = ("-m", "engine")
    ) -> None:
        """``launcher``: what the interpreter runs instead of ``-m engine`` (a script
        that patches the engine first, then runs its ``main``)."""
        import os
        import subprocess
        import sys

        self.tmp = tmp
        self.control = str(tmp / "ctl" / "control.sock")
        self.log_path = tmp / "serve.log"
        argv = [sys.executable, *launcher, "serve", "--bind", "127.0.0.1"]
        argv += ["--sip-port", "0", "--control", self.control, "--log-format", "json", *extra]
        if ini is not None:
            argv += ["--config", str(write_ini(tmp / "serve.ini", ini))]
        env = dict(os.environ, XDG_CONFIG_HOME=str(tmp / "xdg"), MICROSIP_CONTROL=self.control)
        env.pop("MICROSIP_INI", None)
        self.env = env
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        self.ready = self.wait_log(lambda e: e.get("event") == "ready", 15, "the ready line")

    @property
    def events(self) -> EventLog:
        """The engine's event stream, subscribed on first use (so use it before what
        is to be waited for happens); events collect here until the engine stops."""
        if self._events is None:
            self._events = EventLog()
            self._stream = self.client().events()
            self._reader = threading.Thread(target=self._read_events, daemon=True)
            self._reader.start()
        return self._events

    def _read_events(self) -> None:
        from engine.control import ControlError

        assert self._events is not None
        try:
            for event in self._stream:  # ends when the engine closes the stream
                self._events.add(event)
        except ControlError:
            pass  # the engine went away: the waits report what never came

    def log_entries(self) -> list[dict[str, Any]]:
        import json

        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "non-json", "line": line})
        return out

    def wait_log(self, predicate: Predicate, timeout: float, what: str) -> dict[str, Any]:
        """The first log entry matching ``predicate`` (for what is a log line, not an
        event: ``ready``, milestones); fails when the engine exits or after ``timeout``."""

        def found() -> dict[str, Any] | None:
            match = next((e for e in self.log_entries() if predicate(e)), None)
            if match is None and self.proc.poll() is not None:
                raise AssertionError(
                    f"no {what} in the engine log (exit {self.proc.poll()}):\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            return match

        try:
            return wait_until(found, timeout, f"{what} in the engine log", interval=0.05)
        except PeerError as exc:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{exc}:\n{tail}") from None

    def sip_port(self) -> int:
        return int(self.ready["sip"][0].rsplit(":", 1)[1])

    def client(self) -> Any:
        from engine.control import ControlClient

        return ControlClient(self.control, timeout=10)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)
        if self._stream is not None:
            self._reader.join(5)  # the engine's exit ended the stream
            self._stream.close()
        self._log.close()
        return self.proc.returncode


def serve_fixture(tmp_path: Path) -> Iterator[ServeProcess]:
    """A ``serve`` child on :data:`BASE_INI`, stopped after the test; a test module
    takes it with ``serve = pytest.fixture(name="serve")(serve_fixture)``."""
    with ServeProcess(tmp_path, BASE_INI) as proc:
        yield proc


def client_fixture(serve: ServeProcess) -> Iterator[Any]:
    """A control connection to the ``serve`` fixture's engine, closed after the test."""
    with serve.client() as client:
        yield client
