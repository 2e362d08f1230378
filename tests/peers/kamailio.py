"""Kamailio as registrar + proxy with digest auth, no database.

One instance listens on UDP and TCP on the same OS-chosen port of 127.0.0.1.
Users live in an in-memory htable (realm ``127.0.0.1``), registrations in
memory (usrloc ``db_mode=0``). AORs carry the port (``sip:bob@127.0.0.1:<port>``)
because the config deliberately has no alias for 127.0.0.1 (see the notes).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from .probe import options_status
from .process import PeerError, PeerProcess, free_port, start_with_retry, wait_until

__all__ = ["DEFAULT_USERS", "Kamailio"]

TEMPLATE = Path(__file__).with_name("kamailio.cfg")

DEFAULT_USERS: dict[str, str] = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "carol": "carol-secret",
    "dave": "dave-secret",
}

_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
# A contact is "live" when usrloc reports a positive remaining lifetime.
_CONTACT_RE = re.compile(r"Address:\s*(\S+)\s*\n\s*Expires:\s*(\S+)")


# TLS 1.2 at least (the pjsua2 wheel's OpenSSL has nothing newer); clients unverified.
_TLS_CFG = """\
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = {cert}
private_key = {key}

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
"""


def _check_token(kind: str, value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"{kind} {value!r}: only [A-Za-z0-9_.+-] allowed in tests")
    return value


def _kam_str(kind: str, value: str) -> str:
    """A kamcmd string argument: ``s:`` keeps an all-digit user (``5551234``) from
    being sent as an integer, which Kamailio answers with 500 Not enough parameters."""
    return "s:" + _check_token(kind, value)


class Kamailio:
    """A running Kamailio; use :meth:`start` (the fixture does) and :meth:`stop`."""

    realm = "127.0.0.1"
    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        users: dict[str, str] | None = None,
        single_contact: bool = False,
        tls: tuple[Path, Path] | None = None,
        kamailio: str = "kamailio",
        kamcmd: str = "kamcmd",
    ) -> None:
        self.workdir = workdir
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.single_contact = single_contact
        #: (certificate, key) for a TLS listener on :attr:`tls_port`, or None.
        self.tls = tls
        self.tls_port = 0
        self._kamailio = kamailio
        self._kamcmd = kamcmd
        self.port = 0
        self.process: PeerProcess | None = None
        self.restarts = 0

    # -- addresses -------------------------------------------------------

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>`` (both UDP and TCP)."""
        return f"{self.host}:{self.port}"

    @property
    def domain(self) -> str:
        """The domain part of local AORs: ``127.0.0.1:<port>`` (port included)."""
        return self.address

    def aor(self, user: str) -> str:
        """``sip:<user>@127.0.0.1:<port>``."""
        return f"sip:{user}@{self.domain}"

    @property
    def ctl_socket(self) -> Path:
        return self.workdir / "kamailio_ctl"

    # -- lifecycle -------------------------------------------------------

    def _render_config(self) -> Path:
        users = "\n".join(
            f'\t$sht(users=>{_check_token("user", u)}) = "{_check_token("password", p)}";'
            for u, p in self.users.items()
        )
        text = TEMPLATE.read_text()
        text = text.replace("%%RUNDIR%%", str(self.workdir)).replace("%%USERS%%", users)
        cfg = self.workdir / "kamailio.cfg"
        cfg.write_text(text)
        if self.tls is not None:
            cert, key = self.tls
            (self.workdir / "tls.cfg").write_text(_TLS_CFG.format(cert=cert, key=key))
        return cfg

    def start(self, timeout: float = 5.0) -> Kamailio:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if len(str(self.ctl_socket)) > 100:  # sun_path is 108 bytes
            raise PeerError(f"run dir too long for a unix socket: {self.workdir}")
        cfg = self._render_config()
        start_with_retry(lambda attempt: self._start_once(cfg, attempt, timeout))
        return self

    def restart(self, timeout: float = 5.0, *, down_for: float = 0.0) -> Kamailio:
        """Stop and start again on the same port, ``down_for`` seconds later: every
        registration (kept in memory) and every TCP connection is lost."""
        self.stop()
        if down_for:
            time.sleep(down_for)  # the outage itself is what is being simulated
        self.restarts += 1
        cfg = self.workdir / "kamailio.cfg"
        self._start_once(cfg, 100 + self.restarts, timeout, port=self.port)
        return self

    def _start_once(self, cfg: Path, attempt: int, timeout: float, port: int = 0) -> None:
        self.port = port or free_port("both")
        listen = f"127.0.0.1:{self.port}"
        argv: list[str | Path] = [
            self._kamailio,
            "-f",
            cfg,
            "-DD",
            "-E",
            "-n",
            "2",
            "-m",
            "64",
            "-M",
            "8",
        ]
        argv += ["-Y", self.workdir, "-w", self.workdir]
        argv += ["-l", f"udp:{listen}", "-l", f"tcp:{listen}"]
        if self.single_contact:
            argv += ["-A", "SINGLE_CONTACT"]
        if self.tls is not None:
            self.tls_port = self.tls_port if port else free_port("tcp")
            argv += ["-A", "WITH_TLS", "-l", f"tls:127.0.0.1:{self.tls_port}"]
        process = PeerProcess(f"kamailio-{attempt}", argv, self.workdir)
        self.process = process
        try:
            wait_until(
                lambda: options_status(self.host, self.port, timeout=0.2) == 200,
                timeout,
                f"Kamailio on {listen} to answer OPTIONS with 200",
                process=process,
            )
            wait_until(self.ctl_socket.exists, timeout, "Kamailio ctl socket", process=process)
        except PeerError:
            process.terminate()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process else "(kamailio not started)"

    # -- control ---------------------------------------------------------

    def kamcmd(self, *args: str, timeout: float = 5.0) -> str:
        """Run ``kamcmd -s unix:<rundir>/kamailio_ctl <args>`` and return stdout.

        Raises PeerError when kamcmd fails or reports ``error:``.
        """
        argv = [self._kamcmd, "-s", f"unix:{self.ctl_socket}", *args]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PeerError(f"kamcmd {' '.join(args)} hung for {timeout}s") from None
        out = done.stdout + done.stderr
        if done.returncode != 0 or out.lstrip().startswith("error:"):
            raise PeerError(f"kamcmd {' '.join(args)} failed: {out.strip()}\n{self.log_tail()}")
        return done.stdout

    def add_user(self, name: str, password: str) -> None:
        """Add (or change) a user's password at run time."""
        self.kamcmd("htable.sets", "users", _kam_str("user", name), "s:" + password)
        self.users[name] = password

    def registrations(self, user: str) -> list[str]:
        """The live contact URIs registered for ``user`` (empty if none).

        Un-REGISTERed contacts vanish at once; expired ones within ~1 s
        (usrloc timer_interval is 1 s, and expired entries are filtered here).
        """
        try:
            out = self.kamcmd("ul.lookup", "location", _kam_str("user", user))
        except PeerError as exc:
            if "AOR not found" in str(exc):
                return []
            raise
        contacts = []
        for uri, expires in _CONTACT_RE.findall(out):
            if expires == "permanent" or (expires.lstrip("-").isdigit() and int(expires) > 0):
                contacts.append(uri)
        return contacts

    def wait_registrations(self, user: str, count: int, timeout: float = 5.0) -> list[str]:
        """Wait until exactly ``count`` live contacts are registered for ``user``."""

        def probe() -> list[str] | None:
            contacts = self.registrations(user)
            return contacts if len(contacts) == count else None

        return wait_until(
            probe,
            timeout,
            f"{count} registration(s) of {user} in Kamailio",
            interval=0.05,
            process=self.process,
        )

    def add_contact(self, user: str, contact: str, expires: int = 3600) -> None:
        """Register ``contact`` for ``user`` without a REGISTER (e.g. a SIPp UAS)."""
        self.kamcmd(
            "ul.add", "location", _kam_str("user", user), contact,
            str(expires), "1.0", "s:0", "0", "0", "0",
        )  # fmt: skip

    def remove_registrations(self, user: str) -> None:
        """Drop every contact of ``user`` (``ul.rm location <user>``)."""
        try:
            self.kamcmd("ul.rm", "location", _kam_str("user", user))
        except PeerError as exc:
            if "not found" not in str(exc).lower():
                raise

    def __repr__(self) -> str:
        return f"<Kamailio {self.address}>"
