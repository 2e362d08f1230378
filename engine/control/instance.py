"""One engine per control socket, decided before any SIP traffic.

The control server's own lock is taken only once the engine has started, and by
then the SIP stack has REGISTERed (and, refusing to run, un-REGISTERs) the
account: on a PBX that keeps one contact per user that knocks the working phone
off. ``serve`` therefore claims the instance first, with this lock, and holds it
for the life of the process (the kernel releases it however the process ends).

Standard library only: imported by ``serve`` before pjsua2 is loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket

from ..errors import EngineError
from .paths import ensure_private_dir

__all__ = ["InstanceLock"]


def _in_use_message(path: str) -> str:
    return (
        f"another engine is already running on {path} "
        "(stop it with `microsip /exit`, or give this one another --control)"
    )


class InstanceLock:
    """An exclusive ``flock`` on ``<socket>.instance`` beside the control socket."""

    def __init__(self, socket_path: str) -> None:
        self.path = os.path.abspath(socket_path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Claim the socket path, or raise :class:`EngineError` naming who holds it."""
        ensure_private_dir(self.path)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self.path + ".instance", flags, 0o600)
        except OSError as exc:
            raise EngineError(f"cannot create {self.path}.instance: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise EngineError(_in_use_message(self.path), code="already_running") from exc
        self._fd = fd
        # An engine of an older version holds no instance lock: a live listener on
        # the socket is just as much "already running".
        if _listening(self.path):
            self.release()
            raise EngineError(_in_use_message(self.path), code="already_running")

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    except OSError:
        return True  # a timeout: a live listener with a full backlog
    finally:
        probe.close()
    return True
