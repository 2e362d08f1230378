"""Raw SIP on loopback for the safety suite: an engine in a child process (an abort
must fail the test, not kill pytest), hand-made requests over UDP or TCP, and the
responses read back with a hard timeout.

The messages here are test input - deliberately odd ones included. The engine never
writes SIP by hand; these tests do, to see what it answers.
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from enginekit import ServeProcess

Transport = Literal["udp", "tcp"]

SDP = (
    "v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
RESPONSE_WAIT = 5.0


def ini(**settings: object) -> str:
    """A loopback engine's microsip.ini; ``settings`` are extra ``[Settings]`` keys."""
    base: dict[str, object] = {"accountId": 0, "enableLocalAccount": 1, "sourcePort": 0}
    base["audioCodecs"] = "PCMU/8000/1"
    # RTP in a range of its own: other engines on the machine crowd the default
    # 4000+, and a call whose media cannot bind is answered 500.
    low = random.randrange(20000, 60000, 2)
    base |= {"rtpPortMin": low, "rtpPortMax": low + 400}
    base.update(settings)
    lines = ["[Settings]"]
    lines += [f"{k}={v}" for k, v in base.items() if not k.startswith("Account")]
    lines += ["[Account0]", "transport="]
    for key, value in settings.items():
        if key.startswith("Account"):
            lines.append(f"[{key}]")
            lines += str(value).split("\n")
    return "\n".join(lines) + "\n"


@dataclass
class Response:
    code: int
    phrase: str
    text: str

    def header(self, name: str) -> str | None:
        for line in self.text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


@dataclass
class Peer:
    """A SIP client socket on 127.0.0.1 talking to the engine's ``port``."""

    transport: Transport
    port: int
    sock: socket.socket = field(init=False)
    local_port: int = field(init=False)
    _buffer: bytes = b""

    def __post_init__(self) -> None:
        if self.transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
        else:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.local_port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def send(self, message: str | bytes) -> None:
        data = message.encode() if isinstance(message, str) else message
        if self.transport == "udp":
            self.sock.sendto(data, ("127.0.0.1", self.port))
        else:
            self.sock.sendall(data)

    def _read_one(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            if self.transport == "udp":
                return self.sock.recv(65535)
            while True:
                framed = _frame(self._buffer)
                if framed is not None:
                    msg, self._buffer = framed
                    return msg
                chunk = self.sock.recv(65535)
                if not chunk:
                    return None
                self._buffer += chunk
        except TimeoutError:
            return None

    def responses(self, call_id: str, timeout: float = RESPONSE_WAIT) -> Iterator[Response]:
        """Responses for ``call_id`` as they come, until ``timeout`` s pass quietly."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            raw = self._read_one(left)
            if raw is None:
                return
            text = raw.decode("utf-8", "replace")
            if not text.startswith("SIP/2.0 ") or call_id not in text:
                continue  # a keep-alive, a request, or another call's retransmission
            status = text.split("\r\n", 1)[0].split(" ", 2)
            yield Response(int(status[1]), status[2] if len(status) > 2 else "", text)

    def final(self, call_id: str, timeout: float = RESPONSE_WAIT) -> Response | None:
        """The first final response for ``call_id`` (None: none in time)."""
        for response in self.responses(call_id, timeout):
            if response.code >= 200:
                return response
        return None

    def first(self, call_id: str, timeout: float = RESPONSE_WAIT) -> Response | None:
        """The first response of any kind except 100 Trying."""
        for response in self.responses(call_id, timeout):
            if response.code != 100:
                return response
        return None


def _frame(buffer: bytes) -> tuple[bytes, bytes] | None:
    """One message off a TCP stream (by its Content-Length), or None: need more."""
    buffer = buffer.lstrip(b"\r\n")
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    length = 0
    for line in buffer[:end].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() in (b"content-length", b"l"):
            length = int(value.strip() or 0)
    total = end + 4 + length
    if len(buffer) < total:
        return None
    return buffer[:total], buffer[total:]


def invite(
    peer: Peer,
    *,
    caller: str = "alice",
    user: str = "test",
    sdp: bool = True,
    call_id: str | None = None,
    extra: str = "",
) -> tuple[str, str]:
    """An ordinary INVITE to the engine; returns (Call-ID, message)."""
    call_id = call_id or uuid.uuid4().hex
    tag = call_id[:8]
    body = SDP if sdp else ""
    kind = peer.transport.upper()
    lines = [
        f"INVITE sip:{user}@127.0.0.1:{peer.port} SIP/2.0",
        f"Via: SIP/2.0/{kind} 127.0.0.1:{peer.local_port};branch=z9hG4bK{call_id}",
        f"From: <sip:{caller}@127.0.0.1:{peer.local_port}>;tag={tag}",
        f"To: <sip:{user}@127.0.0.1:{peer.port}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:{caller}@127.0.0.1:{peer.local_port};transport={peer.transport}>",
        "Max-Forwards: 70",
    ]
    if extra:
        lines += extra.strip("\r\n").split("\r\n")
    if sdp:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return call_id, "\r\n".join(lines) + "\r\n\r\n" + body


def ack(peer: Peer, response: Response) -> None:
    """ACK a final non-2xx response (same branch, the To tag of the response)."""
    via = response.header("Via") or ""
    to = response.header("To") or ""
    frm = response.header("From") or ""
    call_id = response.header("Call-ID") or ""
    uri = f"sip:test@127.0.0.1:{peer.port}"
    peer.send(
        f"ACK {uri} SIP/2.0\r\nVia: {via}\r\nFrom: {frm}\r\nTo: {to}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )


def sip_port(engine: ServeProcess, transport: Transport) -> int:
    for addr in engine.ready["sip"]:
        if addr.startswith(transport + ":"):
            return int(addr.rsplit(":", 1)[1])
    raise AssertionError(f"no {transport} transport in {engine.ready['sip']}")


def alive(engine: ServeProcess) -> None:
    """The engine process still runs and its SIP thread still answers."""
    code = engine.proc.poll()
    assert code is None, (
        f"the engine died (exit {code}):\n" + engine.log_path.read_text(errors="replace")[-1500:]
    )
    with contextlib.closing(engine.client()) as client:
        client.request("status")


def udp_sockets(pid: int) -> list[tuple[str, int]]:
    """The (address, port) of every IPv4 UDP socket the process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = fd.readlink().as_posix()
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[9] in inodes:
            hex_addr, hex_port = cols[1].split(":")
            octets = bytes.fromhex(hex_addr)[::-1]
            found.append((".".join(str(b) for b in octets), int(hex_port, 16)))
    return found
