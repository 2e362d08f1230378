"""What every control listener shares (the Unix socket, TCP): the client limit,
one thread per connection, the accept loop and an orderly close.

Idle clients cannot lock others out: a request/reply connection that sends no
request for ``idle_timeout`` seconds is closed, and when every slot is taken a
new client takes the slot of the connection idle the longest. Event streams are
exempt from both, but may hold at most ``max_clients - 1`` slots.
"""

from __future__ import annotations

import contextlib
import itertools
import selectors
import socket
import threading
import time
from typing import Any

import structlog

from ..bus import EventBus
from ..commands import CommandRegistry
from .connection import _Connection, _Idle
from .eventstream import MAX_EVENT_BACKLOG
from .protocol import MAX_LINE, _encode, _error

log = structlog.get_logger("engine.control")

#: Connections served at once (event streams included); one thread each.
MAX_CLIENTS = 128
#: Seconds a request/reply connection may wait without a request before it is closed.
IDLE_TIMEOUT = 30.0
#: A connection idle for less than this is never closed to make room: a client
#: between two requests of a burst is not idle, and taking its slot only moves
#: the wait elsewhere.
EVICT_GRACE = 0.1


def _refuse(sock: socket.socket, code: str, message: str) -> None:
    with contextlib.suppress(OSError):
        sock.settimeout(1.0)
        sock.sendall(_encode(_error(None, code, message)))
    sock.close()


