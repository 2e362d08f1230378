"""Client side of the control socket (see ``docs/control-protocol.md``).

Standard library only (plus the stdlib-only ``engine.errors``): the ``microsip``
CLI imports this and must start fast -- no structlog, numpy or pjsua2 here.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, NoReturn

from ..errors import EngineError
from .paths import default_socket_path

__all__ = ["ControlClient", "ControlError", "EngineNotRunning", "EventStream", "RemoteError"]

_CHUNK = 65536
#: Pause between connection attempts while the engine's accept queue is full.
_BACKLOG_RETRY = 0.005


class ControlError(EngineError):
    """The control channel failed (timeout, lost connection, bad reply)."""

    code = "control_error"


class EngineNotRunning(ControlError):
    """Nothing is listening on the control socket (absent or refused)."""

    code = "not_running"


class RemoteError(ControlError):
    """The engine answered with an error reply: ``code`` and ``message`` are its own."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class _LineSocket:
    """A connected socket read as newline-delimited JSON."""

    def __init__(self, path: str, timeout: float | None) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.buffer = b""
        try:
            self._connect(path, timeout)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self.sock.close()
            raise EngineNotRunning(f"no engine is running on {path}") from exc
        except PermissionError as exc:
            self.sock.close()
            raise ControlError(f"permission denied on {path}", code="forbidden") from exc
        except TimeoutError as exc:
            self.sock.close()
            raise ControlError(f"timed out connecting to {path}", code="timeout") from exc
        except OSError as exc:
            self.sock.close()
            raise ControlError(f"cannot connect to {path}: {exc}") from exc

    def _connect(self, path: str, timeout: float | None) -> None:
        """``connect``, waiting out a full accept queue: a Unix socket with a timeout
        fails at once with EAGAIN there instead of waiting, as TCP would."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                return
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError from None
                time.sleep(_BACKLOG_RETRY)

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            self.sock.sendall(data)
        except TimeoutError as exc:
            raise ControlError(f"timed out sending to {self.path}", code="timeout") from exc
        except OSError as exc:
            raise ControlError(
                f"connection to {self.path} lost: {exc}", code="disconnected"
            ) from exc

    def receive(self) -> dict[str, Any] | None:
        """The next JSON object, or ``None`` at a clean end of stream."""
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(_CHUNK)
            except TimeoutError as exc:
                raise ControlError(f"no reply from {self.path}", code="timeout") from exc
            except OSError as exc:
                raise ControlError(
                    f"connection to {self.path} lost: {exc}", code="disconnected"
                ) from exc
            if not chunk:
                if self.buffer:
                    raise ControlError("connection closed mid-line", code="disconnected")
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise ControlError(f"bad line from engine: {exc}", code="protocol") from exc
        if not isinstance(message, dict):
            raise ControlError("bad line from engine: not an object", code="protocol")
        return message

    def close(self) -> None:
        self.sock.close()

    def _lost(self, exc: OSError) -> ControlError:
        return ControlError(f"connection to {self.path} lost: {exc}", code="disconnected")


def _raise_error(reply: dict[str, Any]) -> NoReturn:
    error = reply.get("error")
    if not isinstance(error, dict):
        raise ControlError("error reply without an error object", code="protocol")
    raise RemoteError(str(error.get("code", "error")), str(error.get("message", "")))


class EventStream:
    """Iterator over the events of one subscription; closing it disconnects."""

    def __init__(self, conn: _LineSocket) -> None:
        self._conn: _LineSocket | None = conn

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._conn is None:
            raise StopIteration
        try:
            event = self._conn.receive()
        except ControlError:
            self.close()
            raise
        if event is None:
            self.close()
            raise StopIteration
        return event

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ControlClient:
    """Talks to a running engine. One connection, opened lazily, reused by requests.

    Not thread-safe: use one client per thread.
    """

    def __init__(self, path: str | None = None, timeout: float | None = 10.0) -> None:
        self.path = path if path is not None else default_socket_path()
        self.timeout = timeout
        self._conn: _LineSocket | None = None
        self._ids = itertools.count(1)

    def request(self, cmd: str, /, **params: Any) -> Any:
        """Run ``cmd`` with ``params`` in the engine and return its result.

        Raises :class:`RemoteError` for an error reply, :class:`EngineNotRunning`
        when no engine listens, :class:`ControlError` for timeouts and lost links.
        """
        return self.call(cmd, params)

    def call(self, cmd: str, params: dict[str, Any] | None = None) -> Any:
        """Like :meth:`request`, with the parameters as a dict."""
        if self._conn is not None:
            try:
                return self._call(cmd, params)
            except RemoteError as exc:
                # The engine closed our idle connection before reading this request
                # (it never runs what it reads after that): send it again afresh.
                if exc.code != "idle":
                    raise
        return self._call(cmd, params)

    def _call(self, cmd: str, params: dict[str, Any] | None) -> Any:
        if self._conn is None:
            self._conn = _LineSocket(self.path, self.timeout)
        conn = self._conn
        request_id = next(self._ids)
        try:
            self._send_request(conn, {"id": request_id, "cmd": cmd, "params": params or {}})
            while True:
                reply = conn.receive()
                if reply is None:
                    raise ControlError("engine closed the connection", code="disconnected")
                if reply.get("id") == request_id or (
                    reply.get("id") is None and reply.get("ok") is False
                ):
                    break
        except ControlError:
            self.close()  # the stream position is unknown now: start afresh next time
            raise
        if reply.get("ok") is True:
            return reply.get("result")
        if reply.get("id") is None:  # a connection-level refusal (forbidden, busy...)
            self.close()
        _raise_error(reply)

    @staticmethod
    def _send_request(conn: _LineSocket, message: dict[str, Any]) -> None:
        """Send; if the engine already hung up, surface its refusal line instead."""
        try:
            conn.send(message)
        except ControlError as exc:
            if exc.code != "disconnected":
                raise
            try:
                reply = conn.receive()
            except ControlError:
                reply = None
            if reply is not None and reply.get("ok") is False:
                _raise_error(reply)
            raise

    def events(
        self, names: Iterable[str] | None = None, *, idle_timeout: float | None = None
    ) -> EventStream:
        """Subscribe on a connection of its own; iterate the result for event dicts.

        ``names`` filters by event type (``"call_state"``...). The subscription is
        in place when this returns (errors are raised here, not on iteration).
        Iteration ends when the engine closes the stream; ``idle_timeout`` (none by
        default) bounds the wait for each event.
        """
        conn = _LineSocket(self.path, self.timeout)
        try:
            params: dict[str, Any] = {} if names is None else {"events": list(names)}
            self._send_request(conn, {"id": "subscribe", "cmd": "subscribe", "params": params})
            reply = conn.receive()
            if reply is None:
                raise ControlError("engine closed the connection", code="disconnected")
            if reply.get("ok") is not True:
                _raise_error(reply)
            conn.sock.settimeout(idle_timeout)
        except BaseException:
            conn.close()
            raise
        return EventStream(conn)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
