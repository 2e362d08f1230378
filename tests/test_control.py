"""The command registry and the control socket, against a real server and bus."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from peers.process import wait_until

from engine.bus import EventBus
from engine.commands import CommandError, CommandRegistry, Param
from engine.control import (
    ControlClient,
    ControlServer,
    EngineNotRunning,
    RemoteError,
    default_socket_path,
    ensure_private_dir,
)
from engine.errors import EngineError, NotFoundError
from engine.events import CallState, CallStateName, MessageReceived, RegistrationChanged, RegState

TIMEOUT = 5.0

# ---------------------------------------------------------------- helpers


class Raw:
    """A bare socket speaking lines, for what the polite client never sends."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
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

    def close(self) -> None:
        self.sock.close()


def ask(path: str, cmd: str, **params: Any) -> Any:
    """One request on a fresh client connection."""
    with ControlClient(path, timeout=TIMEOUT) as client:
        return client.request(cmd, **params)


def make_registry(touched: list[str]) -> CommandRegistry:
    registry = CommandRegistry()

    @registry.command(
        "echo", help="Echo text.", params={"text": str, "times": int | None, "loud": bool | None}
    )
    def echo(text: str, times: int = 1, loud: bool = False) -> dict[str, Any]:
        return {"text": text, "times": times, "loud": loud}

    def lookup(call: int) -> None:
        raise NotFoundError(f"no call {call}")

    def boom() -> None:
        raise RuntimeError("secret detail")

    registry.register("add", lambda a, b: a + b, help="Add.", params={"a": int, "b": int})
    registry.register("ratio", lambda x: x, help="Float.", params={"x": Param(float, help="x")})
    registry.register("lookup", lookup, help="Not found.", params={"call": int})
    registry.register("boom", boom, help="Crash.")
    registry.register("unencodable", lambda: object(), help="Bad result.")
    registry.register("touch", lambda: touched.append("touched"), help="Side effect.")
    return registry


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def sockdir() -> Iterator[str]:
    """A short private directory (AF_UNIX paths are limited to 107 bytes)."""
    path = tempfile.mkdtemp(prefix="msc-")
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
    sockdir: str, bus: EventBus, touched: list[str]
) -> Iterator[Callable[..., ControlServer]]:
    servers: list[ControlServer] = []

    def make(path: str | None = None, **kwargs: Any) -> ControlServer:
        path = path or os.path.join(sockdir, "ctl", "control.sock")
        server = ControlServer(make_registry(touched), bus, path, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def server(make_server: Callable[..., ControlServer]) -> ControlServer:
    return make_server()


@pytest.fixture
def raw(server: ControlServer) -> Iterator[Raw]:
    conn = Raw(server.path)
    yield conn
    conn.close()


# ---------------------------------------------------------------- the registry


def test_registry_validates_and_calls() -> None:
    """Types are strict (no bool for int), floats accept ints, unknown keys fail."""
    reg = make_registry([])
    assert reg.call("add", {"a": 2, "b": 3}) == 5
    assert reg.call("ratio", {"x": 2}) == 2.0
    assert reg.call("echo", {"text": "x"}) == {"text": "x", "times": 1, "loud": False}
    cases = {
        "missing required parameter 'b'": {"a": 1},
        "parameter 'a' must be int, got bool": {"a": True, "b": 1},
        "parameter 'b' must be int, got str": {"a": 1, "b": "2"},
        "unknown parameter 'c'": {"a": 1, "b": 2, "c": 3},
        "params must be an object": [1, 2],
    }
    for text, params in cases.items():
        with pytest.raises(CommandError, match=text) as info:
            reg.call("add", params)  # type: ignore[arg-type]
        assert info.value.code == "bad_params"
        assert info.value.message.startswith("add: ")
    with pytest.raises(CommandError, match="unknown command 'nope'") as info:
        reg.call("nope", {})
    assert info.value.code == "unknown_command"


def test_registry_refuses_bad_registrations() -> None:
    """Wiring mistakes fail at registration, not at the first call."""
    reg = CommandRegistry()
    with pytest.raises(ValueError, match="reserved"):
        reg.register("subscribe", lambda: None, help="")
    with pytest.raises(ValueError, match="bad command name"):
        reg.register("Dial Now", lambda: None, help="")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("help", lambda: None, help="")
    with pytest.raises(ValueError, match="does not accept 'x'"):
        reg.register("a", lambda: None, help="", params={"x": int})
    with pytest.raises(ValueError, match="'x' is required by the function"):
        reg.register("b", lambda x: None, help="")
    with pytest.raises(ValueError, match="needs a default"):
        reg.register("c", lambda x: None, help="", params={"x": Param(int, required=False)})
    with pytest.raises(ValueError, match="parameter type"):
        reg.register("d", lambda x: None, help="", params={"x": list})
    assert reg.names() == ["help"]


def test_help_describes_commands() -> None:
    """``help`` is built in and lists types, requiredness and help text."""
    reg = make_registry([])
    described = reg.call("help", {"command": "echo"})["commands"]
    assert described == [
        {
            "name": "echo",
            "help": "Echo text.",
            "params": {
                "text": {"type": "str", "required": True, "help": ""},
                "times": {"type": "int", "required": False, "help": ""},
                "loud": {"type": "bool", "required": False, "help": ""},
            },
        }
    ]
    assert [c["name"] for c in reg.call("help")["commands"]] == reg.names()


# ---------------------------------------------------------------- paths


def test_registry_close_runs_what_commands_own_once_newest_first() -> None:
    closed: list[str] = []
    with CommandRegistry() as reg:
        reg.on_close(lambda: closed.append("queue"))
        reg.on_close(lambda: closed.append("player"))
    assert closed == ["player", "queue"]
    reg.close()
    assert closed == ["player", "queue"]


def test_default_socket_path(tmp_path: Any) -> None:
    """Explicit variable, then XDG_RUNTIME_DIR if it is a directory, then /tmp."""
    assert default_socket_path({"MICROSIP_CONTROL": "/x/y.sock"}) == "/x/y.sock"
    runtime = str(tmp_path)
    expected = os.path.join(runtime, "microsip-engine", "control.sock")
    assert default_socket_path({"XDG_RUNTIME_DIR": runtime, "MICROSIP_CONTROL": ""}) == expected
    fallback = f"/tmp/microsip-engine-{os.getuid()}/control.sock"
    assert default_socket_path({"XDG_RUNTIME_DIR": str(tmp_path / "missing")}) == fallback
    assert default_socket_path({}) == fallback


def test_ensure_private_dir(sockdir: str) -> None:
    """Created 0700; a loose mode is tightened; symlinks and sticky dirs are refused."""
    created = ensure_private_dir(os.path.join(sockdir, "a", "s.sock"))
    assert stat.S_IMODE(os.stat(created).st_mode) == 0o700
    loose = os.path.join(sockdir, "b")
    os.mkdir(loose)
    os.chmod(loose, 0o755)
    ensure_private_dir(os.path.join(loose, "s.sock"))
    assert stat.S_IMODE(os.stat(loose).st_mode) == 0o700
    os.symlink(loose, os.path.join(sockdir, "link"))
    with pytest.raises(EngineError, match="symlink"):
        ensure_private_dir(os.path.join(sockdir, "link", "s.sock"))
    sticky = os.path.join(sockdir, "c")
    os.mkdir(sticky)
    os.chmod(sticky, 0o1777)
    with pytest.raises(EngineError, match="sticky"):
        ensure_private_dir(os.path.join(sticky, "s.sock"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_ensure_private_dir_refuses_foreign_owner(sockdir: str) -> None:
    """A directory pre-created by another user is never used."""
    foreign = os.path.join(sockdir, "foreign")
    os.mkdir(foreign, 0o700)
    os.chown(foreign, 65534, 65534)
    with pytest.raises(EngineError, match=f"{foreign} is owned by uid 65534"):
        ensure_private_dir(os.path.join(foreign, "s.sock"))


# ---------------------------------------------------------------- request / reply


def test_request_reply_with_ids(raw: Raw) -> None:
    """Any JSON scalar id is echoed; a missing id comes back as null."""
    for request_id in ("abc", 7, 2.5, True, None):
        reply = raw.request({"id": request_id, "cmd": "add", "params": {"a": 1, "b": 2}})
        assert reply == {"id": request_id, "ok": True, "result": 3}
    assert raw.request({"cmd": "echo", "params": {"text": "é"}})["id"] is None
    raw.send(b'{"id": 1, "cmd": "help"}\r\n')  # CRLF and absent params are fine
    assert raw.line()["ok"] is True


def test_client_request_and_errors(server: ControlServer) -> None:
    """The client returns results and raises RemoteError with code and message."""
    with ControlClient(server.path, timeout=TIMEOUT) as client:
        assert client.request("echo", text="hi", times=2) == {
            "text": "hi",
            "times": 2,
            "loud": False,
        }
        expected = {
            ("nope", ()): ("unknown_command", "unknown command 'nope'"),
            ("add", (("a", 1),)): ("bad_params", "add: missing required parameter 'b'"),
            ("add", (("a", 1), ("b", "x"))): ("bad_params", "add: parameter 'b' must be int"),
            ("lookup", (("call", 4),)): ("not_found", "no call 4"),
            ("boom", ()): ("internal_error", "internal error"),
            ("unencodable", ()): ("internal_error", "internal error"),
        }
        for (cmd, params), (code, text) in expected.items():
            with pytest.raises(RemoteError) as info:
                client.request(cmd, **dict(params))
            assert info.value.code == code
            assert info.value.message.startswith(text)
            assert "secret detail" not in info.value.message
        assert client.request("add", a=1, b=1) == 2  # the connection survived it all


def test_internal_error_is_logged_with_traceback(raw: Raw) -> None:
    """The generic reply hides the exception; the log keeps it."""
    with structlog.testing.capture_logs() as logs:
        reply = raw.request({"id": 1, "cmd": "boom"})
    assert reply["error"]["code"] == "internal_error"
    [entry] = [e for e in logs if e["event"] == "control_internal_error"]
    assert entry["cmd"] == "boom"
    assert entry["exc_info"] is True


def test_engine_not_running(sockdir: str) -> None:
    """An absent socket is EngineNotRunning, not a traceback."""
    with pytest.raises(EngineNotRunning):
        ask(os.path.join(sockdir, "none.sock"), "status")


GARBAGE = [
    (b"\xff\xfe\x00garbage", "bad_request", "not valid UTF-8"),
    (b'{"cmd": "add", "params": {"a"', "bad_request", "invalid JSON"),
    (b"[1, 2, 3]", "bad_request", "must be a JSON object"),
    (b'"add"', "bad_request", "must be a JSON object"),
    (b'{"id": [1], "cmd": "add"}', "bad_request", "'id' must be a JSON scalar"),
    (b'{"id": 1, "cmd": 5}', "bad_request", "'cmd' must be a string"),
    (b'{"id": 1, "cmd": "add", "extra": 1}', "bad_request", "unknown request key 'extra'"),
    (b'{"id": NaN, "cmd": "add"}', "bad_request", "invalid JSON"),
    (b'{"id": 1e999, "cmd": "add"}', "bad_request", "invalid JSON"),
    (b"[" * 200_000, "bad_request", "invalid JSON"),
    (b'{"id": 1, "cmd": "add", "params": [1]}', "bad_params", "add: params must be an object"),
]


def test_garbage_gets_error_replies(raw: Raw) -> None:
    """Each bad line gets one error reply and the connection keeps working."""
    for data, code, text in GARBAGE:
        raw.send(data + b"\n")
        reply = raw.line()
        assert reply["ok"] is False, data[:40]
        assert reply["error"]["code"] == code, data[:40]
        assert text in reply["error"]["message"], data[:40]
    raw.send(b"\n  \n")  # blank lines are ignored, not answered
    assert raw.request({"id": "after", "cmd": "add", "params": {"a": 1, "b": 1}})["result"] == 2


def test_oversize_line_does_not_disturb_others(server: ControlServer) -> None:
    """A 2 MiB line is refused as too_large while another client is served."""
    flood = Raw(server.path)
    sender = threading.Thread(
        target=flood.send, args=(b"x" * (2 << 20) + b"\n" + b'{"id":"next","cmd":"help"}\n',)
    )
    sender.start()
    with ControlClient(server.path, timeout=TIMEOUT) as other:
        for i in range(20):
            assert other.request("add", a=i, b=1) == i + 1
    sender.join(TIMEOUT)
    assert flood.line()["error"]["code"] == "too_large"
    assert flood.line()["id"] == "next"  # discarded up to the newline, then served
    flood.close()


# ---------------------------------------------------------------- events


def call_state(call: int = 1) -> CallState:
    return CallState(
        call=call,
        sip_call_id="abc@host",
        account=1,
        direction="out",
        state=CallStateName.CONFIRMED,
        code=200,
        reason="OK",
        remote_uri="sip:101@pbx",
    )


def registration() -> RegistrationChanged:
    return RegistrationChanged(
        account=1, uri="sip:me@pbx", state=RegState.REGISTERED, code=200, reason="OK"
    )


def test_subscribe_streams_events(server: ControlServer, bus: EventBus) -> None:
    """Every event arrives as its to_dict() line, in order."""
    client = ControlClient(server.path, timeout=TIMEOUT)
    with client.events(idle_timeout=TIMEOUT) as stream:
        bus.publish(registration())
        bus.publish(call_state())
        first, second = next(stream), next(stream)
    assert first["event"] == "registration" and first["state"] == "registered"
    assert second == call_state().to_dict() | {"time": second["time"]}
    assert second["event"] == "call_state" and second["state"] == "confirmed"


def test_subscribe_filter(raw: Raw, bus: EventBus) -> None:
    """Only the requested event types are streamed; input after subscribe is ignored."""
    reply = raw.request({"id": 9, "cmd": "subscribe", "params": {"events": ["call_state"]}})
    assert reply == {"id": 9, "ok": True, "result": {"events": ["call_state"]}}
    raw.send(b'{"id": 10, "cmd": "help"}\n')
    bus.publish(registration())
    bus.publish(call_state(call=3))
    event = raw.line()
    assert event["event"] == "call_state" and event["call"] == 3


def test_stream_survives_half_close_and_ends_on_hangup(
    server: ControlServer, bus: EventBus
) -> None:
    """``echo subscribe | socat`` half-closes and keeps reading; a full close ends it."""
    conn = Raw(server.path)
    assert conn.request({"cmd": "subscribe", "params": {"events": ["call_state"]}})["ok"]
    conn.sock.shutdown(socket.SHUT_WR)
    bus.publish(call_state(call=5))
    assert conn.line()["call"] == 5
    conn.close()
    wait_until(lambda: server.client_count == 0, TIMEOUT, "the hung-up subscriber to be dropped")


def test_close_ends_idle_streams(make_server: Callable[..., ControlServer]) -> None:
    """close() ends subscribers that are waiting for events, half-closed or not."""
    server = make_server()
    streams = [Raw(server.path), Raw(server.path)]
    for conn in streams:
        assert conn.request({"cmd": "subscribe"})["ok"]
    streams[0].sock.shutdown(socket.SHUT_WR)
    server.close()
    assert server.client_count == 0
    for conn in streams:
        with pytest.raises(EOFError):
            conn.line()
        conn.close()


def test_subscribe_bad_filter(raw: Raw) -> None:
    """A wrong filter is bad_params and leaves the connection in request mode."""
    for params in ({"events": ["nope"]}, {"events": "call_state"}, {"x": 1}, [1]):
        reply = raw.request({"id": 1, "cmd": "subscribe", "params": params})
        assert reply["error"]["code"] == "bad_params"
    assert raw.request({"id": 2, "cmd": "add", "params": {"a": 1, "b": 1}})["result"] == 2


def test_slow_subscriber_is_dropped(
    make_server: Callable[..., ControlServer], bus: EventBus
) -> None:
    """A client that stops reading overflows its buffer and is disconnected."""
    server = make_server(max_event_backlog=5)
    slow = Raw(server.path)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert slow.request({"cmd": "subscribe"})["ok"] is True
    body = "x" * 100_000
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        for _ in range(200):
            bus.publish(
                MessageReceived(account=1, from_uri="a", to_uri="b", content_type="t", body=body)
            )
        assert time.monotonic() - started < 1.0  # publishing never waited for the client
        wait_until(lambda: server.client_count == 0, TIMEOUT, "the slow subscriber to be dropped")
    assert any(e["event"] == "control_subscriber_overflow" for e in logs)
    with pytest.raises((EOFError, OSError)):
        while True:
            slow.line()
    slow.close()


# ---------------------------------------------------------------- socket lifecycle


def test_socket_and_directory_modes(server: ControlServer) -> None:
    """The socket is 0600 inside a 0700 directory."""
    st = os.stat(server.path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(server.path)).st_mode) == 0o700


def test_second_server_refuses_live_path(
    server: ControlServer, make_server: Callable[..., ControlServer]
) -> None:
    """A second engine on the same path fails and leaves the first one serving."""
    with pytest.raises(EngineError, match="another engine is already running on"):
        make_server(server.path)
    assert ask(server.path, "add", a=1, b=2) == 3


def test_foreign_listener_is_not_replaced(
    sockdir: str, make_server: Callable[..., ControlServer]
) -> None:
    """Something answering on the path (without our lock) also counts as running."""
    path = os.path.join(sockdir, "ctl", "control.sock")
    ensure_private_dir(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(path)
        other.listen(1)
        with pytest.raises(EngineError, match="already running"):
            make_server(path)
        assert os.path.exists(path)


def test_stale_socket_is_replaced(sockdir: str, make_server: Callable[..., ControlServer]) -> None:
    """A socket file nobody listens on (a crashed engine) is removed and reused."""
    path = os.path.join(sockdir, "ctl", "control.sock")
    ensure_private_dir(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(path)
    server = make_server(path)
    assert ask(path, "add", a=2, b=2) == 4
    server.close()
    assert not os.path.exists(path)
    server.close()  # twice is harmless
    with pytest.raises(EngineNotRunning):
        ask(path, "help")


def test_command_may_close_the_server(server: ControlServer, raw: Raw) -> None:
    """An ``exit``-like command that closes the server still gets its reply."""
    server.registry.register("exit", lambda: server.close() or "bye", help="Stop.")
    idle = Raw(server.path)
    assert idle.request({"cmd": "help"})["ok"]
    assert raw.request({"id": 1, "cmd": "exit"}) == {"id": 1, "ok": True, "result": "bye"}
    for conn in (raw, idle):
        with pytest.raises(EOFError):
            conn.line()
    idle.close()
    assert not os.path.exists(server.path)


def test_regular_file_is_never_removed(
    sockdir: str, make_server: Callable[..., ControlServer]
) -> None:
    """Only a socket is ever unlinked."""
    path = os.path.join(sockdir, "ctl", "control.sock")
    ensure_private_dir(path)
    with open(path, "w") as f:
        f.write("precious")
    with pytest.raises(EngineError, match="not a socket"):
        make_server(path)
    with open(path) as f:
        assert f.read() == "precious"


def test_too_many_clients(make_server: Callable[..., ControlServer]) -> None:
    """Beyond max_clients, with no connection idle long enough to give way, a new
    connection gets one 'busy' line and is closed."""
    server = make_server(max_clients=2, evict_grace=60.0)
    held = [Raw(server.path), Raw(server.path)]
    for conn in held:
        assert conn.request({"cmd": "help"})["ok"] is True
    extra = Raw(server.path)
    assert extra.line()["error"]["code"] == "busy"
    for conn in (*held, extra):
        conn.close()


# ---------------------------------------------------------------- idle clients


def assert_closed_for_idleness(conn: Raw) -> str:
    """The connection gets one ``idle`` line (id null), then its end; the message."""
    reply = conn.line()
    assert reply["id"] is None and reply["ok"] is False, reply
    assert reply["error"]["code"] == "idle", reply
    with pytest.raises(EOFError):
        conn.line()
    message: str = reply["error"]["message"]
    return message


def idle_connections(server: ControlServer, count: int) -> list[Raw]:
    """``count`` connections that never send anything, once the server serves them all."""
    conns = [Raw(server.path) for _ in range(count)]
    wait_until(
        lambda: server.client_count == count, TIMEOUT, f"{count} idle connections to be admitted"
    )
    return conns


def test_a_new_client_is_served_beside_64_idle_connections(server: ControlServer) -> None:
    """The default limits leave room beside 64 connections that never send anything
    (issue 14: they used to fill the cap and every new client got ``busy``)."""
    idle = idle_connections(server, 64)
    assert ask(server.path, "echo", text="through") == {
        "text": "through",
        "times": 1,
        "loud": False,
    }
    wait_until(lambda: server.client_count == 64, TIMEOUT, "the client to leave")  # nobody gave way
    for conn in idle:
        conn.close()


def test_a_full_house_of_idle_connections_gives_way(
    make_server: Callable[..., ControlServer],
) -> None:
    """Every slot held by an idle connection: the one idle the longest is told why
    and closed, and the new client is served in its slot."""
    server = make_server(max_clients=64, evict_grace=0.0)
    idle = idle_connections(server, 64)
    assert ask(server.path, "echo", text="in")["text"] == "in"
    message = assert_closed_for_idleness(idle[0])  # the oldest
    assert "all 64 connections were in use" in message
    assert idle[1].request({"id": 1, "cmd": "echo", "params": {"text": "x"}})["ok"] is True
    for conn in idle:
        conn.close()


def test_busy_connections_and_streams_never_give_way(
    make_server: Callable[..., ControlServer], bus: EventBus
) -> None:
    """A subscriber is not idle, and streams leave one slot for requests."""
    server = make_server(max_clients=2, evict_grace=0.0)
    stream = Raw(server.path)
    assert stream.request({"id": "s", "cmd": "subscribe"})["ok"] is True
    second = Raw(server.path)
    reply = second.request({"id": "t", "cmd": "subscribe"})
    assert reply["id"] == "t" and reply["error"]["code"] == "busy"
    assert "max 1" in reply["error"]["message"]
    assert second.request({"id": 2, "cmd": "add", "params": {"a": 1, "b": 1}})["result"] == 2
    assert ask(server.path, "add", a=2, b=2) == 4  # took the idle second's slot
    assert_closed_for_idleness(second)
    bus.publish(call_state(call=7))
    assert stream.line()["call"] == 7
    stream.close()


def test_an_idle_connection_is_closed_after_the_idle_timeout(
    make_server: Callable[..., ControlServer], bus: EventBus
) -> None:
    """Silent, half a line, or done with its requests: closed after ``idle_timeout``
    with a line saying so. An event stream stays."""
    server = make_server(idle_timeout=0.3)
    stream = Raw(server.path)
    assert stream.request({"id": "s", "cmd": "subscribe"})["ok"] is True
    silent, partial, used = Raw(server.path), Raw(server.path), Raw(server.path)
    partial.send(b'{"cmd": "ec')
    assert used.request({"id": 1, "cmd": "add", "params": {"a": 1, "b": 2}})["result"] == 3
    for conn in (silent, partial, used):
        assert "after 0.3 s without a request" in assert_closed_for_idleness(conn)
    bus.publish(call_state(call=8))
    assert stream.line()["call"] == 8
    assert server.client_count == 1
    stream.close()


def test_the_client_reconnects_when_its_idle_connection_was_closed(
    make_server: Callable[..., ControlServer],
) -> None:
    """A long-lived ControlClient is not broken by the idle timeout: the engine read
    nothing after closing, so the client sends its request again, afresh."""
    server = make_server(idle_timeout=0.2)
    with ControlClient(server.path, timeout=TIMEOUT) as client:
        assert client.request("add", a=1, b=1) == 2
        wait_until(lambda: server.client_count == 0, TIMEOUT, "the idle connection to be closed")
        assert client.request("add", a=2, b=2) == 4


def test_idle_timeout_must_be_positive(bus: EventBus, sockdir: str) -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        ControlServer(CommandRegistry(), bus, os.path.join(sockdir, "c"), idle_timeout=0)


def _child_request_as(uid: int, path: str, out: int) -> None:
    """In a forked child: drop to ``uid``, send one request, write the outcome to ``out``."""
    try:
        signal.alarm(int(TIMEOUT))
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        try:
            result = {"result": ask(path, "touch")}
        except RemoteError as exc:
            result = {"code": exc.code, "message": exc.message}
        os.write(out, json.dumps(result).encode())
    except BaseException as exc:
        os.write(out, json.dumps({"child_error": repr(exc)}).encode())
    finally:
        os._exit(0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_other_uid_is_forbidden(server: ControlServer, touched: list[str]) -> None:
    """SO_PEERCRED stops another uid even if the file modes were loosened."""
    private_dir = os.path.dirname(server.path)
    os.chmod(os.path.dirname(private_dir), 0o755)
    os.chmod(private_dir, 0o755)
    os.chmod(server.path, 0o666)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child_request_as(65534, server.path, write_end)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], TIMEOUT * 2)
        assert ready, "the child did not answer"
        reply = json.loads(os.read(read_end, 65536))
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert reply.get("code") == "forbidden", reply
    assert touched == []  # nothing was executed
    assert ask(server.path, "touch") is None  # we, the owner, may
    assert touched == ["touched"]


# ---------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=150, deadline=None)
REJECTIONS = {"bad_request", "bad_params", "unknown_command", "not_found", "too_large"}


def test_random_bytes_never_kill_the_server(make_server: Callable[..., ControlServer]) -> None:
    """Whatever bytes arrive, a later valid request on the same connection works."""
    server = make_server(max_line=64)  # small, so that over-long lines come up too

    @FUZZ
    @given(data=st.binary(max_size=300) | st.binary(min_size=60, max_size=300))
    def check(data: bytes) -> None:
        # Hypothesis also draws constants from our source: no stream, no crash commands.
        assume(not any(word in data for word in (b"subscribe", b"boom", b"unencodable")))
        conn = Raw(server.path)
        try:
            conn.send(data + b"\n" + b'{"id": "probe", "cmd": "add", "params": {"a": 1, "b": 2}}\n')
            while (reply := conn.line()).get("id") != "probe":
                assert reply["ok"] is False and reply["error"]["code"] in REJECTIONS
            assert reply["result"] == 3
        finally:
            conn.close()

    check()
    assert ask(server.path, "add", a=2, b=2) == 4


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
param_names = st.sampled_from(["a", "b", "text", "times", "loud", "x", "call", "command"])


def test_random_requests_get_a_reply(raw: Raw) -> None:
    """Any request object is answered: ok, or a validation/lookup error -- never a crash."""

    @FUZZ
    @given(
        cmd=st.sampled_from(["add", "echo", "ratio", "lookup", "help"]) | st.text(max_size=10),
        params=st.dictionaries(param_names | st.text(max_size=5), json_values, max_size=4),
    )
    def check(cmd: str, params: dict[str, Any]) -> None:
        # Hypothesis also draws constants from our source: no stream, no crash commands.
        assume(cmd not in {"subscribe", "boom", "unencodable"})
        raw.send(json.dumps({"id": "r", "cmd": cmd, "params": params}).encode() + b"\n")
        reply = raw.line()
        if not reply["ok"]:
            assert reply["error"]["code"] in REJECTIONS, reply
            # Only NaN/Infinity (invalid JSON, so no id could be read) lose the id.
            assert reply["id"] == "r" or reply["error"]["code"] == "bad_request"
        else:
            assert reply["id"] == "r"

    check()
