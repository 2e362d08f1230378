"""The engine opens no UDP port the user did not ask for.

Before the fix, the SIP thread's wake-up socket was auto-bound to 0.0.0.0 by its
first send, even with ``--bind 127.0.0.1``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from enginekit import ServeProcess

from .wire import ini, sip_port, udp_sockets


def test_every_udp_socket_is_on_the_bound_address(tmp_path: Path) -> None:
    engine = ServeProcess(tmp_path, ini())
    try:
        with contextlib.closing(engine.client()) as client:
            for _ in range(3):  # commands wake the SIP thread: its socket is in use now
                client.request("status")
        sockets = udp_sockets(engine.proc.pid)
        assert ("127.0.0.1", sip_port(engine, "udp")) in sockets, sockets
        assert len(sockets) >= 2, f"the wake-up socket was never used: {sockets}"
        assert {addr for addr, _ in sockets} == {"127.0.0.1"}, sockets
    finally:
        engine.stop()
