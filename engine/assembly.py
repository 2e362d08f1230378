"""``Engine``: the running service, assembled from its parts in one known order.

The parts and why they start and stop where they do:

* ``history`` and ``hooks`` are handlers of the manager's events: they start
  before it and close after it, so the hang-ups of shutdown are still recorded
  and their ``cmdCallEnd`` hooks still run (the manager delivers its last events
  when it stops).
* ``manager``: pjsua2, the transports, the accounts.
* ``commands``: the command table and the worker of queued WM_COPYDATA lines. It
  closes before the manager stops: the line being run finishes on a live engine,
  waiting ones are dropped, new ones are refused as ``stopped``.
* ``control`` and ``tcp_control``, the channels: they open last, once there is an
  engine to command, and they also close last, after the engine has stopped:
  event streams see the last events, and a client that sent ``exit`` sees its
  connection end only once the calls are hung up and the accounts un-REGISTERed
  (``microsip /exit; microsip 123`` then starts a fresh engine).

A part that fails to start stops the parts already started, in the same order
as :meth:`Engine.stop` would, and the failure propagates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import structlog

if TYPE_CHECKING:
    from .commands import CommandRegistry
    from .control.server import ControlServer
    from .control.tcp import TcpControlServer
    from .manager import CallManager
    from .state import Limits

log = structlog.get_logger("engine")


class Component(Protocol):
    """A part of the engine: started once, stopped once (``reason`` says why)."""

    @property
    def name(self) -> str: ...

    @property
    def closes_last(self) -> bool:
        """Stopped after every other part (the channels to the outside)."""
        ...

    def start(self) -> None: ...

    def stop(self, reason: str) -> None: ...


def _nothing(*_: object) -> None:
    pass


@dataclasses.dataclass(frozen=True)
class Part:
    """A :class:`Component` made of two functions: most parts start or stop with one
    call on an object they do not own the class of."""

    name: str
    start: Callable[[], None] = _nothing
    stop: Callable[[str], None] = _nothing
    closes_last: bool = False


class Lifecycle:
    """Starts components in order, and stops those started in reverse order, the
    ``closes_last`` ones after all others. Stopping never raises: a component that
    fails to stop is logged and the others still stop."""

    def __init__(self, components: Sequence[Component]) -> None:
        self.components = list(components)
        self._started: list[Component] = []

    def start(self) -> None:
        """Start each component; if one fails, stop the started ones and re-raise."""
        for component in self.components:
            try:
                component.start()
            except BaseException:
                self.stop("start failed")
                raise
            self._started.append(component)

    def stop(self, reason: str) -> None:
        """Stop the started components (once: a second call does nothing)."""
        started, self._started = self._started[::-1], []
        first = [c for c in started if not c.closes_last]
        last = [c for c in started if c.closes_last]
        for component in first + last:
            try:
                component.stop(reason)
            except Exception as exc:
                log.exception("component_stop_failed", component=component.name, error=repr(exc))


class Shutdown:
    """Why the service is to stop, and the one thing its main thread waits on.

    :meth:`request` (a signal handler, the ``exit`` command, a test) sets the
    reason and wakes the waiter; :meth:`nudge` only wakes it (SIGHUP: reopen the
    log file). A pipe, not a :class:`threading.Event`: a signal handler runs on
    the main thread between two bytecodes, possibly while that thread holds the
    Event's lock inside ``wait()``, and setting the Event there would deadlock;
    ``os.write`` takes no lock.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()  # non-inheritable: hooks never get them
        os.set_blocking(self._write, False)
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        """Ask the service to stop; the first reason given is kept."""
        if self.reason is None:
            self.reason = reason
        self.nudge()

    def nudge(self) -> None:
        """Wake the waiter without asking it to stop."""
        fd = self._write
        if fd < 0:
            return  # closed: nobody waits any more
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            os.write(fd, b"!")

    def wait(self, timeout: float | None) -> str | None:
        """Block until woken or ``timeout`` seconds passed; the reason once stop
        was requested, else None."""
        ready, _, _ = select.select([self._read], [], [], timeout)
        if ready:
            os.read(self._read, 4096)  # every wake-up so far: they are all handled now
        return self.reason

    def close(self) -> None:
        """Release the pipe; later requests are ignored. For the end of the process:
        a request racing with it could write to a file that reused the number."""
        fds, self._read, self._write = (self._read, self._write), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)


