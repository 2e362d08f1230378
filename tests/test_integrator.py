"""Issue 13, "an integrator's first hour": no silent failures, one way to find the engine."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from enginekit import BASE_INI, Engines, ServeProcess, write_ini
from peers.kamailio import Kamailio
from peers.process import wait_until
from peers.sipp import SippFactory

BIN = Path(sys.executable).parent
STEP = 20.0
SERVE = [sys.executable, "-m", "engine", "serve", "--bind", "127.0.0.1", "--sip-port", "0"]


@pytest.fixture
def serve() -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for proc in started:
        proc.stop()


@pytest.fixture
def udp_trap() -> Iterator[socket.socket]:
    """A loopback UDP socket standing in for a registrar: it only counts what arrives."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(65536))
        except BlockingIOError:
            return out


def registrar_ini(port: int) -> str:
    return f"""[Settings]
accountId=1
enableLocalAccount=0
sourcePort=0
[Account1]
server=127.0.0.1:{port}
domain=127.0.0.1
username=alice
password=alice-secret
"""


def test_a_second_engine_on_a_busy_socket_sends_no_sip_at_all(
    tmp_path: Path, serve: list[ServeProcess], udp_trap: socket.socket
) -> None:
    """Item 1: the single-instance lock is taken before the SIP stack starts, so the
    refused engine never REGISTERs (and never un-REGISTERs the working phone)."""
    first = ServeProcess(tmp_path, BASE_INI)
    serve.append(first)
    ini = write_ini(tmp_path / "second.ini", registrar_ini(udp_trap.getsockname()[1]))
    second = subprocess.run(
        [*SERVE, "--control", first.control, "--config", str(ini), "--log-format", "json"],
        env=first.env,
        capture_output=True,
        text=True,
        timeout=STEP,
        stdin=subprocess.DEVNULL,
    )
    assert second.returncode == 1, second.stderr
    assert drain(udp_trap) == [], "the refused engine sent SIP to the registrar"
    assert "another engine is already running on" in second.stderr
    assert "microsip /exit" in second.stderr  # says how to get out of it
    assert first.proc.poll() is None
    assert first.client().request("status")["sip"]


# ------------------------------------------------------ item 2: one rule to find it


def private_env(tmp: Path, **extra: str) -> dict[str, str]:
    """No MICROSIP_* from the caller; every XDG directory private to the test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROSIP_")}
    for name in ("STATE", "CONFIG", "RUNTIME", "DATA"):
        path = tmp / "xdg" / name.lower()
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        env[f"XDG_{name}_HOME" if name != "RUNTIME" else "XDG_RUNTIME_DIR"] = str(path)
    env.update(extra)
    return env


def run_tool(exe: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / exe), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP,
        stdin=subprocess.DEVNULL,
    )


def socket_ini(control: str, extra: str = "") -> str:
    return f"""[Settings]
