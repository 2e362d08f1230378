"""The TCP control listener: the control protocol for programs that cannot use
the Unix socket -- the Windows ``MicroSIP.exe`` shim under Wine (which has no
AF_UNIX) or on another machine.

Off by default; ``[Engine] tcpControl=host:port`` or ``microsip-engine serve
--tcp-control HOST:PORT`` turns it on. It speaks exactly the protocol of the
Unix socket (``docs/control-protocol.md``: the same connection code, limits and
garbage tolerance) with one addition: TCP has no ``SO_PEERCRED``, so **the
first line of every connection must carry the engine's token**::

    {"token": "<contents of the token file>"}

answered ``{"id": null, "ok": true, "result": {"authenticated": true}}``. A
missing or wrong token gets one ``forbidden`` error line and the connection is
closed before anything is executed. The token lives in a file only the
engine's user can read (mode 0600), by default ``tcp-token`` beside the control
socket; the engine creates it with a random token if it does not exist and
keeps it otherwise (delete it to get a new one).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Iterator
from typing import Any

import structlog

from ..bus import EventBus
from ..commands import CommandRegistry
from ..errors import EngineError
from .connection import _Connection, _Idle
from .protocol import _error
from .server import (
    EVICT_GRACE,
    IDLE_TIMEOUT,
    MAX_CLIENTS,
    MAX_EVENT_BACKLOG,
    MAX_LINE,
    StreamServer,
)

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "TOKEN_NAME",
    "TcpControlServer",
    "default_token_path",
    "load_or_create_token",
    "parse_address",
]

log = structlog.get_logger("engine.control.tcp")

#: File name of the token beside the control socket (the default location).
TOKEN_NAME = "tcp-token"
#: Seconds a new connection has to send its token line.
HANDSHAKE_TIMEOUT = 10.0
#: Printable and JSON-safe: clients copy it into a JSON string without escaping.
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")
_FORBIDDEN = 'missing or wrong token: the first line must be {"token": "<the engine\'s token>"}'


def parse_address(text: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a bare ``port`` (meaning 127.0.0.1).

    Port 0 asks the OS for a free port (``TcpControlServer.address`` tells which).
    """
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise EngineError(f"TCP control address {text!r} is not host:port", code="config_error")
    return host, int(port)


def default_token_path(control_socket: str) -> str:
    """``tcp-token`` in the control socket's private (0700) directory."""
    return os.path.join(os.path.dirname(os.path.abspath(control_socket)), TOKEN_NAME)


