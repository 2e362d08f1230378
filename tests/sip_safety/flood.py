"""INVITE floods from SIPp (``scenarios/burst.xml``), judged by SIPp's stats CSV.

Shared by the flood tests and ``scripts/bench.py`` (the highest INVITE rate the
engine answers without loss).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from enginekit import ServeProcess
from peers.sipp import SippFactory, SippResult

from .wire import Transport, sip_port

BURST = Path(__file__).with_name("scenarios") / "burst.xml"
#: The offer in SIPp's own syntax ([len] and [media_port] are SIPp's).
SDP_CONTENT = """Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000"""
NO_SDP_CONTENT = "Content-Length: 0\n"


@dataclass(frozen=True)
class Burst:
    rate: float
    seconds: float
    #: "alice" for one caller; "[call_number]" in it gives each call its own.
    caller: str = "alice"
    sdp: bool = True
    transport: Transport = "udp"
    #: How long a ringing call rings before SIPp CANCELs it.
    ring_ms: int = 1000

    @property
    def calls(self) -> int:
        return int(self.rate * self.seconds)


def run_burst(factory: SippFactory, engine: ServeProcess, burst: Burst) -> SippResult:
    """Send the burst and wait until SIPp has its final answers (or gives up)."""
    sipp = factory.uac(
        f"sip:test@127.0.0.1:{sip_port(engine, burst.transport)}",
        BURST,
        calls=burst.calls,
        rate=burst.rate,
        transport=burst.transport,
        timeout_s=burst.seconds + 25,
        params={
            "caller": burst.caller,
            "content": SDP_CONTENT if burst.sdp else NO_SDP_CONTENT,
            "ring_ms": burst.ring_ms,
        },
    )
    return sipp.wait()


def idle_after(engine: ServeProcess, timeout: float) -> float:
    """Seconds until the engine reports no call (raises after ``timeout``)."""
    start = time.monotonic()
    with contextlib.closing(engine.client()) as client:
        while True:
            calls = client.request("status")["capacity"]["calls"]
            if calls == 0:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{calls} calls still up {timeout} s after the burst")
            time.sleep(0.05)


def answered_call_completes(factory: SippFactory, engine: ServeProcess) -> None:
    """DND off, AA on: an ordinary call is answered 200, talks, and ends."""
    with contextlib.closing(engine.client()) as client:
        client.request("toggle", name="DND", on=False)
        client.request("toggle", name="AA", on=True)
    sipp = factory.uac(
        f"sip:test@127.0.0.1:{sip_port(engine, 'udp')}",
        "uac_policy",
        hold_ms=500,
        params={"caller": "afterwards", "headers": "Subject: after the flood"},
    )
    result = sipp.wait(30)
    assert (result.successful, result.failed, result.received("200", 0)) == (1, 0, 1), result