@dataclasses.dataclass(frozen=True)
class Channels:
    """Where the engine takes commands: the Unix control socket, and TCP if asked."""

    control: str
    idle_timeout: float
    #: ``host:port``; empty: no TCP control (the default).
    tcp_address: str = ""
    #: The TCP token file; empty: the default one beside the control socket.
    tcp_token: str = ""


class Engine:
    """The service: a :class:`CallManager`, its command table with the queued-line
    worker, the control servers, the hook runner and the call history, started and
    stopped in one order (see the module docstring). A context manager."""

    def __init__(
        self, manager: CallManager, channels: Channels, shutdown: Shutdown | None = None
    ) -> None:
        self.manager = manager
        self.channels = channels
        self.shutdown = shutdown if shutdown is not None else Shutdown()
        self.limits: Limits | None = None
        self.registry: CommandRegistry | None = None
        self.control: ControlServer | None = None
        self.tcp: TcpControlServer | None = None
        self.lifecycle = Lifecycle(self._parts())
        manager.exit_listener = lambda: self.shutdown.request("exit command")

    def _parts(self) -> list[Component]:
        m = self.manager
        parts: list[Component] = [
            # Open already: CallManager's constructor builds both and subscribes the
            # hooks. Theirs is the outer place in the order, whoever builds them.
            Part("history", stop=lambda _: m.history.close()),
            Part("hooks", stop=lambda _: m.hooks.close()),
            Part("manager", self._start_manager, self._stop_manager),
            Part("commands", self._open_commands, self._close_commands),
            Part("control", self._start_control, self._close_control, closes_last=True),
        ]
        if self.channels.tcp_address:  # off by default; token-protected
            parts.append(Part("tcp_control", self._start_tcp, self._close_tcp, closes_last=True))
        return parts

    # -- the whole --------------------------------------------------------------

    def start(self) -> Limits:
        """Start every part; raises (with the started parts stopped) on failure."""
        self.lifecycle.start()
        assert self.limits is not None
        return self.limits

    def stop(self, reason: str = "stop") -> None:
        """Stop every started part (idempotent)."""
        self.lifecycle.stop(reason)

    def wait(self, chores: Callable[[], None] = _nothing, every: float = 10.0) -> str:
        """Block until stop is requested; return its reason. ``chores`` runs on this
        thread every ``every`` seconds and after each :meth:`Shutdown.nudge`."""
        while (reason := self.shutdown.wait(every)) is None:
            chores()
        return reason

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the parts --------------------------------------------------------------

    def _start_manager(self) -> None:
        self.limits = self.manager.start()

    def _stop_manager(self, reason: str) -> None:
        self.manager.shut_down(reason)  # the history and the hooks close after it

    def _open_commands(self) -> None:
        from .commandset import build_registry

        self.registry = build_registry(self.manager)

    def _close_commands(self, _reason: str) -> None:
        if self.registry is not None:
            self.registry.close()  # ends the queued-line worker

    def _start_control(self) -> None:
        from .control import ControlServer

        assert self.registry is not None
        c = self.channels
        self.control = ControlServer(
            self.registry, self.manager.bus, c.control, idle_timeout=c.idle_timeout
        )
        self.control.start()

    def _close_control(self, _reason: str) -> None:
        if self.control is not None:
            self.control.close()

    def _start_tcp(self) -> None:
        from .control.tcp import TcpControlServer, default_token_path

        assert self.registry is not None
        c = self.channels
        self.tcp = TcpControlServer(
            self.registry,
            self.manager.bus,
            c.tcp_address,
            c.tcp_token or default_token_path(c.control),
            idle_timeout=c.idle_timeout,
        )
        self.tcp.start()

    def _close_tcp(self, _reason: str) -> None:
        if self.tcp is not None:
            self.tcp.close()
