"""The real ``microsip`` executable end to end (docs/microsip.md#launcher and
#command-line; issue 3 "What must be shown").

Every test runs ``.venv/bin/microsip`` as a subprocess, exactly as an integration
would run ``MicroSIP.exe <args>``, against a real ``microsip-engine serve`` child
(:class:`ServeProcess`) and real peers on 127.0.0.1: SIPp, Kamailio, baresip.
What happened is judged by the peers (SIPp's counts, Kamailio's location table,
baresip's console) and by the engine's own event stream, read over the control
socket. Every wait has a hard timeout; nothing sleeps and hopes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from buildkit import EXPECTED
from enginekit import BASE_INI, EventLog, ServeProcess
from peers import wait_until
from peers.baresip import BaresipFactory
from peers.kamailio import Kamailio
from peers.sipp import SCENARIO_DIR, Sipp, SippFactory

import engine as engine_package
from engine.control import ControlClient

pytestmark = pytest.mark.peers

BIN = Path(sys.executable).parent
MICROSIP = BIN / "microsip"
MICROSIP_ENGINE = BIN / "microsip-engine"
STEP = 10.0  # the longest any single step may take
CLI_TIMEOUT = 20.0


# ---------------------------------------------------------------- helpers


def cli_env(tmp: Path, control: str) -> dict[str, str]:
    """The environment of a ``microsip`` run: every XDG directory private to the test."""
    dirs = {name: tmp / "xdg-env" / name for name in ("state", "config", "run")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = dict(os.environ)
    env.pop("MICROSIP_INI", None)
    env.update(
        MICROSIP_CONTROL=control,
        XDG_STATE_HOME=str(dirs["state"]),
        XDG_CONFIG_HOME=str(dirs["config"]),
        XDG_RUNTIME_DIR=str(dirs["run"]),
    )
    return env


class Cli:
    """Runs the real executables with a private environment."""

    def __init__(self, tmp: Path, control: str) -> None:
        self.env = cli_env(tmp, control)
        self.state_dir = Path(self.env["XDG_STATE_HOME"])

    def run(self, *args: str, exe: Path = MICROSIP) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(exe), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.run(*args)
        assert done.returncode == 0, f"microsip {args} exited {done.returncode}: {done.stderr}"
        assert done.stderr == "", done.stderr
        return done

    def rejected(self, *args: str) -> tuple[int, str]:
        """A refused command: non-zero exit, nothing on stdout, one line on stderr."""
        done = self.run(*args)
        assert done.returncode != 0, f"microsip {args} was accepted: {done.stdout}"
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got {done.stderr!r}"
        assert lines[0].startswith("microsip: ") and len(lines[0]) > len("microsip: ")
        return done.returncode, lines[0]


class Watch(EventLog):
    """Every engine event, streamed over the control socket (``subscribe``) on a thread."""

    def __init__(self, control: str) -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(STEP)
        self.sock.connect(control)
        self.sock.sendall(b'{"id":"watch","cmd":"subscribe"}\n')
        buf = b""
        while b"\n" not in buf:
            chunk = self.sock.recv(65536)
            assert chunk, "the engine closed the event stream at once"
            buf += chunk
        line, _, self._buf = buf.partition(b"\n")
        assert json.loads(line)["ok"] is True, line
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._read, name="watch", daemon=True)
        self.thread.start()

    def _feed(self, data: bytes) -> None:
        self._buf += data
        while b"\n" in self._buf:
            line, _, self._buf = self._buf.partition(b"\n")
            with self._cond:
                self.events.append(json.loads(line))
                self._cond.notify_all()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            self._feed(b"")
            while chunk := self.sock.recv(65536):
                self._feed(chunk)

    def new(self, kind: str, seen: set[str], what: str, **fields: Any) -> dict[str, Any]:
        """The first ``kind`` event of a SIP call not in ``seen`` (pjsua reuses call numbers,
        so calls are told apart by their Call-ID); adds it to ``seen``."""
        ev = self.wait(
            lambda e: (
                e["event"] == kind
                and e.get("sip_call_id") not in seen
                and all(e.get(k) == v for k, v in fields.items())
            ),
            STEP,
            what,
        )
        seen.add(ev["sip_call_id"])
        return ev

    def state(self, sip_call_id: str, state: str) -> dict[str, Any]:
        return self.wait_for("call_state", STEP, sip_call_id=sip_call_id, state=state)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(2)


class Engine:
    """A ``microsip-engine serve`` child, its event stream, a control client and the CLI."""

    def __init__(self, tmp: Path, ini: str | None, *extra: str) -> None:
        self.proc = ServeProcess(tmp, ini, *extra)
        self.control = self.proc.control
        self.events = Watch(self.control)
        self.client = ControlClient(self.control, timeout=STEP)
        self.cli = Cli(tmp, self.control)
        self.seen: set[str] = set()  # Call-IDs already claimed by a test step
        self.tmp = tmp
        self.callers = 0

    def uri(self, user: str = "100") -> str:
        """Our local account, for a SIPp UAC to call."""
        return f"sip:{user}@127.0.0.1:{self.proc.sip_port()}"

    def calls(self) -> dict[str, dict[str, Any]]:
        return {c["sip_call_id"]: c for c in self.client.request("calls")}

    def ring_in(self, sipp_factory: SippFactory, scenario: str, **kw: Any) -> tuple[Sipp, str]:
        """A SIPp UAC calls us from a caller of its own; returns once the call rings
        here (180 sent)."""
        self.callers += 1
        template = caller_scenario(self.tmp, scenario, f"caller{self.callers}")
        sipp = sipp_factory.uac(self.uri(), template, **kw)
        incoming = self.events.new("incoming_call", self.seen, "an incoming call")
        self.events.state(incoming["sip_call_id"], "early")
        return sipp, incoming["sip_call_id"]

    def outbound(self, state: str) -> str:
        """The Call-ID of our newest outbound call, once it reaches ``state``."""
        ev = self.events.new("call_state", self.seen, f"an outbound call {state}", direction="out")
        self.events.state(ev["sip_call_id"], state)
        return str(ev["sip_call_id"])

    def log_has(self, event: str, **fields: Any) -> bool:
        return any(
            e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
            for e in self.proc.log_entries()
        )

    def stop(self) -> None:
        self.client.close()
        self.events.close()
        self.proc.stop()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    started: list[Engine] = []

    def start(ini: str | None = BASE_INI, *extra: str) -> Engine:
        e = Engine(tmp_path, ini, *extra)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()


_FROM_USER = re.compile(r"(^\s*From:[^<\n]*<sip:)[^@>\n]*@", re.MULTILINE)


def caller_scenario(tmp: Path, scenario: str, caller: str) -> Path:
    """A SIPp UAC scenario whose From user is ``caller`` instead of ``sipp``: the engine,
    like MicroSIP, answers a second call from a contact it is already in a call with
    with 486 "Already in call with this contact" (docs/microsip.md#incoming-order)."""
    text, count = _FROM_USER.subn(
        rf"\g<1>{caller}@", (SCENARIO_DIR / f"{scenario}.xml").read_text()
    )
    assert count, f"{scenario}.xml has no From header to rewrite"
    path = tmp / "scenarios" / f"{scenario}_{caller}.xml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def account_ini(k: Kamailio, *users: str, active: int = 1) -> str:
    text = f"[Settings]\naccountId={active}\nenableLocalAccount=1\nsourcePort=0\n"
    for n, user in enumerate(users, 1):
        text += (
            f"[Account{n}]\nlabel={user}\nserver={k.address}\ndomain={k.domain}\n"
            f"username={user}\npassword={user}-secret\n"
        )
    return text


def add_contact(k: Kamailio, user: str, contact: str) -> None:
    """``Kamailio.add_contact`` for an all-digit user: kamcmd sends a bare ``5551234``
    as an integer (usrloc then refuses it), so the AOR goes as ``s:5551234``."""
    k.kamcmd("ul.add", "location", f"s:{user}", contact, "3600", "1.0", "s:0", "0", "0", "0")


def add_user(k: Kamailio, user: str, password: str) -> None:
    """``Kamailio.add_user`` for an all-digit user (same kamcmd integer problem)."""
    k.kamcmd("htable.sets", "users", f"s:{user}", password)


def peer_pid(control: str) -> int | None:
    """The pid of the process listening on ``control`` (SO_PEERCRED of a connection)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(control)
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid: int = struct.unpack("3i", creds)[0]
        return pid
    except OSError:
        return None
    finally:
        sock.close()


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def gone(pid: int) -> bool:
    return not alive(pid)


def serve_pids_for(control: str) -> list[int]:
    """Engines started with exactly this (unique, per-test) control socket path."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and control.encode() in argv:
            pids.append(int(entry.name))
    return pids


# ---------------------------------------------------------------- dialling


def test_dial_sip_uri_reaches_sipp_then_hangupall_and_exit(
    engine: Callable[..., Engine], sipp_factory: SippFactory
) -> None:
    """``microsip sip:100@127.0.0.1:<port>`` calls SIPp; ``/hangupall`` sends BYE;
    ``/exit`` stops the engine cleanly (exit 0, socket removed)."""
    e = engine()
    uas = sipp_factory.uas("uas_answer", bye_timeout_ms=15000)
    e.cli.ok(uas.uri("100"))
    call = e.outbound("confirmed")
    assert e.calls()[call]["remote_uri"] == uas.uri("100")
    e.cli.ok("/hangupall")
    e.events.state(call, "disconnected")
    result = uas.wait(STEP)
    assert result.successful == 1 and result.received("BYE") == 1
    started = time.monotonic()
    e.cli.ok("/exit")
    # /exit returns once the engine has stopped: its socket is already gone.
    assert not os.path.exists(e.control)
    assert e.log_has("stopping", reason="exit command")
    assert e.proc.proc.wait(5) == 0, e.proc.log_path.read_text()[-2000:]
    assert time.monotonic() - started < 4.0
    assert e.log_has("stopped")


def test_dial_bare_number_through_the_registered_account(
    kamailio: Kamailio, sipp_factory: SippFactory, engine: Callable[..., Engine]
) -> None:
    """``microsip 5551234`` with [Account1] alice at Kamailio: the call goes
    sip:5551234@<domain> through Kamailio to SIPp (dialled at once, or once
    REGISTER 200 arrives if the engine is not registered yet)."""
    uas = sipp_factory.uas("uas_answer", bye_timeout_ms=15000)
    add_contact(kamailio, "5551234", uas.uri("5551234"))
    e = engine(account_ini(kamailio, "alice"))
    e.cli.ok("5551234")  # no wait for the registration: the engine defers the dial
    call = e.outbound("confirmed")
    state = e.events.state(call, "confirmed")
    assert state["remote_uri"] == f"sip:5551234@{kamailio.domain}" and state["account"] == 1
    assert kamailio.registrations("alice")
    e.cli.ok("/hangupall")
    result = uas.wait(STEP)
    assert result.successful == 1 and result.received("BYE") == 1


def test_dial_refused_while_registration_fails_then_a_password_override_brings_it(
    kamailio: Kamailio, sipp_factory: SippFactory, engine: Callable[..., Engine], tmp_path: Path
) -> None:
    """alice's saved password is wrong, so REGISTER fails: ``microsip 5551234`` says
    so (the code and reason) and exits non-zero instead of deferring a call that would
    never go out (issue 13, item 3); nothing is sent. ``microsip /password:<right
    one>`` re-registers with the in-memory password, REGISTER 200 arrives and the dial
    then goes out to SIPp. The ini is not touched (the override is never saved)."""
    uas = sipp_factory.uas("uas_answer", bye_timeout_ms=15000)
    add_contact(kamailio, "5551234", uas.uri("5551234"))
    ini = tmp_path / "wrong.ini"
    ini.write_text(account_ini(kamailio, "alice").replace("alice-secret", "wrong"))
    saved = ini.read_bytes()
    e = engine(None, "--config", str(ini))
    wait_until(
        lambda: any(
            (a["account"], a["state"]) == (1, "failed") for a in e.client.request("accounts")
        ),
        STEP,
        "alice's registration to fail",
    )
    code, line = e.cli.rejected("5551234")
    assert code == 1
    assert "[Account1] is not registered: its last registration failed (40" in line, line
    assert e.calls() == {} and not e.events.of("call_state")
    assert not e.events.of("deferred_dial")

    e.cli.ok("/password:alice-secret")
    registered = e.events.wait_for("registration", STEP, account=1, state="registered")
    e.cli.ok("5551234")
    call = e.outbound("confirmed")
    first = next(ev for ev in e.events.events if ev.get("sip_call_id") == call)
    assert registered["time"] <= first["time"], "the call went out before REGISTER 200"
    assert kamailio.registrations("alice")
    assert ini.read_bytes() == saved
    e.cli.ok("/hangupall")
    assert uas.wait(STEP).received("BYE") == 1


# ---------------------------------------------------------------- answering, hanging up


def test_answer_and_quoted_msip_answer(
    engine: Callable[..., Engine], sipp_factory: SippFactory
) -> None:
    """``/answer`` and ``"msip:answer"`` (quotes in argv, as users write it) each
    answer a ringing SIPp call."""
    e = engine()
    first, call1 = e.ring_in(sipp_factory, "uac_wait_bye", bye_timeout_ms=15000)
    e.cli.ok("/answer")
    e.events.state(call1, "confirmed")
    second, call2 = e.ring_in(sipp_factory, "uac_wait_bye", bye_timeout_ms=15000)
    e.cli.ok('"msip:answer"')
    e.events.state(call2, "confirmed")
    assert {c["state"] for c in e.calls().values()} == {"confirmed"}
    e.cli.ok("/hangupall")
    for sipp in (first, second):
        result = sipp.wait(STEP)
        assert result.successful == 1 and result.received("BYE") == 1


def test_hangupall_spares_the_ringing_inbound_call_then_hangupincoming_rejects_it(
    engine: Callable[..., Engine], sipp_factory: SippFactory
) -> None:
    """One answered inbound call, one outbound call ringing at SIPp, one inbound call
    ringing here: ``/hangupall`` sends BYE and CANCEL and leaves the ringing inbound
    call ringing; ``/hangupincoming`` then rejects it."""
    e = engine()
    answered, talking = e.ring_in(sipp_factory, "uac_wait_bye", bye_timeout_ms=15000)
    e.client.request("answer")
    e.events.state(talking, "confirmed")
    ring = sipp_factory.uas("uas_ring", ring_timeout_ms=15000)
    e.cli.ok(ring.uri("ring"))
    calling = e.outbound("early")
    waiting, ringing = e.ring_in(sipp_factory, "uac_answer_or_busy")

    e.cli.ok("/hangupall")
    e.events.state(talking, "disconnected")
    e.events.state(calling, "disconnected")
    assert answered.wait(STEP).received("BYE") == 1
    assert ring.wait(STEP).received("CANCEL") == 1
    calls = e.calls()
    assert list(calls) == [ringing] and calls[ringing]["state"] == "early", calls
    assert not e.events.of("call_state", sip_call_id=ringing, state="disconnected")

    e.cli.ok("/hangupincoming")
    ended = e.events.state(ringing, "disconnected")
    assert 400 <= ended["code"] < 700, ended
    waiting.wait(STEP)  # SIPp got the final response and ended its call
    assert e.calls() == {}


def test_hangupcalling_cancels_only_unanswered_outbound_calls(
    engine: Callable[..., Engine], sipp_factory: SippFactory
) -> None:
    e = engine()
    answered, talking = e.ring_in(sipp_factory, "uac_wait_bye", bye_timeout_ms=15000)
    e.cli.ok("/answer")
    e.events.state(talking, "confirmed")
    waiting, ringing = e.ring_in(sipp_factory, "uac_answer_or_busy")
    ring = sipp_factory.uas("uas_ring", ring_timeout_ms=15000)
    e.cli.ok(ring.uri("ring"))
    calling = e.outbound("early")

    e.cli.ok("/hangupcalling")
    e.events.state(calling, "disconnected")
    assert ring.wait(STEP).received("CANCEL") == 1
    calls = e.calls()
    assert {k: c["state"] for k, c in calls.items()} == {talking: "confirmed", ringing: "early"}

    e.cli.ok("/hangupincoming")
    e.events.state(ringing, "disconnected")
    waiting.wait(STEP)
    assert e.calls()[talking]["state"] == "confirmed"
    e.cli.ok("/hangupall")
    assert answered.wait(STEP).received("BYE") == 1


# ---------------------------------------------------------------- accounts, passwords


def utf16_ini(text: str) -> bytes:
    """An ini as MicroSIP writes it: UTF-16LE with BOM, CRLF line ends."""
    return b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le")


def ini_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data.startswith(b"\xff\xfe"), "the ini is no longer UTF-16LE with BOM"
    return data[2:].decode("utf-16-le").split("\r\n")


def test_account_password_is_saved_then_account_2_is_switched_at_the_registrar(
    kamailio: Kamailio, sipp_factory: SippFactory, engine: Callable[..., Engine], tmp_path: Path
) -> None:
    """``/account:2 /password:x`` stores x in [Account2] (only that line changes,
    nothing is dialled); ``/account:2`` then registers bob with it at Kamailio,
    un-registers alice and saves accountId=2 (only that line changes);
    ``5551234 /account:1`` switches back and dials through alice once registered."""
    ini = tmp_path / "microsip.ini"
    text = (
        "; written by hand, kept as is\n"
        + account_ini(kamailio, "alice", "bob").replace("password=bob-secret", "password=old")
        + 'unknownKey=kept "as" is\n[Calls]\n0=5551234;Bob;0;1700000000;12;\n'
    )
    ini.write_bytes(utf16_ini(text))
    e = engine(None, "--config", str(ini))
    kamailio.wait_registrations("alice", 1, timeout=STEP)
    before = ini_lines(ini)

    e.cli.ok("/account:2 /password:x")
    after = ini_lines(ini)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [("password=old", "password=x")], changed
    assert after.index("password=x") > after.index("[Account2]")
    assert e.calls() == {} and not e.events.of("call_state")
    assert kamailio.registrations("bob") == [] and len(kamailio.registrations("alice")) == 1

    kamailio.add_user("bob", "x")
    e.cli.ok("/account:2")
    kamailio.wait_registrations("bob", 1, timeout=STEP)
    kamailio.wait_registrations("alice", 0, timeout=STEP)
    final = ini_lines(ini)
    changed = [(a, b) for a, b in zip(after, final, strict=True) if a != b]
    assert changed == [("accountId=1", "accountId=2")], changed
    accounts = {a["account"]: a["state"] for a in e.client.request("accounts")}
    assert accounts.get(2) == "registered" and 1 not in accounts, accounts
    assert e.calls() == {} and not e.events.of("call_state")

    uas = sipp_factory.uas("uas_answer", bye_timeout_ms=15000)
    add_contact(kamailio, "5551234", uas.uri("5551234"))
    e.cli.ok("5551234", "/account:1")
    call = e.outbound("confirmed")
    assert e.calls()[call]["account"] == 1
    kamailio.wait_registrations("alice", 1, timeout=STEP)
    kamailio.wait_registrations("bob", 0, timeout=STEP)
    changed = [(a, b) for a, b in zip(final, ini_lines(ini), strict=True) if a != b]
    assert changed == [("accountId=2", "accountId=1")], changed
    e.cli.ok("/hangupall")
    assert uas.wait(STEP).received("BYE") == 1


# ---------------------------------------------------------------- messages


def test_number_and_text_sends_a_sip_message_to_baresip(
    kamailio: Kamailio, baresip_factory: BaresipFactory, engine: Callable[..., Engine]
) -> None:
    """``microsip 101 Hello there`` → SIP MESSAGE "Hello there" to user 101 (baresip
    registered at Kamailio); non-ASCII text arrives intact; no call is made."""
    add_user(kamailio, "101", "101-secret")
    far = baresip_factory("b101")
    far.register("101", kamailio.domain, "101-secret")
    e = engine(account_ini(kamailio, "alice"))
    kamailio.wait_registrations("alice", 1, timeout=STEP)

    e.cli.ok("101", "Hello", "there")
    got = far.wait_message(lambda m: m.text == "Hello there", STEP)
    assert got.peer.startswith("sip:alice@"), got
    mark = len(far.messages())
    text = "Grüße, Zoë – 你好 ☎"
    e.cli.ok("101", *text.split(" "))
    far.wait_message(lambda m: m.text == text, STEP, since=mark)
    status = e.events.wait_for("message_status", STEP, code=200)
    assert status["to_uri"] == f"sip:101@{kamailio.domain}"
    assert e.calls() == {} and not e.events.of("call_state")


# ---------------------------------------------------------------- errors, no engine, cold start


def test_rejected_commands_print_one_line_and_exit_non_zero(
    engine: Callable[..., Engine],
) -> None:
    e = engine()
    code, line = e.cli.rejected("/answer")
    assert code == 1 and "no ringing inbound call" in line
    code, line = e.cli.rejected("/account:9")
    assert code == 1 and "Account9" in line
    code, line = e.cli.rejected("5551234")  # the local account has no domain
    assert code == 1 and "5551234" in line
    code, line = e.cli.rejected("/dtmf:12")
    assert code == 1 and "no call" in line
    code, line = e.cli.rejected("/hangup")  # not a MicroSIP command: a grammar error
    assert code == 2 and "/hangup" in line
    assert e.client.request("status")["calls"] == []  # still serving, nothing dialled


def test_answer_hangupall_exit_with_no_engine_do_nothing(tmp_path: Path) -> None:
    control = str(tmp_path / "ctl" / "control.sock")
    cli = Cli(tmp_path, control)
    for command in ("/answer", "/hangupall", "/exit"):
        done = cli.run(command)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), (command, done)
    assert not os.path.exists(os.path.dirname(control))  # no engine was started
    assert not (cli.state_dir / "microsip-engine" / "engine.log").exists()
    assert serve_pids_for(control) == []
    # The CLI stays light: no pjsua2, numpy or structlog is imported to forward a line.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(MICROSIP), "/answer"],
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    heavy = {m for m in imported if m.split(".")[0] in ("pjsua2", "numpy", "structlog")}
    assert "engine.cli.microsip" in imported and not heavy, sorted(heavy)
    assert not {m for m in imported if m.startswith(("engine._pj", "engine.manager"))}