accountId=1
enableLocalAccount=1
sourcePort=0
[Account1]
domain=example.invalid
username=carol
[Engine]
controlSocket={control}
bindAddress=127.0.0.1
{extra}"""


def test_every_tool_finds_the_socket_the_ini_names(
    tmp_path: Path, serve: list[ServeProcess]
) -> None:
    """Item 2: ``--config`` or ``MICROSIP_INI`` leads status/events/cmd to the ini's
    controlSocket; MICROSIP_CONTROL and --control still win."""
    engine = ServeProcess(tmp_path, BASE_INI)
    serve.append(engine)
    ini = write_ini(tmp_path / "located.ini", socket_ini(engine.control))
    env = private_env(tmp_path)
    by_flag = run_tool("microsip-engine", "status", "--json", "--config", str(ini), env=env)
    assert by_flag.returncode == 0, by_flag.stderr
    assert json.loads(by_flag.stdout)["control"] == engine.control
    by_env = private_env(tmp_path, MICROSIP_INI=str(ini))
    for args in (("status",), ("cmd", "calls")):
        done = run_tool("microsip-engine", *args, env=by_env)
        assert done.returncode == 0, (args, done.stderr)
    # MICROSIP_CONTROL beats the ini; --control beats both.
    elsewhere = str(tmp_path / "nowhere" / "control.sock")
    done = run_tool("microsip-engine", "status", env={**by_env, "MICROSIP_CONTROL": elsewhere})
    assert done.returncode == 1 and elsewhere in done.stderr
    done = run_tool(
        "microsip-engine",
        "status",
        "--control",
        engine.control,
        env={**by_env, "MICROSIP_CONTROL": elsewhere},
    )
    assert done.returncode == 0, done.stderr


def test_not_running_names_where_it_looked_and_how_to_change_it(tmp_path: Path) -> None:
    """Item 2: the message is the whole diagnosis, for each tool."""
    control = str(tmp_path / "ctl" / "control.sock")
    ini = write_ini(tmp_path / "located.ini", socket_ini(control))
    env = private_env(tmp_path)
    for args in (("status",), ("events",), ("cmd", "calls")):
        done = run_tool("microsip-engine", *args, "--config", str(ini), env=env)
        assert done.returncode == 1, (args, done.stdout)
        (line,) = done.stderr.splitlines()
        assert control in line and f"controlSocket in {ini}" in line, line
        assert "--control" in line and "MICROSIP_CONTROL" in line and "--config" in line, line


def test_a_cold_start_runs_the_engine_the_ini_describes(
    tmp_path: Path, udp_trap: socket.socket
) -> None:
    """Item 2: ``microsip`` finds no engine on the ini's socket, starts one *with that
    ini* on that socket, and the call leaves from it."""
    control = str(tmp_path / "ctl" / "control.sock")
    ini = write_ini(tmp_path / "located.ini", socket_ini(control))
    env = private_env(tmp_path, MICROSIP_INI=str(ini))
    target = f"sip:trap@127.0.0.1:{udp_trap.getsockname()[1]}"
    try:
        done = run_tool("microsip", target, env=env)
        assert done.returncode == 0, done.stderr
        status = run_tool("microsip-engine", "status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        accounts = json.loads(status.stdout)["accounts"]
        assert "sip:carol@example.invalid" in [a["uri"] for a in accounts]
        assert json.loads(status.stdout)["control"] == control
    finally:
        assert run_tool("microsip", "/exit", env=env).returncode == 0
    assert any(b"INVITE sip:trap@" in d for d in drain(udp_trap))


# ------------------------------------------- item 3: a deferred dial never goes silent


def test_a_deferred_dial_expires_on_its_own_deadline(
    tmp_path: Path, udp_trap: socket.socket
) -> None:
    """Item 3: the registrar never answers, so no registration event comes; the
    deferred dial still expires on its deadline with a ``deferred_dial`` event, and no
    INVITE ever leaves."""
    engines = Engines(tmp_path)
    try:
        manager, events = engines.start(registrar_ini(udp_trap.getsockname()[1]))
        manager.deferred_dial_ttl = 1.0
        assert manager.dial_when_registered("5551234") is None
        waiting = events.wait_for("deferred_dial", STEP, state="waiting")
        dropped = events.wait_for("deferred_dial", STEP, state="dropped")
        assert (dropped["account"], dropped["target"]) == (1, "5551234")
        assert dropped["reason"] == "not registered within 1 s"
        assert dropped["time"] - waiting["time"] >= 1.0
        assert [a.state for a in manager.accounts() if a.account == 1] == ["registering"]
    finally:
        engines.stop_all()
    sent = drain(udp_trap)
    assert sent and all(d.startswith(b"REGISTER ") for d in sent)


# ---------------------------------------- item 4: help, version and bogus targets


def test_help_version_and_bogus_targets_place_no_call_and_start_no_engine(
    tmp_path: Path,
) -> None:
    """Item 4: ``--help``/``-h`` print the usage, ``--version`` the version (exit 0);
    an unknown ``msip:`` verb and targets that are no number, name or SIP URI are
    refused (exit 2, one line naming the problem). None of them starts an engine."""
    control = tmp_path / "ctl" / "control.sock"
    env = private_env(tmp_path, MICROSIP_CONTROL=str(control))
    try:
        for flag in ("--help", "-h"):
            done = run_tool("microsip", flag, env=env)
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith("usage: microsip") and "/hangupall" in done.stdout
        done = run_tool("microsip", "--version", env=env)
        assert (done.returncode, done.stdout) == (0, "microsip (microsip-engine 0.1.0)\n")
        done = run_tool("microsip-engine", "--version", env=env)
        assert (done.returncode, done.stdout) == (0, "microsip-engine 0.1.0\n")
        for args, fragment in (
            (("msip:bogus",), "unknown msip: verb 'bogus'"),
            (("'",), "is not a number, a name or a SIP URI"),
            (("javascript:alert(1)",), "is not a number, a name or a SIP URI"),
        ):
            done = run_tool("microsip", *args, env=env)
            assert done.returncode == 2, (args, done.stderr)
            (line,) = done.stderr.splitlines()
            assert line.startswith("microsip: ") and fragment in line, line
        assert not control.exists(), "a refused command started an engine"
    finally:
        if control.exists():
            run_tool("microsip", "/exit", env=env)


# ---------------------------------------------------- item 7: typos are not silent


def test_near_miss_keys_and_a_registrar_without_password_are_warned(tmp_path: Path) -> None:
    """Item 7: unknown keys stay, but a near miss of a key the engine reads is named
    with the key it resembles (and its line); real MicroSIP keys and exact keys in
    any case are not; an account with a server and no password is warned."""
    from engine.config import load_config

    ini = write_ini(
        tmp_path / "typos.ini",
        """[Settings]
