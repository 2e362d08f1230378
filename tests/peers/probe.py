"""A raw SIP OPTIONS probe over UDP, for readiness checks without any SIP stack."""

from __future__ import annotations

import socket
import time
import uuid

__all__ = ["options_status"]


def options_status(host: str, port: int, *, timeout: float = 0.5) -> int | None:
    """Send one ``OPTIONS sip:host:port`` and return the final status code.

    Returns None when no final response with our Call-ID arrives in time
    (provisional responses and strays are ignored).
    """
    if host not in {"127.0.0.1", "::1"}:
        raise ValueError(f"probes go to loopback only, not {host}")
    call_id = f"{uuid.uuid4().hex}@probe"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local_port = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1:{local_port}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Accept: application/sdp\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (host, port))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65535)
            except (TimeoutError, ConnectionRefusedError):
                # ICMP port unreachable surfaces as ConnectionRefusedError.
                return None
            code = _final_status(data.decode("utf-8", errors="replace"), call_id)
            if code is not None:
                return code
    return None


def _final_status(message: str, call_id: str) -> int | None:
    lines = message.split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[0] != "SIP/2.0" or not status[1].isdigit():
        return None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in {"call-id", "i"} and value.strip() == call_id:
            code = int(status[1])
            return code if code >= 200 else None
    return None
