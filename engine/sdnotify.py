"""systemd's notify protocol (``sd_notify(3)``) with the stdlib: READY, WATCHDOG, STOPPING.

``$NOTIFY_SOCKET`` names a Unix datagram socket (a leading ``@`` means the abstract
namespace); each message is one datagram of ``KEY=value`` lines. Without the
variable every call here is a no-op, so the engine behaves the same outside
systemd. ``microsip-engine serve --supervise`` speaks the same protocol to its
child (see :mod:`engine.supervisor`), so one code path serves both.

The watchdog proves what matters: a ping is sent only after a no-op command made
the round trip through the SIP thread. A SIP thread stuck in pjsua2 (or a
deadlock) stops the pings, and systemd (``WatchdogSec=``) or the supervisor
kills and restarts the engine.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("engine.sdnotify")


def notify_address(env: Mapping[str, str] = os.environ) -> str | None:
    """The socket address from ``$NOTIFY_SOCKET`` (abstract names start with NUL)."""
    path = env.get("NOTIFY_SOCKET", "")
    if not path or not (path.startswith(("/", "@"))):
        return None
    return "\0" + path[1:] if path.startswith("@") else path


def sd_notify(state: str, env: Mapping[str, str] = os.environ) -> bool:
    """Send ``state`` (e.g. ``READY=1``); True when sent. Never raises."""
    address = notify_address(env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("sd_notify_failed", state=state.split("=", 1)[0], error=repr(exc))
        return False
    return True


def watchdog_interval(env: Mapping[str, str] = os.environ) -> float:
    """Seconds between pings (half of ``$WATCHDOG_USEC``, as ``sd_watchdog_enabled(3)``
    advises), or 0 when no watchdog is asked of this process."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or notify_address(env) is None:
        return 0.0
    if pid and pid != str(os.getpid()):  # meant for another process (our parent)
        return 0.0
    return int(usec) / 2e6


class Watchdog:
    """Pings ``WATCHDOG=1`` every interval while ``alive(timeout)`` says the SIP thread
    answered; a missed round trip is logged and no ping is sent."""

    def __init__(
        self,
        alive: Callable[[float], bool],
        interval: float,
        env: Mapping[str, str] = os.environ,
    ) -> None:
        self.alive = alive
        self.interval = interval
        self.env = env
        self.pings = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.alive(self.interval):
                if sd_notify("WATCHDOG=1", self.env):
                    self.pings += 1
            elif not self._stop.is_set():
                log.error("watchdog_sip_thread_unresponsive", waited=self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 1.0)


def service_ready(
    alive: Callable[[float], bool], status: str, env: Mapping[str, str] = os.environ
) -> Watchdog | None:
    """READY=1 (with a STATUS line) and, if asked for, the watchdog thread."""
    sd_notify(f"READY=1\nSTATUS={status}", env)
    interval = watchdog_interval(env)
    return Watchdog(alive, interval, env).start() if interval > 0 else None


def service_stopping(watchdog: Watchdog | None, env: Mapping[str, str] = os.environ) -> None:
    if watchdog is not None:
        watchdog.stop()
    sd_notify("STOPPING=1", env)