accountId=1
autoAnswr=all
AA=1
volumeRing=80
AUTOANSWER=all
[Account1]
server=127.0.0.1
domain=127.0.0.1
username=alice
pasword=secret
Registerrefersh=60
[Account2]
server=127.0.0.1
domain=127.0.0.1
username=bob
password=bob-secret
unrelatedThing=1
[Engine]
logLevle=debug
[Shortcuts]
pasword=not checked here
""",
    )
    config = load_config(ini)
    assert list(config.warnings) == [
        "[Settings] autoAnswr: unknown key (line 3); did you mean autoAnswer?",
        "[Account1] pasword: unknown key (line 11); did you mean password?",
        "[Account1] Registerrefersh: unknown key (line 12); did you mean registerRefresh?",
        "[Engine] logLevle: unknown key (line 20); did you mean logLevel?",
        "[Account1] has server=127.0.0.1 but no password: the registrar will refuse it "
        "(add the password, in plaintext)",
    ]
    assert "secret" not in " ".join(config.warnings)
    assert config.document.get("Account1", "pasword") == "secret"  # kept, as MicroSIP does


# ------------------------------------------------------------- item 6: the logs


def serve_once(tmp: Path, ini: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """A ``serve`` expected to stop on its own (a refusal), JSON log on stderr."""
    path = write_ini(tmp / "once.ini", ini)
    argv = [*SERVE[:-2], "--config", str(path), "--log-format", "json", *extra]
    argv += ["--control", str(tmp / "once" / "control.sock")]
    return subprocess.run(
        argv,
        env=private_env(tmp),
        capture_output=True,
        text=True,
        timeout=STEP,
        stdin=subprocess.DEVNULL,
    )


def levels(proc: ServeProcess, level: str) -> list[dict[str, object]]:
    return [e for e in proc.log_entries() if e.get("level") == level]


def test_an_explicit_source_port_that_is_taken_is_refused_naming_it(tmp_path: Path) -> None:
    """Item 6: ``sourcePort=N`` is what the user asked for: taken, the engine refuses
    to start (naming N) instead of silently listening somewhere else."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        ini = BASE_INI.replace("sourcePort=0", f"sourcePort={port}")
        done = serve_once(tmp_path, ini)
    assert done.returncode == 1, done.stderr[-2000:]
    failed = [json.loads(x) for x in done.stderr.splitlines() if '"start_failed"' in x]
    assert failed and f"binding SIP port {port}" in str(failed[0]["error"]), done.stderr
    assert '"ready"' not in done.stderr


class AutoPortServe(ServeProcess):
    """``serve`` with no ``--sip-port`` (the ini's sourcePort decides), JSON log."""

    def __init__(self, tmp: Path, ini: str, *extra: str) -> None:
        self.tmp = tmp
        self.control = str(tmp / "ctl" / "control.sock")
        self.log_path = tmp / "serve.log"
        self.env = private_env(tmp)
        argv = [*SERVE[:-2], "--control", self.control, "--log-format", "json", *extra]
        argv += ["--config", str(write_ini(tmp / "serve.ini", ini))]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=self.env
        )
        self.ready = self.wait_log(lambda e: e.get("event") == "ready", STEP, "the ready line")