def test_the_protocol_doc_lists_exactly_the_registered_commands(
    engine: Callable[..., Engine],
) -> None:
    """docs/control-protocol.md's command table against ``help`` of a running engine."""
    e = engine()
    described = {c["name"]: c for c in e.client.request("help")["commands"]}
    doc = (Path(__file__).parents[1] / "docs" / "control-protocol.md").read_text()
    table = doc.split("## Commands", 1)[1].split("###", 1)[0]
    rows = [r.split("|")[1:3] for r in table.splitlines() if r.startswith("| `")]
    documented = {name.strip().strip("`"): params for name, params in rows}
    assert set(documented) == set(described) | {"subscribe"}
    for name, command in described.items():
        for param in command["params"]:
            assert f"`{param}`" in documented[name], (name, param)


def test_cold_start_by_dialling_then_exit_then_cold_start_again(
    tmp_path: Path, sipp_factory: SippFactory
) -> None:
    """No engine running: ``microsip sip:100@...`` starts one in the background with
    the default configuration (the embedded default as a user's file, bound to
    loopback), and the call reaches SIPp. ``/exit`` returns
    once that engine has stopped (BYE sent, socket gone), so the next dial right after
    it cold-starts a fresh engine instead of reaching the one that is going away."""
    short = Path(tempfile.mkdtemp(prefix="mscold-"))  # AF_UNIX paths are short
    control = str(short / "ctl" / "control.sock")
    cli = Cli(tmp_path, control)
    # The embedded default, found where the engine looks for a user's file, with one
    # line added: bound to loopback, so the SDP never names this host's own address.
    default = (Path(engine_package.__file__).parent / "default.ini").read_text()
    user_ini = tmp_path / "xdg-env" / "config" / "microsip-engine" / "microsip.ini"
    user_ini.parent.mkdir(parents=True, exist_ok=True)
    user_ini.write_text(default.replace("[Engine]\n", "[Engine]\nbindAddress=127.0.0.1\n"))
    assert "bindAddress=127.0.0.1" in user_ini.read_text()
    pids: list[int] = []
    try:
        for round_ in (1, 2):
            uas = sipp_factory.uas("uas_answer", bye_timeout_ms=15000)
            cli.ok(uas.uri("100"))
            pid = peer_pid(control)
            assert pid is not None, "the background engine does not answer on its socket"
            assert pid not in pids, "the call went to the engine that was told to exit"
            pids.append(pid)
            assert os.getsid(pid) == pid, "the background engine is not in a session of its own"
            with ControlClient(control, timeout=STEP) as client:
                wait_until(
                    lambda: any(c["state"] == "confirmed" for c in client.request("calls")),
                    STEP,
                    f"cold-start call {round_} to be answered by SIPp",
                )
                status = client.request("status")
            assert [a["account"] for a in status["accounts"]] == [0]
            assert status["calls"][0]["remote_uri"] == uas.uri("100")
            cli.ok("/exit")  # with the call up
            assert not os.path.exists(control), "/exit returned before the engine stopped"
            result = uas.wait(STEP)
            assert result.successful == 1 and result.received("BYE") == 1
            wait_until(functools.partial(gone, pid), 5, "the background engine to exit")
        log = (cli.state_dir / "microsip-engine" / "engine.log").read_text()
        assert log.count(f"config={user_ini}") == 2, log  # the default, bound to loopback
    finally:
        pids += serve_pids_for(control)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(short, ignore_errors=True)