class StreamServer:
    """What every control listener shares: the client limit, one thread per
    connection, the accept loop and an orderly close. A subclass binds the
    listening socket (:meth:`_start_accepting`) and admits each accepted
    socket (:meth:`_admit`, which ends with :meth:`_serve`)."""

    #: Name of the accept thread and prefix of the connections' names.
    kind = "control"

    def __init__(
        self,
        registry: CommandRegistry,
        bus: EventBus,
        *,
        max_line: int = MAX_LINE,
        max_clients: int = MAX_CLIENTS,
        max_event_backlog: int = MAX_EVENT_BACKLOG,
        idle_timeout: float = IDLE_TIMEOUT,
        evict_grace: float = EVICT_GRACE,
    ) -> None:
        if max_clients < 1 or idle_timeout <= 0:
            raise ValueError("max_clients and idle_timeout must be positive")
        self.registry = registry
        self.bus = bus
        self.max_line = max_line
        self.max_clients = max_clients
        self.max_event_backlog = max_event_backlog
        self.idle_timeout = idle_timeout
        self.evict_grace = evict_grace
        self._lock = threading.Lock()
        self._clients: set[_Connection] = set()
        self._streams = 0
        self._numbers = itertools.count(1)
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._closing = threading.Event()
        self._accept_thread: threading.Thread | None = None

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    @property
    def client_count(self) -> int:
        """Connections currently being served (request/reply and streams)."""
        with self._lock:
            return len(self._clients)

    def _start_accepting(self, listener: socket.socket) -> None:
        self._listener = listener
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"{self.kind}-accept", daemon=True
        )
        self._accept_thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._closing.is_set():
                for key, _ in selector.select(self._end_idle_connections()):
                    if key.fileobj is self._wake_r:
                        return
                    self._accept_one(self._listener)

    def _end_idle_connections(self) -> float | None:
        """Close the connections idle past their deadline; seconds to the next one.

        Runs on the accept thread, which alone admits connections, so no deadline
        appears that it has not seen (see :meth:`_Connection.deadline`); waking
        early is the worst that happens.
        """
        now = time.monotonic()
        ended: list[tuple[_Connection, _Idle]] = []
        next_deadline: float | None = None
        with self._lock:
            for conn in self._clients:
                deadline = conn.deadline()
                if deadline is None:
                    continue
                if deadline <= now:
                    ended.append((conn, conn.timed_out()))
                elif next_deadline is None or deadline < next_deadline:
                    next_deadline = deadline
            for conn, reason in ended:
                conn.closed_for = reason
                self._clients.discard(conn)
        for conn, _ in ended:
            conn.end_idle()
        return None if next_deadline is None else max(0.0, next_deadline - now)

    def _accept_one(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # e.g. EMFILE: back off instead of spinning
            log.error(f"{self.kind}_accept_failed", error=repr(exc))
            self._closing.wait(0.1)
            return
        try:
            self._admit(sock)
        except Exception:  # never let one connection stop the accept loop
            log.exception(f"{self.kind}_admit_failed")
            sock.close()

    def _admit(self, sock: socket.socket) -> None:
        """Check the peer, then :meth:`_serve` it (or refuse it)."""
        raise NotImplementedError

    def _connection(self, sock: socket.socket, name: str, **peer: Any) -> _Connection:
        """The connection object for an admitted socket (a subclass may specialise it)."""
        return _Connection(self, sock, name, **peer)

    def _serve(self, sock: socket.socket, **peer: Any) -> None:
        """Serve ``sock`` on its own thread; when every slot is taken, in the slot of
        the connection idle the longest, else refuse it."""
        conn = self._connection(sock, f"{self.kind}-{next(self._numbers)}", **peer)
        with self._lock:
            victim = self._evictable() if len(self._clients) >= self.max_clients else None
            if victim is not None:
                limit = self.max_clients
                reason = _Idle("idle", f"closed while idle: all {limit} connections were in use")
                victim.closed_for = reason
                self._clients.discard(victim)
            busy = len(self._clients) >= self.max_clients
            if not busy:
                self._clients.add(conn)
        if victim is not None:
            log.info(f"{self.kind}_idle_evicted", client=victim.name, max_clients=self.max_clients)
            victim.end_idle()
        if busy:
            log.warning(f"{self.kind}_busy", max_clients=self.max_clients, **peer)
            _refuse(sock, "busy", f"too many control clients (max {self.max_clients})")
            return
        try:
            conn.thread.start()
        except RuntimeError:
            self._forget(conn)
            raise

    def _evictable(self) -> _Connection | None:
        """The connection idle the longest, if for at least ``evict_grace`` (lock held)."""
        oldest = time.monotonic() - self.evict_grace
        idle = [c for c in self._clients if c.idle_since is not None and c.idle_since <= oldest]
        return min(idle, key=lambda c: c.idle_since or 0.0, default=None)

    def _begin_request(self, conn: _Connection) -> bool:
        """``conn`` starts a request; ``False`` if its slot was just given away."""
        with self._lock:
            if conn.closed_for is not None:
                return False
            conn.idle_since = None
            return True

    def _end_request(self, conn: _Connection) -> None:
        with self._lock:
            if conn.events is None:  # a finished stream never becomes idle again
                conn.idle_since = time.monotonic()

    def _begin_stream(self) -> bool:
        """Take a stream slot: streams leave at least one slot for requests."""
        with self._lock:
            if self._streams >= self.max_clients - 1:
                return False
            self._streams += 1
            return True

    def _end_stream(self) -> None:
        with self._lock:
            self._streams -= 1

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._clients.discard(conn)

    def close(self, timeout: float = 2.0) -> None:
        """Stop accepting, drop every client, release the address. Never raises.

        May be called from a command (``exit``): that command's reply is still sent,
        then its connection ends too.
        """
        try:
            self._close(timeout)
        except Exception:
            log.exception(f"{self.kind}_close_failed")

    def _close(self, timeout: float) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        if self._listener is not None:
            self._listener.close()
            self._listener_closed()
        with self._lock:
            clients = list(self._clients)
        for conn in clients:
            if conn.thread is not threading.current_thread():
                conn.shutdown()
        for conn in clients:
            if conn.thread is not threading.current_thread():  # close() from a command
                conn.thread.join(timeout / max(1, len(clients)))
        self._wake_r.close()
        self._wake_w.close()
        self._closed()

    def _listener_closed(self) -> None:
        """Hook: the listening socket is closed (clients are still connected)."""

    def _closed(self) -> None:
        """Hook: everything is closed."""