def test_a_taken_default_port_gives_one_warning_naming_the_port_used(
    tmp_path: Path, serve: list[ServeProcess]
) -> None:
    """Item 6: with ``sourcePort=0`` (auto) and 5060 taken, one warning says which port
    SIP got instead, and nothing is logged as an error."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with contextlib.suppress(OSError):  # if someone else holds it: taken either way
        holder.bind(("127.0.0.1", 5060))
    try:
        proc = AutoPortServe(tmp_path, BASE_INI)
        serve.append(proc)
    finally:
        holder.close()
    used = proc.sip_port()
    assert used != 5060
    warnings = [e for e in levels(proc, "warning") if e["event"] == "sip_port_in_use"]
    assert len(warnings) == 1 and (warnings[0]["wanted"], warnings[0]["used"]) == (5060, used)
    assert f"SIP listens on {used} instead" in str(warnings[0]["detail"])
    assert levels(proc, "error") == []


def alice_ini(kamailio: Kamailio, password: str, extra: str = "") -> str:
    account = f"server={kamailio.address}\ndomain={kamailio.domain}\nusername=alice\n"
    return f"[Settings]\naccountId=1\n[Account1]\n{account}password={password}\n{extra}"


def test_milestones_at_info_and_no_error_for_our_own_looped_mwi_subscribe(
    tmp_path: Path, serve: list[ServeProcess], kamailio: Kamailio, sipp_factory: SippFactory
) -> None:
    """Item 6: one info line when the account registers and when a call starts and
    ends; with ``voicemailNumber`` the registrar loops our own MWI SUBSCRIBE back
    to us, and that expected refusal (489 Bad Event) is not logged as an error."""
    ini = alice_ini(kamailio, "alice-secret", "voicemailNumber=*97\n")
    proc = ServeProcess(tmp_path, ini, "--log-level", "info")
    serve.append(proc)
    proc.wait_log(lambda e: e.get("event") == "account_registered", STEP, "account_registered")
    uas = sipp_factory.uas("uas_answer", bye_timeout_ms=15000)
    client = proc.client()
    call = client.request("dial", target=uas.uri("bob"))["call"]
    proc.wait_log(lambda e: e.get("event") == "call_started", STEP, "call_started")
    client.request("hangup", call=call)
    ended = proc.wait_log(lambda e: e.get("event") == "call_ended", STEP, "call_ended")
    assert ended["call"] == call and ended["level"] == "info"
    uas.wait(STEP)
    registered = [e for e in proc.log_entries() if e.get("event") == "account_registered"]
    assert len(registered) == 1 and registered[0]["level"] == "info"
    assert registered[0]["uri"] == f"sip:alice@{kamailio.domain}"
    assert levels(proc, "error") == [], levels(proc, "error")


def test_a_failed_registration_is_one_warning_line(
    tmp_path: Path, serve: list[ServeProcess], kamailio: Kamailio
) -> None:
    """Item 6: the registration failure is a line of its own, with the SIP code."""
    ini = alice_ini(kamailio, "wrong")
    proc = ServeProcess(tmp_path, ini, "--log-level", "info")
    serve.append(proc)
    failed = proc.wait_log(
        lambda e: e.get("event") == "account_registration_failed", STEP, "the failure line"
    )
    assert failed["level"] == "warning" and failed["account"] == 1
    assert str(failed["code"]).startswith("4"), failed


def test_log_file_is_reopened_on_sighup_for_logrotate(tmp_path: Path) -> None:
    """Item 6: ``serve --log-file PATH``; logrotate renames the file and sends SIGHUP:
    the engine goes on logging into a new file at PATH."""
    log = tmp_path / "engine.log"
    ini = write_ini(tmp_path / "serve.ini", BASE_INI)
    ctl = tmp_path / "ctl" / "control.sock"
    child = subprocess.Popen(
        [*SERVE, "--config", str(ini), "--log-file", str(log), "--control", str(ctl)],
        env=private_env(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_line(log, "ready", child)
        log.rename(tmp_path / "engine.log.1")
        child.send_signal(signal.SIGHUP)
        wait_for_line(log, "log_reopened", child)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=STEP)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    assert (out, err) == (b"", b"")  # everything went to the file
    rotated = (tmp_path / "engine.log.1").read_text()
    assert "ready" in rotated and "log_reopened" not in rotated
    assert "stopped" in log.read_text()


def wait_for_line(path: Path, text: str, child: subprocess.Popen[bytes]) -> None:
    def found() -> bool:
        assert child.poll() is None, f"the engine exited {child.returncode}"
        return path.exists() and text in path.read_text()

    wait_until(found, STEP, f"{text} in {path}", interval=0.05)


# ------------------------------------------------- item 9: history numbers, migrated


def test_history_numbers_are_user_parts_and_old_rows_are_migrated(tmp_path: Path) -> None:
    """Item 9: ``number`` is the user part as MicroSIP's call_log has it, the URI is in
    ``remote_uri``; a database an older engine wrote (``user@host`` numbers) is
    migrated once, and MicroSIP's own rows (no ``remote_uri``) are left alone."""
    import sqlite3

    from engine.events import CallState, CallStateName
    from engine.history import CallHistory

    path = tmp_path / "history.sqlite3"
    old = CallHistory(path)
    assert old.rows() == []  # opens it: the current schema, empty
    old.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 0")  # as an older engine left it
        db.execute(
            "INSERT INTO call_log (callId, number, name, type, time, duration, info,"
            " remote_uri) VALUES ('a', '+4930123456@127.0.0.1', 'x', 1, 1, 0, '',"
            " 'sip:+4930123456@127.0.0.1'), ('b', 'bob@pbx', 'MicroSIP row', 0, 2, 0, '', '')"
        )
    db.close()
    history = CallHistory(path)
    try:
        history.record_end(
            CallState(
                call=7,
                sip_call_id="c",
                account=0,
                direction="in",
                state=CallStateName.DISCONNECTED,
                code=200,
                reason="OK",
                remote_uri="sip:+15551234@192.0.2.7:5070;transport=udp",
                remote_user="+15551234",
                duration=3.0,
            )
        )
        rows = {r["callId"]: r for r in history.rows(10)}
    finally:
        history.close()
    assert rows["c"]["number"] == "+15551234"
    assert rows["c"]["remote_uri"] == "sip:+15551234@192.0.2.7:5070;transport=udp"
    assert rows["a"]["number"] == "+4930123456"
    assert rows["a"]["remote_uri"] == "sip:+4930123456@127.0.0.1"
    assert rows["b"]["number"] == "bob@pbx"  # not ours to rewrite
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    db.close()


