"""Child processes for SIP peers: free ports, PDEATHSIG, logs and hard timeouts.

Every peer runs as a child of the test process. The child asks the kernel to
signal it when its parent dies (``PR_SET_PDEATHSIG``), so a pytest run that is
killed leaves no Kamailio, SIPp or baresip behind. Every wait here has a
deadline and fails with :class:`PeerError`, which carries the peer's log tail.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import pytest

__all__ = [
    "APT_PACKAGES",
    "PeerError",
    "PeerProcess",
    "free_port",
    "require",
    "start_with_retry",
    "tcp_port_listening",
    "udp_port_bound",
    "wait_until",
]

T = TypeVar("T")

PortKind = Literal["udp", "tcp", "both"]

LOOPBACK = "127.0.0.1"

#: Debian package that provides each peer binary (for the "missing" message).
APT_PACKAGES: dict[str, str] = {
    "sipp": "sip-tester",
    "kamailio": "kamailio",
    "kamcmd": "kamailio",
    "baresip": "baresip-core",
    "tshark": "tshark",
}

_PR_SET_PDEATHSIG = 1
# Resolved once in the parent: the pre-exec hook must not load libraries
# between fork and exec.
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


class PeerError(AssertionError):
    """A peer did not start, answer or finish in time (an assertion failure)."""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require(binary: str) -> str:
    """Return the path of ``binary``; skip the test if missing (fail when CI=true)."""
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin:/usr/bin")
    if path:
        return path
    package = APT_PACKAGES.get(binary, binary)
    message = (
        f"peer {binary} missing: install with apt-get install -y --no-install-recommends {package}"
    )
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _bind(kind: Literal["udp", "tcp"], port: int) -> socket.socket:
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET, sock_type)
    try:
        sock.bind((LOOPBACK, port))
    except OSError:
        sock.close()
        raise
    return sock


def free_port(kind: PortKind = "udp", *, span: int = 1) -> int:
    """A loopback port the OS considers free, for UDP, TCP or both.

    ``span`` > 1 asks for a run of consecutive free ports starting at the
    returned one (SIPp binds RTP on p and p+2; baresip binds SIP-TLS on p+1).
    The ports are released before returning, so a peer that fails to bind must
    be retried by its starter (they all do).
    """
    kinds: list[Literal["udp", "tcp"]] = ["udp", "tcp"] if kind == "both" else [kind]
    for _ in range(200):
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(_bind(kinds[0], 0))
            port = int(first.getsockname()[1])
            if port + span > 65535:
                continue
            try:
                for offset in range(span):
                    for k in kinds:
                        if offset == 0 and k == kinds[0]:
                            continue
                        stack.enter_context(_bind(k, port + offset))
            except OSError:
                continue
            return port
    raise PeerError(f"no free {kind} port run of {span} on {LOOPBACK}")


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.01,
    process: PeerProcess | None = None,
) -> T:
    """Poll ``probe`` until it returns something other than None/False.

    Fails after ``timeout`` seconds, or at once when ``process`` exits, with
    a message naming ``what`` and the process's log tail.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if process is not None and process.poll() is not None:
            raise PeerError(
                f"{process.name} exited (code {process.poll()}) while waiting for {what}\n"
                + process.log_tail()
            )
        if time.monotonic() >= deadline:
            tail = "\n" + process.log_tail() if process is not None else ""
            raise PeerError(f"timed out after {timeout:.1f}s waiting for {what}{tail}")
        time.sleep(interval)


def _pdeathsig_hook(parent_pid: int, death_signal: int) -> Callable[[], None]:
    def hook() -> None:
        # Runs in the child between fork and exec: no imports, no allocation
        # beyond the ctypes call itself.
        _prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent_pid:  # parent died before prctl took effect
            os._exit(1)

    return hook


class PeerProcess:
    """One child process with stdout/stderr in ``<log_dir>/<name>.{out,err}.log``.

    Must be started from the thread that will outlive it (the kernel delivers
    PDEATHSIG when the *thread* that forked exits): start peers from fixtures.
    ``death_signal`` is what the child gets when the test process dies:
    SIGTERM suits Kamailio (its main process then stops its workers); baresip
    needs SIGKILL (on SIGTERM it waits for un-REGISTER/BYE transactions).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        log_dir: Path,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        death_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = [os.fspath(a) for a in argv]
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"{name}.out.log"
        self.stderr_path = log_dir / f"{name}.err.log"
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
                preexec_fn=_pdeathsig_hook(os.getpid(), death_signal),
            )
        self.pid = self._popen.pid
        self.extra_logs: list[Path] = []

    def poll(self) -> int | None:
        return self._popen.poll()

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def wait(self, timeout: float) -> int:
        """Wait for exit; on timeout kill the process and raise PeerError."""
        try:
            return self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise PeerError(
                f"{self.name} did not finish within {timeout:.1f}s\n" + self.log_tail()
            ) from None

    def wait_quietly(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for exit; True if it exited. Never raises."""
        try:
            self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def send_signal(self, sig: int) -> None:
        if self._popen.poll() is None:
            self._popen.send_signal(sig)

    def kill(self) -> None:
        if self._popen.poll() is None:
            self._popen.kill()
        self._popen.wait(timeout=5)

    def terminate(self, timeout: float = 3.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Never raises."""
        if self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait(timeout=5)
        return int(self._popen.returncode)

    def _log_files(self) -> Iterator[Path]:
        yield self.stdout_path
        yield self.stderr_path
        yield from self.extra_logs

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of each log file, labelled by path."""
        parts: list[str] = []
        for path in self._log_files():
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            tail = text.splitlines()[-lines:]
            if tail:
                parts.append(f"--- {path} (last {len(tail)} lines) ---")
                parts.extend(tail)
        return "\n".join(parts) if parts else f"--- {self.name}: no log output ---"

    def __repr__(self) -> str:
        return f"<PeerProcess {self.name} pid={self.pid} rc={self._popen.returncode}>"


def start_with_retry(
    starter: Callable[[int], T],
    attempts: int = 3,
) -> T:
    """Run ``starter(attempt)`` until it succeeds; ports can be taken between
    :func:`free_port` and the peer's bind, so a failed start is retried."""
    error: PeerError | None = None
    for attempt in range(attempts):
        try:
            return starter(attempt)
        except PeerError as exc:
            error = exc
    assert error is not None
    raise error


def udp_port_bound(port: int) -> bool:
    """True when some socket is bound to local UDP ``port`` (from /proc/net/udp)."""
    return _proc_net_has(port, ("/proc/net/udp", "/proc/net/udp6"), listen_only=False)


def tcp_port_listening(port: int) -> bool:
    """True when some socket listens on local TCP ``port`` (from /proc/net/tcp)."""
    return _proc_net_has(port, ("/proc/net/tcp", "/proc/net/tcp6"), listen_only=True)


def _proc_net_has(port: int, tables: Sequence[str], *, listen_only: bool) -> bool:
    wanted = f":{port:04X}"
    for table in tables:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            listening = not listen_only or (len(fields) > 3 and fields[3] == "0A")
            if len(fields) > 3 and fields[1].endswith(wanted) and listening:
                return True
    return False
