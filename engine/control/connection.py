"""One accepted control connection: reads request lines, runs them through the
registry and replies; a ``subscribe`` request turns it into an event stream."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog

from ..errors import EngineError
from .eventstream import _EventBuffer, _Subscriber, _wait_for_hangup
from .protocol import _INTERNAL, _BadRequest, _encode, _error, _event_filter, _parse

if TYPE_CHECKING:
    from .listener import StreamServer

log = structlog.get_logger("engine.control")

_CHUNK = 65536
_TIMEVAL = struct.Struct("@ll")  # struct timeval {time_t tv_sec; suseconds_t tv_usec;}


class _Idle(Exception):
    """The connection is closed for idleness: ``code`` and ``message`` go to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


def _send_timeout(sock: socket.socket, seconds: float) -> None:
    """``SO_SNDTIMEO``: a blocking send fails (``EAGAIN``) after ``seconds``; 0 = never."""
    whole = int(seconds)
    value = _TIMEVAL.pack(whole, int((seconds - whole) * 1e6))
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