# ----------------------------------------------------- item 8: the Python API, cmd


def test_wait_for_a_call_state(
    tmp_path: Path, sipp_factory: SippFactory, udp_trap: socket.socket
) -> None:
    """Item 8: ``wait_for(call, state, timeout)`` returns the ``call_state`` event once
    the call is there (or past it), raises ``call_ended`` with the SIP status when it
    ends first, ``timeout`` on its deadline, ``bad_params`` for an unknown state."""
    from engine.errors import EngineError
    from engine.events import CallStateName

    engines = Engines(tmp_path)
    try:
        manager, _events = engines.start()
        ringing = sipp_factory.uas("uas_ring", ring_timeout_ms=1500)
        call = manager.dial(ringing.uri("ring")).call
        assert manager.wait_for(call, "early", STEP).state is CallStateName.EARLY
        with pytest.raises(EngineError) as ended:
            manager.wait_for(call, "confirmed", STEP)
        assert ended.value.code == "call_ended" and "(480 " in ended.value.message
        answering = sipp_factory.uas("uas_answer", bye_timeout_ms=15000)
        call = manager.dial(answering.uri("bob")).call
        event = manager.wait_for(call, "confirmed", STEP)
        assert (event.call, event.state, event.code) == (call, CallStateName.CONFIRMED, 200)
        assert manager.wait_for(call, "early", 1).state is CallStateName.CONFIRMED  # passed
        manager.hangup(call)
        silent = manager.dial(f"sip:nobody@127.0.0.1:{udp_trap.getsockname()[1]}").call
        with pytest.raises(EngineError) as late:
            manager.wait_for(silent, "confirmed", 1.0)
        assert late.value.code == "timeout"
        with pytest.raises(EngineError) as bad:
            manager.wait_for(silent, "answered", 1.0)
        assert bad.value.code == "bad_params" and "confirmed" in bad.value.message
        manager.hangup(silent)
    finally:
        engines.stop_all()


LIBRARY_SCRIPT = """
import sys
from engine import CallManager
from engine.config import load_config

with CallManager(load_config(sys.argv[1]), bind_address="127.0.0.1", sip_port=0) as phone:
    call = phone.dial(sys.argv[2])
    phone.wait_for(call.call, "confirmed", timeout=20)
    phone.hangup(call.call)
print("done")
"""


