"""Build the native shim with CMake and run Windows programs headless under Wine.

How Wine runs headless here (native/README.md has the set-up):

* one private prefix per session, its ``user.reg`` seeded with the null
  graphics driver *before* the first ``wineboot`` (else CreateWindow fails
  with 1400 on a machine without a display);
* ``WINEDEBUG=-all``, private ``HOME``, a short private ``TMPDIR`` (the
  server's socket path must fit in 108 bytes), crash dialogs off;
* the session's wineserver runs first, in the foreground as our child, with
  its output in a file (pitfall 1: the first Wine process hands its stderr to
  every service, so a pipe would never reach EOF); every program's output goes
  to files;
* at the end ``wineserver -k``, wait, then anything still running in the
  prefix is killed by PID, and only then is the prefix deleted (pitfall 3).

Standard library plus ``tests/peers/process.py`` (child processes with
PDEATHSIG and logs); no pytest import here, so the bench can use it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from peers.process import PeerProcess, wait_until

__all__ = [
    "MINGW_GCC",
    "NATIVE_PACKAGES",
    "REPO",
    "TOOLCHAIN",
    "BuildError",
    "ShimInstall",
    "WineResult",
    "WineSession",
    "cmake_build",
    "run_ctest",
    "wait_for_file_text",
    "windows_path",
]

REPO = Path(__file__).resolve().parents[2]
TOOLCHAIN = REPO / "native" / "cmake" / "mingw-w64.cmake"
MINGW_GCC = "x86_64-w64-mingw32-gcc-win32"
#: Debian package of each tool (installed by scripts/install-native-deps).
NATIVE_PACKAGES = {
    "cmake": "cmake",
    "ctest": "cmake",
    "gcc": "gcc",
    MINGW_GCC: "gcc-mingw-w64-x86-64-win32",
    "wine": "wine",
    "wineserver": "wine",
}

_USER_REG = """WINE REGISTRY Version 2
#arch=win64

[Software\\\\Wine\\\\Drivers]
"Graphics"="null"

[Software\\\\Wine\\\\WineDbg]
"ShowCrashDialog"=dword:00000000
"""


class BuildError(AssertionError):
    """CMake configure/build/test failed; the message carries the log tail."""


def _run_logged(
    argv: Sequence[str | os.PathLike[str]],
    log: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run to completion with output appended to ``log`` (never a pipe); -1 on timeout."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"$ {' '.join(map(str, argv))}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                [os.fspath(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env=None if env is None else dict(env),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return -1
    return int(proc.returncode)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def cmake_build(build_dir: Path, *, windows: bool, log: Path, timeout: float = 300.0) -> Path:
    """Configure and build the top-level CMakeLists.txt into ``build_dir``.

    ``windows``: cross-build with the mingw-w64 toolchain file (MicroSIP.exe,
    copydata-send.exe, test_shim_core.exe); else a host build of the unit
    tests. Returns the directory holding the built programs.
    """
    configure = ["cmake", "-S", REPO, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release"]
    if windows:
        configure.append(f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN}")
    for step in (configure, ["cmake", "--build", build_dir, "--parallel", "4"]):
        code = _run_logged(step, log, timeout)
        if code != 0:
            raise BuildError(f"{' '.join(map(str, step))} failed ({code}):\n{_tail(log)}")
    return build_dir / "native"


def run_ctest(build_dir: Path, log: Path, env: Mapping[str, str] | None = None) -> None:
    """``ctest`` in ``build_dir`` (output to ``log``); BuildError when a test fails."""
    argv = ["ctest", "--test-dir", build_dir, "--output-on-failure", "--timeout", "60"]
    code = _run_logged(argv, log, 120, env)
    if code != 0:
        raise BuildError(f"ctest failed ({code}):\n{_tail(log, 60)}")


def windows_path(path: Path) -> str:
    """The Windows name of a Unix path under Wine (drive Z: is the root)."""
    return "Z:" + str(path.resolve()).replace("/", "\\")


@dataclass(frozen=True)
class WineResult:
    returncode: int
    stdout: str

    def lines(self) -> list[str]:
        return self.stdout.splitlines()


class WineSession:
    """A private Wine prefix and its running wineserver, for one test session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = root / "prefix"
        self.logs = root / "logs"
        self.home = root / "home"
        # Short, private and ours: the server socket lives below it (108-byte limit),
        # and wineserver leaves a wine-* directory there.
        self.tmpdir = Path(tempfile.mkdtemp(prefix="mw", dir="/tmp"))
        self.env: dict[str, str] = {
            k: v for k, v in os.environ.items() if k not in {"DISPLAY", "WAYLAND_DISPLAY"}
        }
        self.env.update(
            WINEPREFIX=str(self.prefix),
            WINEARCH="win64",
            WINEDEBUG="-all",
            WINEDLLOVERRIDES="mscoree,mshtml,winemenubuilder.exe,winedbg.exe=d",
            HOME=str(self.home),
            TMPDIR=str(self.tmpdir),
        )
        self.server: PeerProcess | None = None
        self._spawned: list[PeerProcess] = []
        self._count = 0

    # -- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> WineSession:
        """Seed the prefix, start its wineserver, boot it (3-14 s the first time)."""
        self.prefix.mkdir(parents=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.prefix / "user.reg").write_text(_USER_REG)  # before the first wineboot
        # Foreground (-f) so it is our child (PDEATHSIG: a killed test run takes it
        # down), persistent (-p) so the session stays warm between programs.
        self.server = PeerProcess("wineserver", ["wineserver", "-f", "-p"], self.logs, env=self.env)
        wait_until(self._server_socket, 10.0, "the wineserver socket", process=self.server)
        result = self.run(["cmd", "/c", "exit"], timeout=timeout, name="wineboot")
        if result.returncode != 0 or not (self.prefix / ".update-timestamp").exists():
            raise BuildError(f"wine prefix boot failed ({result.returncode}):\n{self.log_tail()}")
        return self

    def _server_socket(self) -> bool:
        return any(self.tmpdir.glob("wine-*/server-*/socket"))

    def close(self) -> None:
        """Stop every Wine process of the prefix, then delete prefix and tmp dirs."""
        for proc in self._spawned:
            if proc.poll() is None:
                proc.terminate(timeout=2.0)
        if self.server is not None and self.server.poll() is None:
            _run_logged(["wineserver", "-k"], self.logs / "wineserver-k.log", 15, env=self.env)
            if not self.server.wait_quietly(10.0):
                self.server.kill()
        # Services started by Wine itself are not our children: find them by the
        # prefix in their environment, and kill them by PID (pitfall 3).
        for pid in _pids_with_env("WINEPREFIX", str(self.prefix)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.prefix, ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> WineSession:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- programs ----------------------------------------------------------------

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self._count:03d}-{hint}"

    def spawn(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        name: str = "wine",
        env: Mapping[str, str] | None = None,
    ) -> PeerProcess:
        """Start ``wine <argv>`` (output in ``logs/<n>-<name>.out.log``); the PID
        is the Windows program's own (pitfall 9)."""
        full_env = dict(self.env, **(env or {}))
        proc = PeerProcess(self._name(name), ["wine", *argv], self.logs, env=full_env)
        self._spawned.append(proc)
        return proc

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        timeout: float = 30.0,
        name: str = "wine",
        env: Mapping[str, str] | None = None,
    ) -> WineResult:
        """Run ``wine <argv>`` to completion; fails (PeerError) after ``timeout``."""
        proc = self.spawn(argv, name=name, env=env)
        code = proc.wait(timeout)
        self._spawned.remove(proc)
        text = proc.stdout_path.read_text(errors="replace").replace("\r\n", "\n")
        return WineResult(code, text)

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log"))[-8:]:
            parts.append(f"--- {path.name} ---\n{_tail(path, lines)}")
        return "\n".join(parts)


