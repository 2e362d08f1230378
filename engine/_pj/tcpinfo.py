"""Far ends of the engine's TCP connections, for ``transport`` events.

pjsua2 reports a TCP connection's state with an opaque handle only (TLS alone gets
a ``remoteAddr``). The kernel knows the far end: when a connection is reported up,
it is the one established socket of this process whose far end is not already
known; the answer is kept by handle for the later "disconnected" report. Linux
only (``/proc``); elsewhere, and when it is ambiguous, the far end stays "".
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct

_ESTABLISHED = "01"


def _fd_inodes() -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _address(hex_addr: str) -> str:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    # /proc prints the address as host-order 32-bit words.
    words = b"".join(struct.pack("<I", w) for w in struct.unpack(f">{len(raw) // 4}I", raw))
    if len(words) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, words)}:{int(port, 16)}"
    return f"[{socket.inet_ntop(socket.AF_INET6, words)}]:{int(port, 16)}"


def established_remotes() -> set[str]:
    """``host:port`` of every established TCP connection of this process."""
    mine = _fd_inodes()
    remotes = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == _ESTABLISHED and cols[9] in mine:
                    remotes.add(_address(cols[2]))
    return remotes


class TcpPeers:
    """The far end of each TCP connection pjsua2 told us about, by handle."""

    def __init__(self) -> None:
        self._by_handle: dict[int, str] = {}

    def connected(self, handle: int) -> str:
        new = established_remotes() - set(self._by_handle.values())
        remote = new.pop() if len(new) == 1 else ""
        self._by_handle[handle] = remote
        return remote

    def gone(self, handle: int) -> str:
        return self._by_handle.pop(handle, "")

    def known(self, handle: int) -> str:
        return self._by_handle.get(handle, "")
