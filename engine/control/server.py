"""The local control socket: newline-delimited JSON onto the command registry.

One accept thread and one daemon thread per client. A client is only ever a
channel onto :class:`~engine.commands.CommandRegistry`; commands run on the
client's thread (the engine marshals onto the SIP thread itself). Garbage from
one client never reaches another: every failure is an error reply on that
connection, or the end of that connection. The protocol is specified in
``docs/control-protocol.md``.

Idle clients cannot lock others out: a request/reply connection that sends no
request for ``idle_timeout`` seconds is closed, and when every slot is taken a
new client takes the slot of the connection idle the longest. Event streams are
exempt from both, but may hold at most ``max_clients - 1`` slots.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import itertools
import json
import math
import os
import select
import selectors
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from ..bus import EventBus
from ..commands import CommandRegistry
from ..errors import EngineError
from ..events import Event, EventType
from .paths import ensure_private_dir

__all__ = [
    "EVICT_GRACE",
    "IDLE_TIMEOUT",
    "MAX_CLIENTS",
    "MAX_EVENT_BACKLOG",
    "MAX_LINE",
    "ControlServer",
    "StreamServer",
]

log = structlog.get_logger("engine.control")

#: Longest request line accepted, newline excluded.
MAX_LINE = 1 << 20
#: Events queued for one subscriber before it is judged too slow and dropped.
MAX_EVENT_BACKLOG = 1000
#: Connections served at once (event streams included); one thread each.
MAX_CLIENTS = 128
#: Seconds a request/reply connection may wait without a request before it is closed.
IDLE_TIMEOUT = 30.0
#: A connection idle for less than this is never closed to make room: a client
#: between two requests of a burst is not idle, and taking its slot only moves
#: the wait elsewhere.
EVICT_GRACE = 0.1
_CHUNK = 65536
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
_TIMEVAL = struct.Struct("@ll")  # struct timeval {time_t tv_sec; suseconds_t tv_usec;}
_REQUEST_KEYS = frozenset({"id", "cmd", "params"})
_EVENT_NAMES = frozenset(str(t) for t in EventType)
_INTERNAL = "internal error (details in the engine log)"


class _Idle(Exception):
    """The connection is closed for idleness: ``code`` and ``message`` go to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _BadRequest(Exception):
    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


def _encode(message: dict[str, Any]) -> bytes:
    """Strict JSON (no NaN), ASCII-escaped so any string survives, one line."""
    return json.dumps(message, allow_nan=False, separators=(",", ":")).encode() + b"\n"