# ---------------------------------------------------------------- microsip-engine status / events


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_engine_status_json_and_events_stream(
    engine: Callable[..., Engine], sipp_factory: SippFactory
) -> None:
    e = engine()
    events = subprocess.Popen(
        [str(MICROSIP_ENGINE), "events"],
        env=e.cli.env,
        # Ctrl-C as in a terminal: a suite run in the background (a shell without
        # job control) would otherwise hand the child an ignored SIGINT.
        preexec_fn=_default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert events.stdout is not None
        for text in events.stdout:
            lines.put(text)

    threading.Thread(target=pump, name="events-stdout", daemon=True).start()
    try:
        # Subscribed once the engine logs a second subscription (ours is the first).
        e.proc.wait_log(
            lambda _: (
                sum(x.get("event") == "control_subscribed" for x in e.proc.log_entries()) >= 2
            ),
            STEP,
            "the events command to subscribe",
        )
        sipp, call = e.ring_in(sipp_factory, "uac_wait_bye", bye_timeout_ms=15000)

        status = json.loads(e.cli.run("status", "--json", exe=MICROSIP_ENGINE).stdout)
        assert status["capacity"] == {"max_calls": EXPECTED.max_calls, "calls": 1}
        assert [(a["account"], a["state"]) for a in status["accounts"]] == [(0, "none")]
        [c] = status["calls"]
        assert (c["sip_call_id"], c["direction"], c["state"]) == (call, "in", "early")
        assert c["remote_uri"].startswith("sip:caller1@127.0.0.1") and c["duration"] == 0.0

        e.cli.ok("/answer")
        e.events.state(call, "confirmed")
        text = e.cli.run("status", exe=MICROSIP_ENGINE)
        assert text.returncode == 0 and "in sip:caller1@127.0.0.1" in text.stdout, text
        assert "confirmed" in text.stdout
        e.cli.ok("/hangupall")
        assert sipp.wait(STEP).received("BYE") == 1

        states: list[str] = []
        deadline = time.monotonic() + STEP
        while "disconnected" not in states:
            left = deadline - time.monotonic()
            assert left > 0, f"no disconnected call_state from 'events'; got {states}"
            with contextlib.suppress(queue.Empty):
                event = json.loads(lines.get(timeout=left))
                if event["event"] == "call_state" and event["sip_call_id"] == call:
                    states.append(event["state"])
        assert states[0] in ("incoming", "early") and "confirmed" in states, states
        events.send_signal(signal.SIGINT)
        assert events.wait(5) == 0
    finally:
        if events.poll() is None:
            events.kill()
            events.wait(5)