def _pids_with_env(key: str, value: str) -> list[int]:
    """PIDs of our processes whose environment has ``key=value``."""
    wanted = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for_file_text(path: Path, needle: str, timeout: float) -> str:
    """Wait until ``path`` contains ``needle``; returns the file's text."""

    def text() -> str | None:
        try:
            found = path.read_text(errors="replace")
        except FileNotFoundError:
            return None
        return found if needle in found else None

    return wait_until(text, timeout, f"{needle!r} in {path}", interval=0.02)


class ShimInstall:
    """``MicroSIP.exe`` in a directory of its own with ``microsip-shim.ini`` beside
    it -- the layout a Windows user installs -- plus the test sender."""

    def __init__(self, session: WineSession, programs: Path, directory: Path) -> None:
        self.session = session
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("MicroSIP.exe", "copydata-send.exe"):
            shutil.copy2(programs / name, directory / name)
        self.exe = directory / "MicroSIP.exe"
        self.sender = directory / "copydata-send.exe"
        self.ini = directory / "microsip-shim.ini"
        self.log = directory / "microsip-shim.log"
        self.residents: list[PeerProcess] = []

    def configure(self, port: int, token_file: Path, host: str = "127.0.0.1", **more: str) -> None:
        lines = [
            "[Engine]",
            f"host={host}",
            f"port={port}",
            f"tokenFile={windows_path(token_file)}",
        ]
        lines += [f"{key}={value}" for key, value in more.items()]
        self.ini.write_text("\r\n".join(lines) + "\r\n", encoding="ascii")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace").replace("\r\n", "\n")
        except FileNotFoundError:
            return ""

    def start_resident(self, timeout: float = 15.0) -> PeerProcess:
        """``MicroSIP.exe`` with no arguments and no resident: it becomes the resident."""
        proc = self.session.spawn([self.exe], name="resident")
        self.residents.append(proc)
        found = self.send("--find-only", "--wait", str(int(timeout * 1000)), timeout=timeout + 5)
        if found.returncode != 0:
            raise AssertionError(f"no MicroSIP window: {found.stdout}\n{self.log_text()}")
        return proc

    def close(self) -> None:
        """Stop the residents: ours by PID, one the launcher started with ``/exit``."""
        for proc in self.residents:
            proc.terminate()
        if self.send("--find-only").returncode == 0:
            self.launch("/exit")

    def send(self, *args: str, timeout: float = 30.0) -> WineResult:
        """Run copydata-send.exe with ``args``."""
        return self.session.run([self.sender, *args], timeout=timeout, name="send")

    def launch(self, *args: str, timeout: float = 30.0) -> WineResult:
        """Run ``MicroSIP.exe <args>`` as an integration does."""
        return self.session.run([self.exe, *args], timeout=timeout, name="launch")