def load_or_create_token(path: str) -> str:
    """The token in ``path``; a new random one (file mode 0600) if it does not exist.

    An existing file must be a regular file (not a symlink) of our own uid that
    nobody else can read, holding a valid token; anything else raises
    :class:`EngineError` naming the file -- it is never silently replaced.
    """
    path = os.path.abspath(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return _read_token(path)
    except OSError as exc:
        raise EngineError(
            f"cannot create the TCP control token file {path}: {exc.strerror or exc}"
        ) from exc
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    log.info("tcp_control_key_file_created", path=path)
    return token


def _read_token(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        reason = "is a symlink" if os.path.islink(path) else f"cannot be read: {exc.strerror}"
        raise EngineError(f"TCP control token file {path} {reason}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise EngineError(f"TCP control token file {path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise EngineError(
                f"TCP control token file {path} is owned by uid {st.st_uid}, not by us"
            )
        if st.st_mode & 0o077:
            raise EngineError(
                f"TCP control token file {path} is readable by others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}): chmod 600 it, or remove it for a new one"
            )
        content = os.read(fd, 4096).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    if not _TOKEN_RE.fullmatch(content):
        raise EngineError(
            f"TCP control token file {path} holds no valid token (16-512 characters of "
            "A-Z a-z 0-9 . _ ~ + / = -); remove it for a new one"
        )
    return content


def _token_of(line: bytes | None) -> tuple[Any, str] | None:
    """``(id, token)`` of a hello line ``{"token": "...", "id": ...}``, else None."""
    if line is None:
        return None
    try:
        hello = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(hello, dict) or set(hello) - {"token", "id"}:
        return None
    token, request_id = hello.get("token"), hello.get("id")
    if not isinstance(token, str) or not isinstance(request_id, str | int | bool | type(None)):
        return None
    return request_id, token


class _TcpConnection(_Connection):
    """A control connection that must open with the token line."""

    def __init__(self, server: TcpControlServer, sock: socket.socket, name: str, **peer: Any):
        super().__init__(server, sock, name, **peer)
        self.tcp = server
        self.handshake_deadline: float | None = time.monotonic() + server.handshake_timeout

    def deadline(self) -> float | None:
        idle = super().deadline()
        handshake = self.handshake_deadline  # the token line has a wait of its own
        if handshake is None or idle is None:
            return idle if handshake is None else handshake
        return min(idle, handshake)

    def timed_out(self) -> _Idle:
        if self.handshake_deadline is not None and self.handshake_deadline <= time.monotonic():
            self.log.warning("tcp_control_forbidden", reason="no token line in time")
            return _Idle("forbidden", "no token line in time")
        return super().timed_out()

    def authenticate(self, lines: Iterator[bytes | None]) -> bool:
        line = next((item for item in lines if item is None or item.strip()), None)
        self.handshake_deadline = None
        hello = _token_of(line)
        # compare_digest: the time taken does not tell how much of a guess was right.
        expected = self.tcp.token.encode()
        if hello is None or not hmac.compare_digest(hello[1].encode(), expected):
            reason = "no token line" if hello is None else "wrong token"
            self.log.warning("tcp_control_forbidden", reason=reason)
            self._send(_error(None, "forbidden", _FORBIDDEN))
            return False
        # Idle from the handshake on; set before the reply that lets the client go on.
        self.idle_since = time.monotonic()
        self._send({"id": hello[0], "ok": True, "result": {"authenticated": True}})
        self.log.debug("tcp_control_authenticated")
        return True

    def _execute(self, request_id: Any, cmd: str, params: Any) -> dict[str, Any]:
        # The shim's clients are Windows integrations with no console: a failed
        # command (a malformed WM_COPYDATA included) must show in the engine log.
        reply = super()._execute(request_id, cmd, params)
        if not reply["ok"]:
            error = reply["error"]
            self.log.warning(
                "tcp_control_command_failed",
                cmd=cmd,
                code=error["code"],
                error=error["message"],
            )
        return reply


class TcpControlServer(StreamServer):
    """Serves ``registry`` and ``bus`` on TCP ``address`` (``host:port``) to
    clients that present the token stored in ``token_path``.

    ``start()`` raises :class:`EngineError` when the address cannot be bound or
    the token file is unusable; ``close()`` never raises (the token file stays).
    """

    kind = "tcp_control"

    def __init__(
        self,
        registry: CommandRegistry,
        bus: EventBus,
        address: str,
        token_path: str,
        *,
        max_line: int = MAX_LINE,
        max_clients: int = MAX_CLIENTS,
        max_event_backlog: int = MAX_EVENT_BACKLOG,
        idle_timeout: float = IDLE_TIMEOUT,
        evict_grace: float = EVICT_GRACE,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
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
        self.host, self.port = parse_address(address)
        self.token_path = os.path.abspath(token_path)
        self.handshake_timeout = handshake_timeout
        self.token = ""

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound (the real port when 0 was asked)."""
        return self.host, self.port

    def start(self) -> None:
        """Load or create the token, bind, and start accepting."""
        if self._listener is not None or self._closing.is_set():
            raise RuntimeError("a TcpControlServer can be started only once")
        self.token = load_or_create_token(self.token_path)
        listener = self._bind()
        self.port = int(listener.getsockname()[1])
        self._start_accepting(listener)
        loopback = _is_loopback(self.host)
        log.info(
            "tcp_control_listening",
            host=self.host,
            port=self.port,
            key_file=self.token_path,
            loopback=loopback,
        )
        if not loopback:
            log.warning(
                "tcp_control_not_loopback",
                host=self.host,
                detail="reachable from other machines; anyone with the token controls the engine",
            )

    def _bind(self) -> socket.socket:
        where = f"{self.host}:{self.port}"
        try:
            infos = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except OSError as exc:
            raise EngineError(f"cannot resolve TCP control host {self.host}: {exc}") from exc
        family, kind, proto, _, sockaddr = infos[0]
        listener = socket.socket(family, kind, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(sockaddr)
            listener.listen(min(self.max_clients, 128))
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            raise EngineError(f"cannot listen on TCP {where}: {exc.strerror or exc}") from exc
        return listener

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one line each way
        try:
            peer = sock.getpeername()
        except OSError:
            sock.close()  # already gone
            return
        self._serve(sock, peer=f"{peer[0]}:{peer[1]}")

    def _connection(self, sock: socket.socket, name: str, **peer: Any) -> _Connection:
        return _TcpConnection(self, sock, name, **peer)

    def _closed(self) -> None:
        log.info("tcp_control_closed", host=self.host, port=self.port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
