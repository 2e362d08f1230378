"""A loopback RTP sink: stands in for a far end's media port and keeps what arrives,
so a test measures exactly what the engine sent (RFC 3550 header, PCMU payload)."""

from __future__ import annotations

import socket
import struct
import threading

from audio import FloatArray, ulaw_decode
from peers.process import wait_until

PCMU = 0


class RtpSink:
    """Receives RTP on ``127.0.0.1:<port>`` in a thread until :meth:`close`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.packets: list[tuple[int, int, bytes]] = []  # (payload type, seq, payload)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 12 or data[0] >> 6 != 2:
                continue  # not RTP version 2
            cc = data[0] & 0x0F
            pt = data[1] & 0x7F
            (seq,) = struct.unpack("!H", data[2:4])
            with self._lock:
                self.packets.append((pt, seq, data[12 + 4 * cc :]))

    def payload_types(self) -> set[int]:
        with self._lock:
            return {pt for pt, _, _ in self.packets}

    def count(self) -> int:
        with self._lock:
            return len(self.packets)

    def wait_packets(self, count: int, timeout: float) -> None:
        wait_until(lambda: self.count() >= count, timeout, f"{count} RTP packets", interval=0.05)

    def pcmu_audio(self) -> FloatArray:
        """The PCMU stream decoded in arrival order (8 kHz samples)."""
        with self._lock:
            payload = b"".join(p for pt, _, p in self.packets if pt == PCMU)
        return ulaw_decode(payload)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
