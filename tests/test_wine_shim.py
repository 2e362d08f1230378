"""The Windows ``MicroSIP.exe`` shim, end to end: cross-built with CMake, run
headless under Wine (null graphics driver), against a real Linux engine and SIPp.

An integration finds the window of class ``MicroSIP`` and sends WM_COPYDATA
(here: ``copydata-send.exe``), or runs ``MicroSIP.exe <args>``; the shim forwards
to the engine's ``copydata`` command over the token-protected TCP listener.

One Wine session (prefix, wineserver) serves the whole module; every test gets
its own engine, its own copy of the shim (own ini and log) and its own resident.
Tools missing: skipped, or failed under ``CI=true`` (scripts/install-native-deps
installs them). The shim's pure C functions are unit-tested natively by CTest
(``test_ctest_host``), which needs no Wine.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from enginekit import ServeProcess
from peers.process import APT_PACKAGES, free_port, require, wait_until
from peers.sipp import SippFactory
from wine import (
    MINGW_GCC,
    NATIVE_PACKAGES,
    ShimInstall,
    WineSession,
    cmake_build,
    run_ctest,
)

TIMEOUT = 15.0


def _require(*tools: str) -> None:
    """Each tool on PATH, else skip (fail under CI=true) naming its package."""
    for tool in tools:
        APT_PACKAGES.setdefault(tool, NATIVE_PACKAGES.get(tool, tool))
        require(tool)


# -- builds and the Wine session (one per module) -------------------------------------


@pytest.fixture(scope="module")
def win_programs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MicroSIP.exe, copydata-send.exe and test_shim_core.exe, cross-built."""
    _require("cmake", MINGW_GCC, "wine", "wineserver")
    build = tmp_path_factory.mktemp("build-win")
    return cmake_build(build, windows=True, log=build / "build.log")


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory, win_programs: Path) -> Iterator[WineSession]:
    session = WineSession(tmp_path_factory.mktemp("wine"))
    try:
        yield session.start()
    finally:
        session.close()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ServeProcess]:
    """``microsip-engine serve`` with the TCP control listener on a free port."""
    proc = ServeProcess(tmp_path, None, "--tcp-control", "127.0.0.1:0")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def shim(
    tmp_path: Path, wine: WineSession, win_programs: Path, engine: ServeProcess
) -> Iterator[ShimInstall]:
    """The shim installed in a directory of its own, configured for ``engine``."""
    install = ShimInstall(wine, win_programs, tmp_path / "MicroSIP")
    port = int(engine.ready["tcp_control"].rsplit(":", 1)[1])
    install.configure(port, Path(engine.control).parent / "tcp-token")
    try:
        yield install
    finally:
        install.close()


# -- helpers ---------------------------------------------------------------------------


