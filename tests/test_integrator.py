"""Issue 13, "an integrator's first hour": no silent failures, one way to find the engine."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from enginekit import BASE_INI, ServeProcess, write_ini

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
