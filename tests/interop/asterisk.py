"""A real Asterisk 22 for the interop tests, started through ``scripts/asterisk``.

The script runs Debian's own Asterisk on the configuration in
``interop/asterisk/`` (a Debian sid root file system and ``chroot`` here, where
no Docker engine runs). This handle gives it OS-chosen loopback ports and its
own instance name (its own state directory: CA, logs, DTMF files), and wraps
the script's ``up``/``down``/``cli``. Asterisk is not a child of the test
process (it daemonizes inside the chroot), so the fixture always runs ``down``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from peers.process import PeerError, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "asterisk"
CONF = ROOT / "interop" / "asterisk"

#: Users of interop/asterisk/pjsip.conf: name -> password.
USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _docker_works() -> bool:
    if not shutil.which("docker"):
        return False
    info = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=20)
    return info.returncode == 0


def missing_reason() -> str | None:
    """Why ``scripts/asterisk`` cannot run here, or None when it can."""
    if _docker_works():
        return None
    if os.geteuid() != 0:
        return "Asterisk interop needs root (chroot) or a Docker engine"
    cached = Path.home() / ".cache/microsip-engine/asterisk-rootfs/.microsip-engine-rootfs"
    if not shutil.which("mmdebstrap") and not cached.exists():
        return "Asterisk interop needs mmdebstrap: apt-get install -y mmdebstrap"
    return None


def require_asterisk() -> None:
    """Skip (fail under CI=true) when no Asterisk can be started here."""
    reason = missing_reason()
    if reason is None:
        return
    if _in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


class Asterisk:
    """One Asterisk instance on 127.0.0.1 with its own ports and state directory."""

    def __init__(self, instance: str, *, timeout: float = 600.0) -> None:
        self.instance = instance
        self.sip_port = free_port("both")
        self.tls_port = free_port("tcp")
        # A block of free UDP ports for RTP (Asterisk picks inside it).
        self.rtp_start = free_port("udp", span=40)
        self.env = dict(
            os.environ,
            ASTERISK_INSTANCE=instance,
            ASTERISK_SIP_PORT=str(self.sip_port),
            ASTERISK_TLS_PORT=str(self.tls_port),
            ASTERISK_RTP_START=str(self.rtp_start),
            ASTERISK_RTP_END=str(self.rtp_start + 39),
        )
        self.timeout = timeout
        self._background: list[subprocess.Popen[bytes]] = []
        self.state = Path(self._script("state-dir", timeout=30).strip())
        #: Seconds the last ``up`` took (the first one includes building the rootfs).
        self.up_seconds = 0.0
        self.up_output = ""

    # -- the script ------------------------------------------------------------------

    def _script(self, *args: str, timeout: float = 60.0, check: bool = True) -> str:
        try:
            done = subprocess.run(
                [str(SCRIPT), *args],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PeerError(f"scripts/asterisk {' '.join(args)}: no answer in {timeout}s") from exc
        if check and done.returncode != 0:
            raise PeerError(
                f"scripts/asterisk {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout}{done.stderr}\n{self.log_tail()}"
            )
        return done.stdout

    def up(self) -> Asterisk:
        start = time.monotonic()
        self.up_output = self._script("up", timeout=self.timeout)
        self.up_seconds = time.monotonic() - start
        return self

    def down(self) -> None:
        self._script("down", timeout=60, check=False)
        self.reap()

    def cli(self, command: str) -> str:
        return self._script("cli", command, timeout=30)

    # -- state -----------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        return self.state / "keys" / "ca.crt"

    def pid(self) -> int | None:
        try:
            pid = int((self.state / "run" / "asterisk.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def kill9(self) -> None:
        """Kill Asterisk the hard way (no BYE, no un-REGISTER, sockets just gone)."""
        pid = self.pid()
        assert pid is not None, "Asterisk is not running"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10, "Asterisk to die")

    def contacts(self, user: str) -> list[str]:
        """The contact URIs Asterisk holds for ``user`` (``pjsip show contacts``)."""
        out = self.cli("pjsip show contacts")
        return re.findall(rf"^\s*Contact:\s+{re.escape(user)}/(\S+)", out, re.M)

    def forget_contacts(self) -> None:
        """Drop every registered contact (they live in astdb, ``registrar/contact``),
        so that a test does not see contacts a previous test's engine left behind
        (one stopped while Asterisk was down could not un-REGISTER)."""
        self.cli("database deltree registrar/contact")

    def wait_contacts(self, user: str, present: bool, timeout: float = 15.0) -> list[str]:
        def probe() -> list[str] | None:
            found = self.contacts(user)
            return found if bool(found) == present else None

        if present:
            return wait_until(probe, timeout, f"a contact for {user} in Asterisk", interval=0.2)
        wait_until(lambda: probe() is not None, timeout, f"{user}'s contact gone", interval=0.2)
        return []

    def originate(self, user: str) -> None:
        """Have Asterisk call ``user``'s contact (``channel originate``), in the
        background: the CLI command only returns once the call is over."""
        proc = subprocess.Popen(
            [str(SCRIPT), "cli", f"channel originate PJSIP/{user} application Wait 1"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._background.append(proc)

    def reap(self) -> None:
        """Wait for the background CLI commands (they end when their call does)."""
        for proc in self._background:
            try:
                proc.wait(timeout=35)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._background.clear()

    def dtmf_heard(self, exten: str, timeout: float = 30.0) -> str:
        """What the DTMF reader on ``exten`` (6XX) wrote, once it has written it."""
        path = self.state / "spool" / "dtmf" / f"{exten}.txt"
        return wait_until(
            lambda: path.read_text().strip() if path.exists() else None,
            timeout,
            f"Asterisk's DTMF reader to write {path.name}",
            interval=0.1,
        )

    def log_tail(self, lines: int = 60) -> str:
        path = self.state / "log" / "messages.log" if hasattr(self, "state") else None
        if path is None or not path.exists():
            return "(no Asterisk log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def log_mark(self) -> int:
        path = self.state / "log" / "messages.log"
        return path.stat().st_size if path.exists() else 0

    def log_since(self, mark: int) -> str:
        with (self.state / "log" / "messages.log").open("rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")