def _error(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _parse(line: bytes) -> tuple[Any, str, Any]:
    """``(id, cmd, params)`` of a request line, or :class:`_BadRequest`."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadRequest("bad_request", "request is not valid UTF-8") from exc
    try:
        request = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise _BadRequest("bad_request", f"invalid JSON: {exc}"[:200]) from exc
    if not isinstance(request, dict):
        raise _BadRequest("bad_request", "a request must be a JSON object")
    request_id = request.get("id")
    if not isinstance(request_id, str | int | float | bool | type(None)):
        raise _BadRequest("bad_request", "'id' must be a JSON scalar")
    unknown = sorted(set(request) - _REQUEST_KEYS)
    if unknown:
        raise _BadRequest("bad_request", f"unknown request key {unknown[0]!r}", request_id)
    cmd = request.get("cmd")
    if not isinstance(cmd, str):
        raise _BadRequest("bad_request", "'cmd' must be a string", request_id)
    return request_id, cmd, request.get("params", {})


class _EventBuffer:
    """Bounded FIFO between the bus worker and a subscriber's writer thread."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def push(self, item: bytes) -> bool:
        """Queue ``item``; ``False`` if the buffer is full (the caller drops the client)."""
        with self._cond:
            if self._closed:
                return True
            if len(self._items) >= self._limit:
                return False
            self._items.append(item)
            self._cond.notify()
            return True

    def pop(self) -> bytes | None:
        """The next item, waiting for it; ``None`` once closed."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            return None if self._closed else self._items.popleft()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()


class _Subscriber:
    """The bus handler of one subscribed connection: filter, encode, buffer."""

    def __init__(
        self,
        name: str,
        wanted: frozenset[str] | None,
        buffer: _EventBuffer,
        on_overflow: Callable[[], None],
    ) -> None:
        self.name = name
        self._wanted = wanted
        self._buffer = buffer
        self._on_overflow = on_overflow
        self._overflowed = False

    def on_event(self, event: Event) -> None:
        if self._overflowed or (self._wanted is not None and str(event.type) not in self._wanted):
            return
        try:
            data = _encode(event.to_dict())
        except (TypeError, ValueError) as exc:
            log.error("control_event_unencodable", event_type=str(event.type), error=repr(exc))
            return
        if not self._buffer.push(data):
            self._overflowed = True
            log.warning("control_subscriber_overflow", client=self.name)
            self._on_overflow()


class _Connection:
    """One accepted client: reads request lines, replies, maybe becomes a stream.

    The same for every transport; a transport that must check something first
    (the TCP listener's token) overrides :meth:`authenticate`.
    """

    def __init__(self, server: StreamServer, sock: socket.socket, name: str, **peer: Any) -> None:
        self.server = server
        self.sock = sock
        self.name = name
        self.log = log.bind(client=name, **peer)
        self.events: _EventBuffer | None = None
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)
        #: Since when no request runs (``None`` while one runs, or once streaming);
        #: read and written under the server's lock.
        self.idle_since: float | None = time.monotonic()
        #: Why the server ended this idle connection (set under its lock, once).
        self.closed_for: _Idle | None = None
        # Sockets stay blocking (a timeout would cost a poll() per read and per
        # write): the server's accept thread ends idle connections, and the kernel
        # bounds a write to a client that takes nothing.
        _send_timeout(sock, server.idle_timeout)

    def authenticate(self, lines: Iterator[bytes | None]) -> bool:
        """Called before the first request: may consume lines from ``lines``.
        ``False`` ends the connection without executing anything."""
        return True

    def run(self) -> None:
        try:
            lines = self._lines()
            if not self.authenticate(lines):
                return
            for line in lines:
                if line is None:
                    limit = self.server.max_line
                    self._send(_error(None, "too_large", f"request line over {limit} bytes"))
                elif line.strip() and self._handle(line):
                    break  # the connection became an event stream, now finished
                if self.server.closing:
                    break  # a command (``exit``) closed the server: its reply is sent
        except _Idle as exc:
            self.log.info("control_client_idle", code=exc.code, reason=exc.message)
            self._farewell(exc.code, exc.message)
        except OSError as exc:
            self.log.debug("control_client_lost", error=repr(exc))
        except Exception:  # a bug here must still end only this connection
            self.log.exception("control_client_failed")
        finally:
            self.shutdown()
            self.sock.close()
            self.server._forget(self)

    def shutdown(self) -> None:
        """End the connection from any thread: wakes its reader and event writer."""
        if self.events is not None:
            self.events.close()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def deadline(self) -> float | None:
        """When the server closes this connection if it stays idle (``None``: never,
        an event stream). While a request runs: the earliest it could be, so the
        accept thread never sleeps past a deadline that the request's end sets."""
        if self.events is not None:
            return None
        idle_since = self.idle_since
        start = time.monotonic() if idle_since is None else idle_since
        return start + self.server.idle_timeout

    def timed_out(self) -> _Idle:
        """Why the connection is closed when :meth:`deadline` has passed."""
        return _Idle("idle", f"closed after {self.server.idle_timeout:g} s without a request")

    def end_idle(self) -> None:
        """Wake the idle reader (any thread; ``closed_for`` is set): it says why and
        ends. Only reading is shut, so the farewell line can still be sent."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)

    def _send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(_encode(message))

    def _farewell(self, code: str, message: str) -> None:
        """One last error line, if the client's buffer has room: a client that reads
        nothing must not hold this thread."""
        with contextlib.suppress(OSError):
            self.sock.settimeout(0)
            self.sock.send(_encode(_error(None, code, message)))

    def _recv(self) -> bytes:
        """The next chunk of input; :class:`_Idle` once the server has ended this
        idle connection (whatever it sent since is not run)."""
        chunk = self.sock.recv(_CHUNK)
        if self.closed_for is not None:
            raise self.closed_for
        return chunk

    def _lines(self) -> Iterator[bytes | None]:
        """Each request line (CR/LF stripped); ``None`` for a line over ``max_line``.

        An oversize line is answered as soon as it passes the limit and then
        discarded up to its newline, so the connection stays usable.
        """
        limit = self.server.max_line
        buf = bytearray()
        discarding = False
        while chunk := self._recv():
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                if not discarding:
                    buf += chunk[start:end]
                    line = bytes(buf[:-1] if buf.endswith(b"\r") else buf)
                    yield line if len(line) <= limit else None
                discarding = False
                buf.clear()
                start = end + 1
            if not discarding:
                buf += chunk[start:]
                if len(buf) > limit + 1:  # +1: a CR may still precede the LF
                    discarding = True
                    buf.clear()
                    yield None

    def _handle(self, line: bytes) -> bool:
        """Answer one request line; ``True`` once the connection has streamed events."""
        try:
            request_id, cmd, params = _parse(line)
        except _BadRequest as exc:
            self._send(_error(exc.request_id, exc.code, exc.message))
            return False
        if not self.server._begin_request(self):
            assert self.closed_for is not None
            raise self.closed_for
        if cmd == "subscribe":
            try:
                return self._subscribe(request_id, params)
            finally:
                self.server._end_request(self)
        reply = self._execute(request_id, cmd, params)
        try:
            data = _encode(reply)  # once: a large result is costly to encode
        except (TypeError, ValueError):
            self.log.exception("control_internal_error", cmd=cmd)
            data = _encode(_error(request_id, "internal_error", _INTERNAL))
        # Idle from here, before the client can read its reply and connect again:
        # the reply still goes out whole if a new client takes this slot meanwhile.
        self.server._end_request(self)
        self.sock.sendall(data)
        return False

    def _execute(self, request_id: Any, cmd: str, params: Any) -> dict[str, Any]:
        self.log.debug("control_command", cmd=cmd, request_id=request_id)
        try:
            result = self.server.registry.call(cmd, params)
            return {"id": request_id, "ok": True, "result": result}
        except EngineError as exc:
            return _error(request_id, exc.code, exc.message)
        except Exception:
            self.log.exception("control_internal_error", cmd=cmd)
            return _error(request_id, "internal_error", _INTERNAL)

    def _subscribe(self, request_id: Any, params: Any) -> bool:
        try:
            wanted = _event_filter(params)
        except _BadRequest as exc:
            self._send(_error(request_id, exc.code, exc.message))
            return False
        if not self.server._begin_stream():
            limit = self.server.max_clients - 1
            self._send(_error(request_id, "busy", f"too many event streams (max {limit})"))
            return False
        try:
            return self._stream(request_id, wanted)
        finally:
            self.server._end_stream()

    def _stream(self, request_id: Any, wanted: frozenset[str] | None) -> bool:
        self.events = buffer = _EventBuffer(self.server.max_event_backlog)
        handler = _Subscriber(self.name, wanted, buffer, self.shutdown)
        try:
            unsubscribe = self.server.bus.subscribe(handler)
        except RuntimeError:
            self.events = None
            self._send(_error(request_id, "stopped", "the engine is stopping"))
            return False
        _send_timeout(self.sock, 0)  # a stream's writer has its own bound (the backlog)
        writer = threading.Thread(
            target=self._write_events, args=(buffer,), name=f"{self.name}-events", daemon=True
        )
        try:
            events = "all" if wanted is None else sorted(wanted)
            self._send({"id": request_id, "ok": True, "result": {"events": events}})
            self.log.info("control_subscribed", events=events)
            writer.start()
            while self.sock.recv(_CHUNK):  # the stream is one-way: input is ignored
                pass
            _wait_for_hangup(self.sock)
        finally:
            unsubscribe()
            buffer.close()
            self.shutdown()
            if writer.is_alive():
                writer.join()  # before the socket is closed: no send on a reused fd
        return True

    def _write_events(self, buffer: _EventBuffer) -> None:
        try:
            while (data := buffer.pop()) is not None:
                self.sock.sendall(data)
        except OSError as exc:
            self.log.debug("control_stream_lost", error=repr(exc))
        finally:
            self.shutdown()  # wakes the reading side, which unsubscribes


def _wait_for_hangup(sock: socket.socket) -> None:
    """Block until the peer closes completely (or we shut the socket down).

    End of input alone is not a hang-up: ``echo '{"cmd":"subscribe"}' | socat``
    half-closes its side and goes on reading. Only POLLHUP -- both directions
    shut -- ends the stream; a writer error or ``close()`` shuts them for us.
    """
    poller = select.poll()
    poller.register(sock, select.POLLHUP)
    while not poller.poll():
        pass


def _event_filter(params: Any) -> frozenset[str] | None:
    if not isinstance(params, dict) or set(params) - {"events"}:
        raise _BadRequest("bad_params", "subscribe: params may only hold 'events'")
    names = params.get("events")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _BadRequest("bad_params", "subscribe: 'events' must be a list of event names")
    unknown = sorted(set(names) - _EVENT_NAMES)
    if unknown:
        raise _BadRequest("bad_params", f"subscribe: unknown event {unknown[0]!r}")
    return frozenset(names)


def _send_timeout(sock: socket.socket, seconds: float) -> None:
    """``SO_SNDTIMEO``: a blocking send fails (``EAGAIN``) after ``seconds``; 0 = never."""
    whole = int(seconds)
    value = _TIMEVAL.pack(whole, int((seconds - whole) * 1e6))
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def _peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process that connected, from the kernel."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(data)
    return pid, uid, gid


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


class ControlServer(StreamServer):
    """Serves ``registry`` and ``bus`` on a Unix stream socket at ``path``.

    Only processes of our own effective uid are served (``SO_PEERCRED``; root is
    not an exception). ``start()`` raises :class:`EngineError` if another engine
    already serves the path; ``close()`` never raises.
    """

    def __init__(
        self,
        registry: CommandRegistry,
        bus: EventBus,
        path: str,
        *,
        max_line: int = MAX_LINE,
        max_clients: int = MAX_CLIENTS,
        max_event_backlog: int = MAX_EVENT_BACKLOG,
        idle_timeout: float = IDLE_TIMEOUT,
        evict_grace: float = EVICT_GRACE,
    ) -> None:
        super().__init__(
            registry,
            bus,
            max_line=max_line,
            max_clients=max_clients,
            max_event_backlog=max_event_backlog,
            idle_timeout=idle_timeout,
            evict_grace=evict_grace,
        )
        self.path = os.path.abspath(path)
        self._lock_fd: int | None = None
        self._inode: tuple[int, int] | None = None

    def start(self) -> None:
        """Create the private directory, claim the path and start accepting."""
        if self._listener is not None or self._closing.is_set():
            raise RuntimeError("a ControlServer can be started only once")
        if len(os.fsencode(self.path)) > _SUN_PATH_MAX:
            raise EngineError(f"control socket path is too long for AF_UNIX: {self.path}")
        ensure_private_dir(self.path)
        self._take_lock()
        try:
            self._clear_stale()
            listener = self._bind()
        except BaseException:
            self._release_lock()
            raise
        self._start_accepting(listener)
        log.info("control_listening", path=self.path)

    def _take_lock(self) -> None:
        """An flock beside the socket closes the race between two starting engines."""
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.path + ".lock", flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise EngineError(f"another engine is already running on {self.path}") from exc
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def _clear_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise EngineError(f"{self.path} exists and is not a socket; not removing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except ConnectionRefusedError:
            log.info("control_stale_socket_removed", path=self.path)
            os.unlink(self.path)
            return
        except OSError as exc:  # a timeout means a live listener with a full backlog
            raise EngineError(f"another engine is already running on {self.path}") from exc
        finally:
            probe.close()
        raise EngineError(f"another engine is already running on {self.path}")

    def _bind(self) -> socket.socket:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.path)
            os.chmod(self.path, 0o600)  # before listen(): nobody can connect earlier
            st = os.stat(self.path)
            self._inode = (st.st_dev, st.st_ino)
            listener.listen(min(self.max_clients, 128))
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            raise EngineError(f"cannot listen on {self.path}: {exc.strerror or exc}") from exc
        return listener

    def _admit(self, sock: socket.socket) -> None:
        """Check the peer's uid, then serve it (or refuse it)."""
        sock.setblocking(True)
        try:
            pid, uid, _gid = _peer_credentials(sock)
        except OSError as exc:
            log.error("control_peercred_failed", error=repr(exc))
            _refuse(sock, "forbidden", "cannot check peer credentials")
            return
        if uid != os.geteuid():
            log.warning("control_forbidden", peer_uid=uid, peer_pid=pid)
            _refuse(sock, "forbidden", "only the engine's own user may use this socket")
            return
        self._serve(sock, peer_pid=pid)

    def _listener_closed(self) -> None:
        self._remove_socket_file()

    def _closed(self) -> None:
        self._release_lock()
        log.info("control_closed", path=self.path)

    def _remove_socket_file(self) -> None:
        """Unlink the socket only if it is still ours (not a successor's)."""
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        except OSError:
            pass