def wait_for_call(engine: ServeProcess, state: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """A call of the engine that is in ``state`` now (not one that once was: the
    launcher test places a second call after the first has ended)."""
    with engine.client() as client:
        return wait_until(
            lambda: next((dict(c) for c in client.request("calls") if c["state"] == state), None),
            timeout,
            f"a call in state {state!r}",
            interval=0.05,
        )


def replies(result: Any) -> list[int]:
    """The LRESULTs printed by copydata-send.exe."""
    return [int(line.split()[1]) for line in result.lines() if line.startswith("reply ")]


def engine_log(engine: ServeProcess, event: str) -> list[dict[str, Any]]:
    return [e for e in engine.log_entries() if e.get("event") == event]


# -- tests -----------------------------------------------------------------------------


def test_ctest_host(tmp_path: Path) -> None:
    """The shim's forwarding logic (JSON, base64, reply parsing, cbData/NUL checks,
    command-line splitting), built with the host gcc under ASan/UBSan."""
    _require("cmake", "ctest")
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        _require("gcc")
    programs = cmake_build(tmp_path / "build-host", windows=False, log=tmp_path / "build.log")
    assert (programs / "test_shim_core").exists()
    run_ctest(tmp_path / "build-host", tmp_path / "ctest.log")


def test_ctest_under_wine(wine: WineSession, win_programs: Path) -> None:
    """The same unit tests, cross-built, run by CTest through Wine."""
    run_ctest(win_programs.parent, wine.logs / "ctest-win.log", env=wine.env)


@pytest.mark.peers
def test_copydata_answers_then_hangs_up_a_sipp_call(
    shim: ShimInstall, engine: ServeProcess, sipp_factory: SippFactory
) -> None:
    """dwData=1 ``msip:answer`` answers the ringing call; dwData=2 ``/hangupall`` ends it."""
    shim.start_resident()
    sipp = sipp_factory.uac(
        f"sip:100@127.0.0.1:{engine.sip_port()}", "uac_wait_bye", bye_timeout_ms=20000
    )
    wait_for_call(engine, "early")

    answered = shim.send("--dw", "1", "--text", "msip:answer")
    assert answered.returncode == 0, answered.stdout
    assert replies(answered) == [0]  # FALSE: run, as MicroSIP replies
    # dwData=1 replies after the command ran: the call is already answered.
    wait_for_call(engine, "confirmed", timeout=5)

    hung_up = shim.send("--enum", "--dw", "2", "--text", "/hangupall")
    assert hung_up.returncode == 0, hung_up.stdout
    assert "found with EnumWindows" in hung_up.stdout
    assert replies(hung_up) == [0]

    result = sipp.wait(15)
    assert result.successful == 1, sipp.log_tail()
    assert result.received("200", 0) == 1  # the INVITE was answered
    assert result.received("BYE") == 1
    log = shim.log_text()
    assert 'forwarded WM_COPYDATA dwData=1 "msip:answer": ok' in log
    assert 'forwarded WM_COPYDATA dwData=2 "/hangupall": ok' in log


@pytest.mark.peers
def test_launcher_dials_hangs_up_and_exits(
    shim: ShimInstall, engine: ServeProcess, sipp_factory: SippFactory
) -> None:
    """``MicroSIP.exe <uri>`` reaches the peer (cold start, then with a resident);
    ``/exit`` stops the resident and the engine, which exits 0."""
    uas = sipp_factory.uas("uas_answer", calls=2, bye_timeout_ms=20000)
    target = f"sip:100@{uas.address}"

    # Nothing running: /hangupall does not start anything (MicroSIP's rule).
    assert shim.launch("/hangupall").returncode == 0
    assert shim.send("--find-only").returncode == 2

    # Cold start: the launcher starts a resident, then forwards its command line.
    assert shim.launch(target).returncode == 0
    assert shim.send("--find-only").returncode == 0
    wait_for_call(engine, "confirmed")
    assert shim.launch("/hangupall").returncode == 0
    wait_until(lambda: uas.result().received("BYE") == 1, TIMEOUT, "the first BYE", interval=0.05)

    # With the resident running: forwarded as WM_COPYDATA dwData=1.
    assert shim.launch(target).returncode == 0
    wait_for_call(engine, "confirmed")
    assert shim.launch("/hangupall").returncode == 0
    result = uas.wait(15)
    assert result.successful == 2, uas.log_tail()
    assert result.received("BYE") == 2

    log = shim.log_text()
    assert "started a resident" in log
    assert log.count(f'launcher: forwarded "{target}" (reply FALSE)') == 2

    # /exit: the engine stops cleanly, the resident closes, nothing is left.
    assert shim.launch("/exit").returncode == 0
    assert engine.proc.wait(10) == 0, engine.log_path.read_text()[-2000:]
    assert shim.send("--find-only").returncode == 2
    log = shim.log_text()
    assert "launcher: /exit: the engine is stopping" in log
    assert "resident stopped" in log
    assert engine_log(engine, "stopped")


def test_malformed_messages_are_refused_and_everything_keeps_running(
    shim: ShimInstall, engine: ServeProcess
) -> None:
    """Odd cbData, no NUL, huge cbData, empty, unknown dwData: each refused with a
    clear reason (reply TRUE: dropped), never forwarded; a valid message still works."""
    resident = shim.start_resident()
    # Each would dial if it reached the engine.
    text = f"sip:100@127.0.0.1:{engine.sip_port()}"
    size = 2 * (len(text) + 1)
    cases = [
        (["--odd", text], f"(odd_length): payload of {size - 1} bytes has an odd length"),
        (["--no-nul", text], f"(no_nul): payload of {size - 2} bytes does not end with a NUL"),
        (["--huge", "1048576"], "(too_large): payload of 1048576 bytes exceeds the limit"),
        (["--null"], "(empty): empty payload"),
        (["--dw", "7", "--text", text], "(unknown_dwdata): unknown dwData 7"),
        (["--dw", "0", "--text", text], "(unknown_dwdata): unknown dwData 0"),
    ]
    for args, reason in cases:
        sent = shim.send(*args)
        assert sent.returncode == 0, sent.stdout
        assert replies(sent) == [1], (args, sent.stdout)  # TRUE: dropped
        assert reason in shim.log_text(), (reason, shim.log_text())
    assert resident.poll() is None
    assert engine.proc.poll() is None

    # Nothing reached the engine: no call was attempted, no command failed there.
    with engine.client() as client:
        assert client.request("calls") == []
    assert engine_log(engine, "tcp_control_command_failed") == []

    # A valid message is still forwarded; the engine runs it (and this one fails
    # there, visibly: a bare number cannot be dialled from the local account).
    sent = shim.send("--dw", "1", "--text", "5551234")
    assert replies(sent) == [0], sent.stdout
    failed = engine_log(engine, "tcp_control_command_failed")
    assert [(e["cmd"], e["code"]) for e in failed] == [("copydata", "invalid_target")]
    sent = shim.send("--dw", "1", "--text", "msip:minimize")
    assert replies(sent) == [0], sent.stdout
    assert 'forwarded WM_COPYDATA dwData=1 "msip:minimize": ok' in shim.log_text()
    assert resident.poll() is None


def test_wrong_token_file_is_refused_and_nothing_runs(
    shim: ShimInstall, engine: ServeProcess, tmp_path: Path
) -> None:
    """A shim holding another token is refused by the engine (logged on both
    sides) and its message is dropped (TRUE); nothing is executed."""
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-engines-token-0123456789\n")
    port = int(engine.ready["tcp_control"].rsplit(":", 1)[1])
    shim.configure(port, wrong)
    shim.start_resident()
    sent = shim.send("--dw", "1", "--text", "msip:minimize")
    assert replies(sent) == [1], sent.stdout
    assert "the engine refused the connection: forbidden" in shim.log_text()
    assert engine_log(engine, "tcp_control_forbidden")
    assert engine.proc.poll() is None


def test_resident_reconnects_after_an_engine_restart(
    tmp_path: Path, wine: WineSession, win_programs: Path
) -> None:
    """The resident keeps one connection open; after an engine restart (same port,
    token file kept) it notices the dead connection before sending and reconnects,
    so the message is sent exactly once. With the engine down, messages are
    dropped (TRUE) and the resident keeps running."""
    port = free_port("tcp")
    engines = [ServeProcess(tmp_path, None, "--tcp-control", f"127.0.0.1:{port}")]
    shim = ShimInstall(wine, win_programs, tmp_path / "MicroSIP")
    try:
        token_file = Path(engines[0].control).parent / "tcp-token"
        token = token_file.read_text()
        shim.configure(port, token_file)
        shim.start_resident()
        assert replies(shim.send("--text", "msip:minimize")) == [0]

        assert engines[0].stop() == 0
        engines.append(ServeProcess(tmp_path, None, "--tcp-control", f"127.0.0.1:{port}"))
        assert token_file.read_text() == token  # kept across restarts
        assert replies(shim.send("--text", "msip:minimize")) == [0]
        log = shim.log_text()
        assert "the engine connection was closed; reconnecting" in log
        assert log.count('dwData=1 "msip:minimize": ok') == 2

        assert engines[1].stop() == 0
        assert replies(shim.send("--text", "msip:minimize")) == [1]
        assert "the engine is not reachable" in shim.log_text()
        assert all(proc.poll() is None for proc in shim.residents)
    finally:
        shim.close()
        for engine in engines:
            engine.stop()


class _IdleClosingEngine:
    """A stand-in for the engine's TCP listener that closes the first connection the
    way the engine closes an idle one, racing a request: the reply to the second
    request on it is ``idle`` (the engine never runs what it reads after that)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.requests: list[list[str]] = []  # per connection, the request lines
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                with conn, conn.makefile("rwb") as stream:
                    self._session(stream)

    def _session(self, stream: Any) -> None:
        seen: list[str] = []
        self.requests.append(seen)
        hello = json.loads(stream.readline())
        stream.write(json.dumps({"id": hello.get("id"), "ok": True, "result": {}}).encode())
        stream.write(b"\n")
        stream.flush()
        for line in stream:
            request = json.loads(line)
            seen.append(str(request.get("cmd")))
            if len(self.requests) == 1 and len(seen) == 2:
                error = {"code": "idle", "message": "closed after 30 s without a request"}
                reply: dict[str, Any] = {"id": request["id"], "ok": False, "error": error}
            else:
                reply = {"id": request["id"], "ok": True, "result": None}
            stream.write(json.dumps(reply).encode() + b"\n")
            stream.flush()
            if not reply["ok"]:
                return

    def close(self) -> None:
        self.listener.close()


def test_a_request_crossing_the_engines_idle_close_is_sent_again(
    tmp_path: Path, wine: WineSession, win_programs: Path
) -> None:
    """The engine closes a kept-open connection after ``controlIdleTimeout`` with an
    ``idle`` reply and runs nothing it reads after that. A message that crossed that
    close was not run: the resident sends it once more on a new connection, and
    reports it run (FALSE) only when the engine has run it."""
    fake = _IdleClosingEngine()
    shim = ShimInstall(wine, win_programs, tmp_path / "MicroSIP")
    token = tmp_path / "token"
    token.write_text("a-token-the-stand-in-accepts-0123456789\n")
    try:
        shim.configure(fake.port, token)
        shim.start_resident()
        assert replies(shim.send("--text", "msip:minimize")) == [0]
        assert replies(shim.send("--text", "msip:minimize")) == [0]
        assert fake.requests == [["copydata", "copydata"], ["copydata"]], fake.requests
        assert "sending it again on a new one" in shim.log_text()
    finally:
        shim.close()
        fake.close()
