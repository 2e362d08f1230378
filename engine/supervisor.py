"""``microsip-engine serve --supervise``: the engine in a child process, restarted after a crash.

MicroSIP restarts itself after a crash; the engine's equivalent is a small parent
process that loads no pjsua2 (so nothing that can abort it) and runs ``serve`` as
its child with the same arguments, hence the same control socket path: clients
reconnect to the same place. A child that exits abnormally (a signal, or a
non-zero status other than a configuration error) is started again after a
backoff (0.5 s, then 1, 2, 4… up to 30 s); ``max_quick`` crashes in a row, each
within ``quick`` seconds of its start, mean something that will not go away by
itself, and the supervisor gives up and says why. A clean exit (``exit``
command, SIGTERM) ends the supervisor with the child's status.

The child talks to the supervisor with systemd's notify protocol (see
:mod:`engine.sdnotify`): READY marks a successful (re)start, and with a watchdog
(``watchdog`` seconds, default 30) a child whose SIP thread stops answering gets
SIGABRT, as systemd's ``WatchdogSec=`` would do, and is restarted. Under systemd
itself the supervisor relays READY/WATCHDOG/STOPPING to ``$NOTIFY_SOCKET``.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from types import FrameType

import structlog

from .sdnotify import sd_notify, watchdog_interval

log = structlog.get_logger("engine.supervisor")

#: ``serve`` exits 2 on a configuration error: starting again cannot fix it.
CONFIG_ERROR = 2
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
#: How long SIGTERM waits for the child before SIGKILL.
STOP_TIMEOUT = 15.0
#: How long a child gets to die of the watchdog's SIGABRT (a stopped process does
#: not) before SIGKILL.
ABORT_GRACE = 5.0
_RELAYED = ("READY=1", "STOPPING=1", "WATCHDOG=1")


def describe(returncode: int) -> str:
    """``exit 1`` or ``killed by SIGSEGV``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit {returncode}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """The child gets SIGTERM if the supervisor dies (Linux), so none is orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    """Runs ``argv`` (a ``serve`` command line) and restarts it after a crash."""

    _notify: socket.socket

    def __init__(
        self,
        argv: Sequence[str],
        *,
        watchdog: float = 30.0,
        max_quick: int = 5,
        quick: float = 10.0,
        env: Mapping[str, str] = os.environ,
    ) -> None:
        self.argv = list(argv)
        upstream = watchdog_interval(env) * 2  # systemd's own WatchdogSec, if any
        # The child's pings are relayed upstream: they must come as often as
        # systemd wants them.
        self.watchdog = min(watchdog or upstream, upstream) if upstream > 0 else watchdog
        self.max_quick = max_quick
        self.quick = quick
        self.upstream = {k: v for k, v in env.items() if k in ("NOTIFY_SOCKET",)}
        self.env = {k: v for k, v in env.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        self.restarts = 0
        self._stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._notify_path = ""  # the child's notify socket, made by run()

    # -- the loop ---------------------------------------------------------------

    def run(self) -> int:
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}
        directory = tempfile.mkdtemp(prefix="microsip-engine-supervisor-")
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._notify_path = os.path.join(directory, "notify")
            self._notify.bind(self._notify_path)
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._notify.close()
            shutil.rmtree(directory, ignore_errors=True)

    def _run(self) -> int:
        quick_crashes = 0
        crashed_at: float | None = None
        while True:
            started = time.monotonic()
            code = self._run_child(crashed_at)
            if self._stopping.is_set() or code == 0:
                log.info("supervisor_stopped", engine=describe(code))
                return 0 if code in (0, -signal.SIGTERM) else code
            if code == CONFIG_ERROR:
                log.error(
                    "supervisor_gave_up",
                    reason="the engine refused its configuration; restarting cannot fix that",
                )
                return code
            crashed_at = time.monotonic()
            quick_crashes = quick_crashes + 1 if crashed_at - started < self.quick else 1
            if quick_crashes >= self.max_quick:
                log.error(
                    "supervisor_gave_up",
                    reason=f"the engine crashed {quick_crashes} times in a row, each within "
                    f"{self.quick:.0f} s of starting (last: {describe(code)})",
                )
                return 1
            delay = BACKOFF[min(quick_crashes, len(BACKOFF)) - 1]
            log.error("engine_crashed", engine=describe(code), restart_in=delay)
            if self._stopping.wait(delay):
                return 0
            self.restarts += 1

    def _run_child(self, crashed_at: float | None) -> int:
        env = dict(self.env, NOTIFY_SOCKET=self._notify_path)
        if self.watchdog > 0:
            env["WATCHDOG_USEC"] = str(int(self.watchdog * 1e6))
        # A session of its own, like an engine started without us: no terminal's
        # signals reach it except through us (we forward them).
        child = subprocess.Popen(
            self.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._child = child
        if self._stopping.is_set():  # a signal between the check and the spawn
            child.terminate()
        ready_at: float | None = None
        aborted_at: float | None = None
        last_ping = time.monotonic()
        while (code := child.poll()) is None:
            readable, _, _ = select.select([self._notify], [], [], 0.1)
            for message in self._messages() if readable else []:
                if "READY=1" in message and ready_at is None:
                    ready_at = last_ping = time.monotonic()
                    took = None if crashed_at is None else round(ready_at - crashed_at, 3)
                    log.info("engine_ready", pid=child.pid, restarts=self.restarts, after=took)
                if "WATCHDOG=1" in message:
                    last_ping = time.monotonic()
                self._relay(message)
            now = time.monotonic()
            if aborted_at is not None:
                if now - aborted_at > ABORT_GRACE:
                    child.kill()
            elif ready_at is not None and self.watchdog > 0 and now - last_ping > self.watchdog:
                log.error("engine_watchdog_timeout", pid=child.pid, silent_for=now - last_ping)
                child.send_signal(signal.SIGABRT)  # what systemd's WatchdogSec does
                aborted_at = now
        self._child = None
        return code

    def _messages(self) -> list[str]:
        out: list[str] = []
        while True:
            try:
                data = self._notify.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            except OSError:
                return out
            out.append(data.decode(errors="replace"))

    def _relay(self, message: str) -> None:
        """Under systemd, our own service state follows the child's."""
        if self.upstream:
            for line in message.splitlines():
                if line in _RELAYED:
                    sd_notify(line, self.upstream)

    # -- stopping -------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM if signum != signal.SIGINT else signal.SIGINT)
            threading.Thread(target=self._kill_after, args=(child,), daemon=True).start()

    @staticmethod
    def _kill_after(child: subprocess.Popen[bytes]) -> None:
        try:
            child.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.error("engine_stop_timeout", pid=child.pid, detail="sent SIGKILL")
            child.kill()
