"""A minimal STUN server (RFC 5389 Binding) on 127.0.0.1 for tests.

It answers every Binding request with an XOR-MAPPED-ADDRESS of ``mapped_ip`` (a
loopback address, so whatever the engine then advertises stays on this machine)
and the request's own source port, and counts the requests it answered.
"""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType

MAGIC = 0x2112A442
BINDING_REQUEST, BINDING_RESPONSE, XOR_MAPPED_ADDRESS = 0x0001, 0x0101, 0x0020


class StunServer:
    def __init__(self, mapped_ip: str = "127.0.0.77") -> None:
        self.mapped_ip = mapped_ip
        self.answered = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 20 or struct.unpack("!H", data[:2])[0] != BINDING_REQUEST:
                continue
            port = addr[1] ^ (MAGIC >> 16)
            ip = struct.unpack("!I", socket.inet_aton(self.mapped_ip))[0] ^ MAGIC
            attr = struct.pack("!HHBBHI", XOR_MAPPED_ADDRESS, 8, 0, 1, port, ip)
            header = struct.pack("!HHI", BINDING_RESPONSE, len(attr), MAGIC) + data[8:20]
            self._sock.sendto(header + attr, addr)
            self.answered += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()

    def __enter__(self) -> StunServer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
