"""``--sip-port 0``: any free port will do, so a taken TCP twin is no reason to fail."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from enginekit import Engines, engines_fixture, sip_port

from engine._pj.endpoint import SipEndpoint


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def test_a_random_port_whose_tcp_twin_is_taken_is_replaced(
    engines: Engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OS picks the UDP port; the test takes the same TCP port before pjsua binds
    TCP on it (a real EADDRINUSE). The engine must start on another port pair."""
    occupied: list[socket.socket] = []
    create = SipEndpoint.transportCreate

    def create_then_take_the_twin(self: SipEndpoint, kind: Any, cfg: Any) -> Any:
        tid = create(self, kind, cfg)
        info = self.transportGetInfo(tid)
        if str(info.typeName).upper() == "UDP" and not occupied:
            port = int(str(info.localName).rsplit(":", 1)[1])
            blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            blocker.bind(("127.0.0.1", port))
            blocker.listen()
            occupied.append(blocker)
        return tid

    monkeypatch.setattr(SipEndpoint, "transportCreate", create_then_take_the_twin)
    try:
        manager, _ = engines.start()
        taken = occupied[0].getsockname()[1]
        udp, tcp = sip_port(manager, "udp"), sip_port(manager, "tcp")
        assert udp == tcp != taken
        assert manager.status()["accounts"]
    finally:
        for blocker in occupied:
            blocker.close()