def test_the_library_is_quiet_unless_asked(tmp_path: Path, sipp_factory: SippFactory) -> None:
    """Item 8: the README's Python example writes nothing to stderr (structlog's own
    default printed ~17 DEBUG lines per call); configuring debug brings them back."""
    uas = sipp_factory.uas("uas_answer", calls=2, bye_timeout_ms=15000)
    ini = write_ini(tmp_path / "lib.ini", BASE_INI)
    script = tmp_path / "lib.py"
    script.write_text(LIBRARY_SCRIPT)
    env = private_env(tmp_path)

    def run() -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(script), str(ini), uas.uri("bob")]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=STEP * 2)

    quiet = run()
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "done\n", "")
    script.write_text("import engine.logs; engine.logs.configure(level='debug')\n" + LIBRARY_SCRIPT)
    asked = run()
    assert asked.returncode == 0 and "[debug    ] event" in asked.stderr, asked.stderr[-2000:]


def test_cmd_help_for_people_and_machines_and_type_errors_name_the_parameter(
    tmp_path: Path, serve: list[ServeProcess]
) -> None:
    """Item 8: ``cmd help`` is text (``--json`` for machines) with every parameter of
    every command described; ``cmd hangup call=abc`` names the parameter."""
    proc = ServeProcess(tmp_path, BASE_INI)
    serve.append(proc)
    env = {**proc.env, "MICROSIP_CONTROL": proc.control}
    text = run_tool("microsip-engine", "cmd", "help", env=env)
    assert text.returncode == 0, text.stderr
    assert "dial: Call a number or SIP URI" in text.stdout
    assert "  target   (str) a number, a name or a SIP URI" in text.stdout, text.stdout
    one = run_tool("microsip-engine", "cmd", "help", "hangup", env=env)
    assert one.stdout.startswith("hangup: ") and "dial:" not in one.stdout
    machine = run_tool("microsip-engine", "cmd", "help", "--json", env=env)
    commands = json.loads(machine.stdout)["commands"]
    undescribed = [
        f"{c['name']}.{name}" for c in commands for name, p in c["params"].items() if not p["help"]
    ]
    assert len(commands) > 20 and undescribed == []
    wrong = run_tool("microsip-engine", "cmd", "hangup", "call=abc", env=env)
    assert wrong.returncode == 1
    assert (
        wrong.stderr
        == "microsip-engine: hangup: parameter 'call' takes a whole number, not 'abc'\n"
    )


# ----------------------------------------------- item 5: the README's quick start


def quick_start_commands() -> list[str]:
    """The shell lines of the README's quick start block, comments removed."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Quick start", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_quick_start_works_as_written(tmp_path: Path) -> None:
    """Item 5: after ``./scripts/run`` (embedded default) the commands are on PATH
    through the links it made, ``try_next`` prints the next commands, and each line
    of the README's quick start does what its comment says."""
    root = Path(__file__).resolve().parents[1]
    env = private_env(tmp_path, XDG_BIN_HOME=str(tmp_path / "bin"))
    venv_bin = str(BIN)
    env["PATH"] = os.pathsep.join(
        [str(tmp_path / "bin"), *(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)]
    )
    log = tmp_path / "run.log"
    with open(log, "wb") as out:  # --bind: tests stay on loopback
        child = subprocess.Popen(
            [str(root / "scripts" / "run"), "--bind", "127.0.0.1", "--log-format", "json"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_line(log, '"try_next"', child)
        entries = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        hint = next(e for e in entries if e["event"] == "try_next")
        address = hint["dial"].rsplit("@", 1)[1]
        for name in ("microsip", "microsip-engine"):
            assert (tmp_path / "bin" / name).resolve() == (BIN / name).resolve()

        def sh(line: str) -> str:
            line = line.replace("127.0.0.1:5060", address)  # the port the engine got
            done = subprocess.run(
                line, shell=True, env=env, capture_output=True, text=True, timeout=STEP
            )
            assert done.returncode == 0, (line, done.stderr)
            return done.stdout

        def calls(predicate: Callable[[str], bool]) -> str:
            def matching() -> str | None:
                status = sh("microsip-engine status")
                return status if predicate(status) else None

            return wait_until(matching, STEP, "the status to match", interval=0.1)

        lines = quick_start_commands()
        assert lines[0] == "microsip-engine status" and lines[-1] == "microsip /exit"
        assert hint["dial"] == lines[1].replace("127.0.0.1:5060", address)
        assert "account 0:" in sh(lines[0])
        sh(lines[1])
        calls(lambda s: "in sip:127.0.0.1 early" in s)  # a human is slower than this
        sh(lines[2])
        status = calls(lambda s: s.count(" confirmed ") == 2)
        assert "calls:    2 of" in sh(lines[3]) and status
        sh(lines[4])
        calls(lambda s: "calls:    0 of" in s)
        sh(lines[5])
        assert child.wait(STEP) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
