"""The local control socket: newline-delimited JSON onto the command registry.

One accept thread and one daemon thread per client. A client is only ever a
channel onto :class:`~engine.commands.CommandRegistry`; commands run on the
client's thread (the engine marshals onto the SIP thread itself). Garbage from
one client never reaches another: every failure is an error reply on that
connection, or the end of that connection. The protocol is specified in
``docs/control-protocol.md``.

This module holds the Unix socket listener, :class:`ControlServer`. What it shares
with the TCP listener lives beside it: the wire format in :mod:`.protocol`, one
connection in :mod:`.connection`, event streams in :mod:`.eventstream`, and the
accept loop, client limit and idle eviction in :mod:`.listener` (whose names are
importable from here too).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import stat
import struct

import structlog

from ..bus import EventBus
from ..commands import CommandRegistry
from ..errors import EngineError
from .eventstream import MAX_EVENT_BACKLOG
from .listener import EVICT_GRACE, IDLE_TIMEOUT, MAX_CLIENTS, StreamServer, _refuse
from .paths import ensure_private_dir
from .protocol import MAX_LINE

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

_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


def _peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process that connected, from the kernel."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(data)
    return pid, uid, gid


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
