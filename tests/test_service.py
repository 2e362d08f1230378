"""``microsip-engine serve`` as a process: ready line, control socket, SIGTERM."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from buildkit import EXPECTED
from enginekit import ServeProcess
from peers.kamailio import Kamailio
from peers.process import wait_until
from peers.sipp import SippFactory

pytestmark = pytest.mark.peers


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for proc in started:
        proc.stop()


def test_embedded_default_starts_with_no_config(tmp_path: Path, serve: list[ServeProcess]) -> None:
    """No --config, no MICROSIP_INI, no user file: the embedded default runs."""
    proc = ServeProcess(tmp_path, None)
    serve.append(proc)
    ready = proc.ready
    assert ready["config"] == "embedded default"
    assert ready["max_calls"] == EXPECTED.max_calls
    assert [a.split(":")[0] for a in ready["sip"]] == ["udp", "tcp"]
    assert ready["control"] == proc.control
    status = proc.client().request("status")
    assert [a["account"] for a in status["accounts"]] == [0]
    assert status["accounts"][0]["transport"] == "udp+tcp"


def test_sigterm_during_a_call_sends_bye_unregisters_and_exits_0(
    tmp_path: Path, serve: list[ServeProcess], kamailio: Kamailio, sipp_factory: SippFactory
) -> None:
    ini = f"""[Settings]
accountId=1
enableLocalAccount=1
[Account1]
server={kamailio.address}
domain={kamailio.domain}
username=alice
password=alice-secret
"""
    proc = ServeProcess(tmp_path, ini)
    serve.append(proc)
    kamailio.wait_registrations("alice", 1)
    client = proc.client()
    events = proc.events  # subscribed before the call
    sipp = sipp_factory.uac(f"sip:100@127.0.0.1:{proc.sip_port()}", "uac_wait_bye")
    events.wait_for("call_state", state="early")
    client.request("answer")
    events.wait_for("call_state", state="confirmed")
    client.close()
    time.sleep(1.0)  # a call in progress for a while (SIPp streams its RTP)
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    code = proc.proc.wait(5)
    took = time.monotonic() - started
    assert code == 0, proc.log_path.read_text()[-2000:]
    assert took < 3.0, f"shutdown took {took:.2f} s"
    result = sipp.wait(10)
    assert result.received("BYE") == 1 and result.successful == 1
    assert kamailio.registrations("alice") == []
    log = proc.log_path.read_text()
    assert "alice-secret" not in log
    assert '"event": "stopped"' in log


def test_logs_never_carry_passwords_digests_or_srtp_keys(
    tmp_path: Path, serve: list[ServeProcess], kamailio: Kamailio, sipp_factory: SippFactory
) -> None:
    """PJSIP at its highest allowed level prints every SIP message: REGISTER with its
    Authorization header, and INVITEs whose SDP carries SRTP keys (a=crypto)."""
    ini = f"""[Settings]
accountId=1
[Account1]
server={kamailio.address}
domain={kamailio.domain}
username=alice
password=alice-secret
SRTP=optional
[Engine]
logLevel=debug
pjsipLogLevel=9
"""
    proc = ServeProcess(tmp_path, ini)
    serve.append(proc)
    kamailio.wait_registrations("alice", 1)
    uas = sipp_factory.uas("uas_ring", ring_timeout_ms=3000)
    client = proc.client()
    events = proc.events  # subscribed before the call
    call = client.request("dial", target=uas.uri("ring"))
    events.wait_for("call_state", call=call["call"], state="early")
    client.request("hangup", call=call["call"])
    client.close()
    proc.stop()
    log = proc.log_path.read_text()
    assert "REGISTER sip:" in log and "a=crypto" in log  # the messages were logged...
    assert "alice-secret" not in log  # ...without the password,
    assert re.search(r'response\s*=\s*"?[0-9a-f]{32}', log) is None  # the digest,
    assert re.search(r"inline:[A-Za-z0-9+/]{20,}", log) is None  # or SRTP keys.
    assert "Authorization: <redacted>" in log


def test_the_idle_service_loads_nothing_it_does_not_use(
    tmp_path: Path, serve: list[ServeProcess]
) -> None:
    """Memory guard (scripts/bench measures it): no numpy without sound devices, no
    asyncio/ssl (structlog imports asyncio; the service defers it), no hashlib, no
    SQLite before a call has ended."""
    proc = ServeProcess(tmp_path, None)
    serve.append(proc)
    maps = Path(f"/proc/{proc.proc.pid}/maps").read_text()
    for module in ("numpy", "_ssl.cpython", "_asyncio.cpython", "_hashlib.cpython", "sqlite3"):
        assert module not in maps, f"{module} is loaded by the idle service"


def test_stopping_with_a_message_still_in_flight_exits_cleanly(
    tmp_path: Path, serve: list[ServeProcess]
) -> None:
    """A MESSAGE to a silent address retransmits for 32 s; stopping the engine then
    ends its transaction inside libDestroy, which calls back into the account: the
    account must still exist (it used to abort the process)."""
    import socket

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # receives and never answers
    try:
        proc = ServeProcess(tmp_path, None)
        serve.append(proc)
        client = proc.client()
        port = silent.getsockname()[1]
        client.request("message", target=f"sip:nobody@127.0.0.1:{port}", text="hello")
        silent.settimeout(5)
        assert b"MESSAGE sip:nobody@" in silent.recv(65535)  # it is on the wire
        client.close()
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(5) == 0, proc.log_path.read_text()[-2000:]
    finally:
        silent.close()


def test_readme_command_1_runs_the_engine_until_sigterm(tmp_path: Path) -> None:
    """``./scripts/run`` (README command 1): embedded default, one ready line, exit 0."""
    import json
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    control = str(tmp_path / "ctl" / "control.sock")
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "cfg"), MICROSIP_CONTROL=control)
    env["XDG_BIN_HOME"] = str(tmp_path / "bin")  # scripts/run links the commands there
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(root / "scripts" / "run"), "--bind", "127.0.0.1", "--sip-port", "0",
             "--log-format", "json"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:

            def ready_lines() -> list[dict[str, object]] | None:
                assert proc.poll() is None, log_path.read_text()[-2000:]
                lines = log_path.read_text(errors="replace").splitlines()
                entries = [json.loads(x) for x in lines if x.startswith("{")]
                return [e for e in entries if e.get("event") == "ready"] or None

            # 60 s: scripts/run may (re)install the venv first.
            ready = wait_until(ready_lines, 60, "the ready line", interval=0.1)
            assert ready[0]["config"] == "embedded default" and ready[0]["control"] == control
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_any_command_from_the_shell(tmp_path: Path, serve: list[ServeProcess]) -> None:
    """``microsip-engine cmd NAME key=value…``: typed from the command's own help."""
    import json
    import subprocess
    import sys

    proc = ServeProcess(tmp_path, None)
    serve.append(proc)

    def cmd(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine", "cmd", *argv, "--control", proc.control],
            capture_output=True, text=True, timeout=30, env=proc.env,
        )  # fmt: skip

    toggled = cmd("toggle", "name=DND", "on=true")
    assert toggled.returncode == 0, toggled.stderr
    assert json.loads(toggled.stdout)["dnd"] is True
    assert proc.client().request("status")["toggles"]["dnd"] is True
    unknown = cmd("toggle", "name=DND", "colour=blue")
    assert unknown.returncode == 1 and "no parameter 'colour'" in unknown.stderr
    refused = cmd("hangup", "call=99")
    assert refused.returncode == 1 and "99" in refused.stderr
