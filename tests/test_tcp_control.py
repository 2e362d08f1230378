"""The TCP control listener (``engine/control/tcp.py``): the control protocol for
the Windows shim, behind a token on the first line of every connection.

Unit tests run a :class:`TcpControlServer` on 127.0.0.1 over a toy registry (a
``touch`` command records whether anything was executed); the last tests run a
real ``microsip-engine serve --tcp-control``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from enginekit import ServeProcess
from peers.process import free_port

from engine.bus import EventBus
from engine.commands import CommandRegistry
from engine.control.tcp import (
    TcpControlServer,
    _is_loopback,
    default_token_path,
    load_or_create_token,
    parse_address,
)
from engine.copydata import encode_copydata
from engine.errors import EngineError
from engine.events import CallState, CallStateName

TIMEOUT = 5.0


class Tcp:
    """A bare TCP connection speaking lines."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, obj: Any) -> dict[str, Any]:
        self.send(json.dumps(obj).encode() + b"\n")
        return self.line()

    def line(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed, pending {self.buf[:80]!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def closed(self) -> bool:
        """True when the server has closed the connection (EOF within TIMEOUT)."""
        try:
            return self.buf == b"" and self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def make_registry(touched: list[str]) -> CommandRegistry:
    registry = CommandRegistry()
    registry.register("add", lambda a, b: a + b, help="Add.", params={"a": int, "b": int})
    registry.register("touch", lambda: touched.append("touched"), help="Side effect.")

    def fail() -> None:
        raise EngineError("it failed", code="sip_error")

    registry.register("fail", fail, help="Fails.")
    return registry


@pytest.fixture
def ctldir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mst-"))
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def touched() -> list[str]:
    return []


@pytest.fixture
def bus() -> Iterator[EventBus]:
    bus = EventBus()
    yield bus
    bus.close()


@pytest.fixture
def make_server(
    ctldir: Path, bus: EventBus, touched: list[str]
) -> Iterator[Callable[..., TcpControlServer]]:
    servers: list[TcpControlServer] = []

    def make(**kwargs: Any) -> TcpControlServer:
        token_path = str(kwargs.pop("token_path", ctldir / "tcp-token"))
        server = TcpControlServer(make_registry(touched), bus, "127.0.0.1:0", token_path, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def server(make_server: Callable[..., TcpControlServer]) -> TcpControlServer:
    return make_server()


def authed(server: TcpControlServer) -> Tcp:
    conn = Tcp(server.port)
    assert conn.request({"token": server.token}) == {
        "id": None,
        "ok": True,
        "result": {"authenticated": True},
    }
    return conn


def assert_refused(conn: Tcp) -> dict[str, Any]:
    reply = conn.line()
    assert reply["ok"] is False and reply["id"] is None
    assert reply["error"]["code"] == "forbidden"
    assert conn.closed()
    return reply


# ---------------------------------------------------------------- the token file


def test_token_file_is_created_private_and_reused(ctldir: Path) -> None:
    path = ctldir / "sub" / "tcp-token"
    token = load_or_create_token(str(path))
    assert len(token) >= 32 and token.strip() == token
    assert path.read_text() == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_token(str(path)) == token  # kept across restarts
    assert load_or_create_token(str(ctldir / "other")) != token  # random


def test_a_provisioned_token_is_accepted(ctldir: Path) -> None:
    path = ctldir / "tcp-token"
    path.write_text("\n provisioned-Token_0123456789.~+/= \r\n")
    path.chmod(0o600)
    assert load_or_create_token(str(path)) == "provisioned-Token_0123456789.~+/="


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ("good-token-0123456789abcdef", 0o644, "readable by others (mode 0644)"),
        ("good-token-0123456789abcdef", 0o640, "readable by others (mode 0640)"),
        ("short", 0o600, "holds no valid token"),
        ("", 0o600, "holds no valid token"),
        ('has "quotes" 0123456789abcdef', 0o600, "holds no valid token"),
    ],
)
def test_a_bad_token_file_stops_the_start(
    ctldir: Path, content: str, mode: int, message: str
) -> None:
    path = ctldir / "tcp-token"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(EngineError, match="token file") as info:
        load_or_create_token(str(path))
    assert message in info.value.message
    assert path.read_text() == content  # never silently replaced


def test_a_symlinked_token_file_is_refused(ctldir: Path) -> None:
    target = ctldir / "elsewhere"
    target.write_text("good-token-0123456789abcdef")
    target.chmod(0o600)
    (ctldir / "tcp-token").symlink_to(target)
    with pytest.raises(EngineError, match="is a symlink"):
        load_or_create_token(str(ctldir / "tcp-token"))


def test_addresses() -> None:
    assert parse_address("127.0.0.1:5099") == ("127.0.0.1", 5099)
    assert parse_address("5099") == ("127.0.0.1", 5099)  # loopback unless told otherwise
    assert parse_address("[::1]:5099") == ("::1", 5099)
    assert parse_address("localhost:0") == ("localhost", 0)
    for bad in ("", "host:", ":5099", "host:port", "127.0.0.1:65536", "1.2.3.4:-1"):
        with pytest.raises(EngineError, match="not host:port"):
            parse_address(bad)
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.2")
    assert default_token_path("/run/user/1/microsip-engine/control.sock") == (
        "/run/user/1/microsip-engine/tcp-token"
    )


# ---------------------------------------------------------------- the handshake


def test_the_right_token_opens_the_protocol(server: TcpControlServer) -> None:
    assert server.host == "127.0.0.1" and server.port > 0
    conn = authed(server)
    assert conn.request({"id": 1, "cmd": "add", "params": {"a": 2, "b": 3}}) == {
        "id": 1,
        "ok": True,
        "result": 5,
    }
    assert conn.request({"id": 2, "cmd": "nope"})["error"]["code"] == "unknown_command"
    conn.close()


def test_token_and_requests_may_come_in_one_packet(server: TcpControlServer) -> None:
    """Pipelined: the token line, then requests, in one write (as the shim may do)."""
    conn = Tcp(server.port)
    conn.send(
        b"\r\n"  # blank lines before the token are ignored, like anywhere else
        + json.dumps({"token": server.token, "id": "hello"}).encode()
        + b"\r\n"
        + b'{"id":1,"cmd":"add","params":{"a":1,"b":1}}\n'
        + b'{"id":2,"cmd":"add","params":{"a":2,"b":2}}\n'
    )
    assert conn.line() == {"id": "hello", "ok": True, "result": {"authenticated": True}}
    assert conn.line()["result"] == 2
    assert conn.line()["result"] == 4


@pytest.mark.parametrize(
    "first",
    [
        b'{"token": "wrong-token-0123456789abcdef"}\n',
        b'{"token": ""}\n',
        b'{"token": null}\n',
        b'{"token": 12345}\n',
        b'{"id": 1, "cmd": "touch"}\n',  # no token at all: a command first
        b'{"token": "%TOKEN%", "cmd": "touch"}\n',  # the right token, but an extra key
        b'["%TOKEN%"]\n',
        b"%TOKEN%\n",  # the bare token is not the protocol
        b"\xff\xfe garbage\n",
        b'{"token": "\xc3\xa9t\xc3\xa9 0123456789abcdef"}\n',  # non-ASCII guess
        b"x" * 70000 + b"\n",  # over max_line
    ],
)
def test_a_wrong_or_missing_token_is_refused_and_nothing_runs(
    make_server: Callable[..., TcpControlServer], touched: list[str], first: bytes
) -> None:
    server = make_server(max_line=65536)
    first = first.replace(b"%TOKEN%", server.token.encode())
    with structlog.testing.capture_logs() as logs:
        conn = Tcp(server.port)
        # The commands that follow must never run.
        conn.send(first + b'{"id": 2, "cmd": "touch"}\n{"token": "%s"}\n' % server.token.encode())
        reply = assert_refused(conn)
    assert "token" in reply["error"]["message"]
    assert server.token not in json.dumps(reply)
    assert touched == []
    assert [e["reason"] for e in logs if e["event"] == "tcp_control_forbidden"]


def test_a_silent_client_is_dropped_after_the_handshake_timeout(
    make_server: Callable[..., TcpControlServer], touched: list[str]
) -> None:
    server = make_server(handshake_timeout=0.3)
    conn = Tcp(server.port)
    started = time.monotonic()
    reply = assert_refused(conn)
    assert reply["error"]["message"] == "no token line in time"
    assert time.monotonic() - started < TIMEOUT
    # Authenticated connections have no such limit.
    slow = authed(server)
    time.sleep(0.5)
    assert slow.request({"id": 1, "cmd": "add", "params": {"a": 1, "b": 2}})["result"] == 3


def test_the_token_is_checked_on_every_connection(
    server: TcpControlServer, touched: list[str]
) -> None:
    good = authed(server)
    bad = Tcp(server.port)
    bad.send(b'{"token": "wrong-token-0123456789abcdef"}\n{"cmd": "touch"}\n')
    assert_refused(bad)
    assert good.request({"id": 1, "cmd": "touch"})["ok"] is True
    assert touched == ["touched"]


# ---------------------------------------------------------------- after the handshake


def test_same_limits_and_garbage_tolerance_as_the_unix_socket(
    make_server: Callable[..., TcpControlServer],
) -> None:
    server = make_server(max_line=1024)
    conn = authed(server)
    conn.send(b"y" * 5000 + b"\n")
    assert conn.line()["error"]["code"] == "too_large"
    conn.send(b"not json\n\xff\n[1]\n")
    assert [conn.line()["error"]["code"] for _ in range(3)] == ["bad_request"] * 3
    assert conn.request({"id": 3, "cmd": "add", "params": {"a": 1}})["error"]["code"] == (
        "bad_params"
    )
    assert conn.request({"id": 4, "cmd": "add", "params": {"a": 1, "b": 1}})["result"] == 2


def test_failed_commands_are_logged(server: TcpControlServer) -> None:
    with structlog.testing.capture_logs() as logs:
        conn = authed(server)
        reply = conn.request({"id": 1, "cmd": "fail"})
    assert reply["error"] == {"code": "sip_error", "message": "it failed"}
    failed = [e for e in logs if e["event"] == "tcp_control_command_failed"]
    assert failed and failed[0]["cmd"] == "fail" and failed[0]["code"] == "sip_error"


def test_subscribe_over_tcp(server: TcpControlServer, bus: EventBus) -> None:
    conn = authed(server)
    reply = conn.request({"id": "s", "cmd": "subscribe", "params": {"events": ["call_state"]}})
    assert reply == {"id": "s", "ok": True, "result": {"events": ["call_state"]}}
    bus.publish(
        CallState(
            call=4,
            sip_call_id="x@y",
            account=0,
            direction="in",
            state=CallStateName.CONFIRMED,
            code=200,
            reason="OK",
            remote_uri="sip:1@127.0.0.1",
        )
    )
    event = conn.line()
    assert event["event"] == "call_state" and event["call"] == 4


def test_idle_connections_are_closed_and_give_way(
    make_server: Callable[..., TcpControlServer],
) -> None:
    """The TCP listener has the Unix socket's idle rules: an authenticated
    connection idle past ``idle_timeout`` is closed with an ``idle`` line, and when
    every slot is taken the connection idle the longest gives way to a new one."""
    server = make_server(max_clients=2, idle_timeout=0.5, evict_grace=0.0)
    first, second = authed(server), authed(server)
    third = authed(server)  # took first's slot
    reply = first.line()
    assert reply["id"] is None and reply["error"]["code"] == "idle" and first.closed()
    assert third.request({"id": 1, "cmd": "add", "params": {"a": 1, "b": 2}})["result"] == 3
    for conn in (second, third):
        reply = conn.line()
        assert reply["error"] == {
            "code": "idle",
            "message": "closed after 0.5 s without a request",
        }
        assert conn.closed()


def test_client_limit(make_server: Callable[..., TcpControlServer]) -> None:
    server = make_server(max_clients=2, evict_grace=60.0)
    first, second = authed(server), Tcp(server.port)
    third = Tcp(server.port)
    reply = third.line()
    assert reply["error"]["code"] == "busy" and third.closed()
    first.close()
    second.close()


def test_close_ends_connections_and_frees_the_port(
    make_server: Callable[..., TcpControlServer],
) -> None:
    server = make_server()
    conn = authed(server)
    server.close()
    assert conn.closed()
    server.close()  # twice is harmless
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_a_busy_port_stops_the_start(
    server: TcpControlServer, bus: EventBus, touched: list[str], ctldir: Path
) -> None:
    other = TcpControlServer(
        make_registry(touched), bus, f"127.0.0.1:{server.port}", str(ctldir / "t2")
    )
    with pytest.raises(EngineError, match=r"cannot listen on TCP 127\.0\.0\.1"):
        other.start()
    other.close()


# ---------------------------------------------------------------- a real engine


def test_serve_tcp_control_refuses_a_wrong_token_then_obeys_the_right_one(
    tmp_path: Path,
) -> None:
    """``serve --tcp-control``: a wrong token executes nothing (``exit`` is
    ignored, the engine keeps running); the right one runs ``copydata`` (errors
    in the engine log) and ``exit`` (exit code 0)."""
    proc = ServeProcess(tmp_path, None, "--tcp-control", "127.0.0.1:0")
    try:
        host, port = proc.ready["tcp_control"].rsplit(":", 1)
        assert host == "127.0.0.1"
        token_file = Path(proc.control).parent / "tcp-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()

        dial = {"cmd": "commandline", "params": {"line": "sip:100@127.0.0.1:9"}}
        for hello in (b"", b'{"token": "wrong-token-0123456789abcdef"}\n'):
            bad = Tcp(int(port))
            bad.send(hello + json.dumps(dial).encode() + b'\n{"id": 1, "cmd": "exit"}\n')
            assert_refused(bad)
        # A dial runs before its reply: had it run, the call would be listed.
        with proc.client() as client:
            assert client.request("calls") == []
        assert proc.proc.poll() is None
        assert token not in proc.log_path.read_text()

        conn = Tcp(int(port))
        conn.send(json.dumps({"token": token}).encode() + b"\n")
        assert conn.line()["ok"] is True
        odd = base64.b64encode(encode_copydata("5551234")[:-1]).decode()
        reply = conn.request(
            {"id": 2, "cmd": "copydata", "params": {"dwData": 1, "payload_b64": odd}}
        )
        assert reply["error"]["code"] == "copydata_error"
        assert "odd length" in reply["error"]["message"]
        proc.wait_log(
            lambda e: (
                e.get("event") == "tcp_control_command_failed"
                and "odd length" in e.get("error", "")
            ),
            5,
            "the copydata error in the engine log",
        )
        assert conn.request({"id": 3, "cmd": "exit"})["ok"] is True
        assert proc.proc.wait(10) == 0
        forbidden = [e for e in proc.log_entries() if e.get("event") == "tcp_control_forbidden"]
        assert len(forbidden) == 2
    finally:
        proc.stop()


def test_serve_reads_tcp_control_from_the_ini(tmp_path: Path) -> None:
    """``[Engine] tcpControl`` turns the listener on; without it there is none."""
    port = free_port("tcp")
    ini = f"[Settings]\naccountId=0\n[Engine]\ntcpControl=127.0.0.1:{port}\n"
    proc = ServeProcess(tmp_path, ini)
    try:
        assert proc.ready["tcp_control"] == f"127.0.0.1:{port}"
        token = (Path(proc.control).parent / "tcp-token").read_text().strip()
        conn = Tcp(port)
        conn.send(json.dumps({"token": token}).encode() + b"\n")
        assert conn.line()["ok"] is True
        assert conn.request({"id": 1, "cmd": "status"})["ok"] is True
        conn.close()
    finally:
        proc.stop()
    (tmp_path / "plain").mkdir()
    plain = ServeProcess(tmp_path / "plain", None)
    try:
        assert plain.ready["tcp_control"] is None
        assert not (Path(plain.control).parent / "tcp-token").exists()
    finally:
        plain.stop()


def test_serve_idle_rules_on_both_listeners(tmp_path: Path) -> None:
    """A real engine: ``status`` answers beside 64 connections that never send
    anything (issue 14), and ``[Engine] controlIdleTimeout`` closes idle
    connections on the Unix socket and the TCP listener alike."""
    port = free_port("tcp")
    ini = f"[Settings]\naccountId=0\n[Engine]\ntcpControl=127.0.0.1:{port}\ncontrolIdleTimeout=1\n"
    proc = ServeProcess(tmp_path, ini)
    idle: list[socket.socket] = []
    try:
        for _ in range(64):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(TIMEOUT)
            sock.connect(proc.control)
            idle.append(sock)
        with proc.client() as client:
            assert client.request("status")["control"] == proc.control
        token = (Path(proc.control).parent / "tcp-token").read_text().strip()
        tcp = authed_to(port, token)
        expected = {"code": "idle", "message": "closed after 1 s without a request"}
        assert tcp.line()["error"] == expected and tcp.closed()
        for sock in idle:
            line = b""
            while not line.endswith(b"\n"):
                chunk = sock.recv(4096)
                assert chunk, f"closed without a line, got {line!r}"
                line += chunk
            assert json.loads(line)["error"] == expected
    finally:
        for sock in idle:
            sock.close()
        proc.stop()


def authed_to(port: int, token: str) -> Tcp:
    conn = Tcp(port)
    assert conn.request({"token": token})["ok"] is True
    return conn


def test_serve_fails_cleanly_on_a_bad_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("good-token-0123456789abcdef")
    token_file.chmod(0o644)
    argv = ["--tcp-control", "127.0.0.1:0", "--tcp-control-token", str(token_file)]
    with pytest.raises(AssertionError, match="readable by others"):
        ServeProcess(tmp_path, None, *argv)  # fails waiting for "ready", log attached
    log = (tmp_path / "serve.log").read_text()
    assert '"event": "start_failed"' in log and '"event": "ready"' not in log
