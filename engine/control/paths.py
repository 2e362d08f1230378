"""Where the control socket lives, and the private directory that guards it.

Standard library only (plus the stdlib-only ``engine.errors``): the ``microsip``
CLI imports this and must start fast.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from ..errors import EngineError

__all__ = ["ENV_VAR", "SOCKET_NAME", "default_socket_path", "ensure_private_dir"]

#: Overrides the socket path when set (and not empty).
ENV_VAR = "MICROSIP_CONTROL"
SOCKET_NAME = "control.sock"
_DIR_NAME = "microsip-engine"


def default_socket_path(environ: Mapping[str, str] | None = None) -> str:
    """``$MICROSIP_CONTROL``, else ``$XDG_RUNTIME_DIR/microsip-engine/control.sock``
    (when that is a directory), else ``/tmp/microsip-engine-<uid>/control.sock``."""
    env = os.environ if environ is None else environ
    explicit = env.get(ENV_VAR, "")
    if explicit:
        return explicit
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, _DIR_NAME, SOCKET_NAME)
    return os.path.join("/tmp", f"{_DIR_NAME}-{os.getuid()}", SOCKET_NAME)


def ensure_private_dir(socket_path: str) -> str:
    """Make sure the directory holding ``socket_path`` is ours alone; returns it.

    A missing directory is created with mode 0700 (its parents with the default
    mode). An existing one must be a real directory (not a symlink) owned by the
    effective uid; if its mode lets the group or others in, it is tightened to 0700
    -- except a sticky shared directory such as ``/tmp`` itself, which is refused.
    Anything else raises :class:`EngineError` naming the directory: that stops
    another user from pre-creating it to hijack or spy on the socket.
    """
    directory = os.path.dirname(os.path.abspath(socket_path))
    parent = os.path.dirname(directory)
    if parent:
        os.makedirs(parent, exist_ok=True)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise EngineError(f"cannot create control directory {directory}: {exc.strerror}") from exc
    st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode):
        raise EngineError(f"control directory {directory} is a symlink; refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise EngineError(f"control directory {directory} is not a directory")
    if st.st_uid != os.geteuid():
        raise EngineError(
            f"control directory {directory} is owned by uid {st.st_uid}, not by us "
            f"(uid {os.geteuid()}); remove it or choose another path"
        )
    if st.st_mode & stat.S_ISVTX:
        raise EngineError(f"control directory {directory} is a shared (sticky) directory")
    if st.st_mode & 0o077:
        os.chmod(directory, 0o700)
    return directory
