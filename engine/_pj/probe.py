"""Measure how many simultaneous calls the loaded pjsua2 build really allows.

pjsua2 accepts any ``uaConfig.maxCalls`` and silently clamps it to the compile-time
``PJSUA_MAX_CALLS`` (4 in the PyPI wheel), and exposes no getter. So at start we
place calls to a throw-away loopback socket until ``makeCall`` says PJ_ETOOMANY,
answer each INVITE there with a stateless 503, and let pjsua2 clear the calls.
About 10 ms; no packet leaves 127.0.0.1. The probe's RTP ports are the OS's choice,
so ports other engines hold in the configured RTP range cannot cut the count short.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import time

import pjsua2 as pj
import structlog

from .guard import PJ_ETOOMANY, translate

log = structlog.get_logger("engine.probe")

_ECHO = ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")


def _reject(sock: socket.socket) -> None:
    """Answer every INVITE waiting on ``sock`` with a stateless 503."""
    while True:
        try:
            data, addr = sock.recvfrom(65535)
        except BlockingIOError:
            return
        lines = data.decode("utf-8", "replace").split("\r\n")
        if not lines or not lines[0].startswith("INVITE "):
            continue
        head = []
        for line in lines[1:]:
            if not line:
                break
            name = line.split(":", 1)[0].strip().lower()
            if name in _ECHO:
                head.append(line + (";tag=probe" if name in ("to", "t") else ""))
        reply = "SIP/2.0 503 Capacity Probe\r\n" + "\r\n".join(head)
        sock.sendto((reply + "\r\nContent-Length: 0\r\n\r\n").encode(), addr)


def probe_max_calls(ep: pj.Endpoint, udp_transport: int, ceiling: int, fallback: int) -> int:
    """Number of calls ``makeCall`` accepts at once, at most ``ceiling``.

    Only PJ_ETOOMANY ends the count: a probe cut short by anything else (a port taken,
    out of memory) says nothing of the build, so it gives ``fallback`` (the build's own
    figure) instead, with a warning naming the error."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    target = f"sip:capacity-probe@127.0.0.1:{sock.getsockname()[1]}"
    cfg = pj.AccountConfig()
    cfg.idUri = "sip:capacity-probe@127.0.0.1"
    cfg.sipConfig.transportId = udp_transport
    cfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    cfg.mediaConfig.transportConfig.port = 0
    acc = pj.Account()
    calls: list[pj.Call] = []
    try:
        acc.create(cfg)
        limit = 0
        while len(calls) < ceiling:
            call = pj.Call(acc)
            try:
                call.makeCall(target, pj.CallOpParam(True))
            except pj.Error as exc:
                if exc.status != PJ_ETOOMANY:
                    limit = min(ceiling, max(len(calls), fallback))
                    log.warning(
                        "capacity_probe_error",
                        error=translate("probe", exc).message,
                        detail=f"the probe stopped after {len(calls)} calls on an error "
                        f"other than 'too many'; using the build's figure, {limit}",
                    )
                break
            calls.append(call)
        limit = limit or len(calls)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(c.isActive() for c in calls):
            ep.libHandleEvents(5)
            _reject(sock)
        for c in calls:
            if c.isActive():
                with contextlib.suppress(pj.Error):
                    c.hangup(pj.CallOpParam())
        calls.clear()
        for _ in range(3):  # a just-ended call slot frees a few ms later
            ep.libHandleEvents(2)
    finally:
        calls.clear()
        with contextlib.suppress(pj.Error):
            acc.shutdown()
        del acc
        sock.close()
    return max(1, limit)


@dataclasses.dataclass(frozen=True)
class BuildFigures:
    """Compile-time figures of the loaded pjsua2 that no pjsua2 call reveals."""

    name: str
    #: ``PJSUA_MAX_CALLS``: the ceiling the capacity probe measures up to.
    max_calls: int
    #: ``PJSUA_MAX_ACC``: the wheel aborts on the account after it, so never probed.
    max_accounts: int
    #: C ``assert()`` live: some misuses abort the process instead of raising.
    assertions: bool


#: The PyPI wheel ``pjsua2-python==2.15.1.post1`` (measured; docs/pjsua2-builds.md),
#: and the safe assumption for any build that does not describe itself.
WHEEL = BuildFigures("pypi-wheel", max_calls=4, max_accounts=8, assertions=True)


def build_figures() -> BuildFigures:
    """The figures ``scripts/build-pjsua2`` records beside its build, else the wheel's."""
    try:
        import pjsua2_build  # type: ignore[import-not-found]
    except ImportError:
        return WHEEL
    return BuildFigures(
        "source",
        max_calls=int(pjsua2_build.MAX_CALLS),
        max_accounts=int(pjsua2_build.MAX_ACCOUNTS),
        assertions=bool(pjsua2_build.ASSERTIONS),
    )
