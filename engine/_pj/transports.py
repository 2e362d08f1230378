"""SIP transports (UDP, TCP, TLS on one port where possible) and codec priorities."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING

import pjsua2 as pj

from ..errors import EngineError
from .guard import translate

if TYPE_CHECKING:
    from .stack import StackSettings

EADDRINUSE = 120098
_TYPES = {"udp": "PJSIP_TRANSPORT_UDP", "tcp": "PJSIP_TRANSPORT_TCP", "tls": "PJSIP_TRANSPORT_TLS"}

Transports = dict[str, tuple[int, "TransportInfo"]]


@dataclasses.dataclass(frozen=True)
class TransportInfo:
    kind: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.host}:{self.port}"


def bind_transports(ep: pj.Endpoint, s: StackSettings) -> tuple[Transports, tuple[str, int] | None]:
    """UDP first (it is also the loop's wake-up channel), then TCP on the same port,
    TLS on the next free one. The preferred port falls back to a free one if taken.
    Returns the transports and the address to send wake-up CRLFs to (or None)."""
    kinds = ("udp", *[k for k in s.transports if k != "udp"])
    # Port 0 binds UDP where the OS likes, then TCP on the same number, which can be
    # taken: any port will do, so try other pairs as a fallback would.
    retry = s.port_fallback or s.sip_port == 0
    ports = [s.sip_port] + ([0] * 5 if retry else [])
    last: EngineError | None = None
    for port in ports:
        made: Transports = {}
        try:
            _bind_all(ep, s, kinds, port, made)
        except pj.Error as exc:
            last = translate(f"binding SIP port {port or 'auto'}", exc)
            for tid, _ in made.values():
                with contextlib.suppress(pj.Error):
                    ep.transportClose(tid)
            if exc.status != EADDRINUSE and port != 0:
                break
            continue
        udp = made["udp"][1]
        wake_host = s.bind_address or "127.0.0.1"
        wake = ("127.0.0.1", udp.port) if wake_host in ("0.0.0.0", "127.0.0.1") else None
        return made, wake
    assert last is not None
    raise last


def _bind_all(
    ep: pj.Endpoint, s: StackSettings, kinds: tuple[str, ...], port: int, made: Transports
) -> None:
    for kind in kinds:
        tc = pj.TransportConfig()
        tc.port = 0 if kind == "tls" else port
        tc.boundAddress = s.bind_address
        tc.publicAddress = s.public_address
        if kind == "tls":
            _tls(tc.tlsConfig, s)
        tid = ep.transportCreate(getattr(pj, _TYPES[kind]), tc)
        info = ep.transportGetInfo(tid)
        host, _, bound = str(info.localName).rpartition(":")
        made[kind] = (tid, TransportInfo(kind, host, int(bound)))
        if kind == "udp":
            port = int(bound)


def _tls(tls: pj.TlsConfig, s: StackSettings) -> None:
    """TLS 1.2 or 1.3 (whatever the build's OpenSSL has: the wheel's 1.0.2k stops at
    1.2); never older. Server certificates verified."""
    tls.method = pj.PJSIP_TLSV1_2_METHOD
    # ``proto`` wins over ``method`` when set (pjsip_tls_setting): a set of versions.
    tls.proto = pj.PJ_SSL_SOCK_PROTO_TLS1_2 | pj.PJ_SSL_SOCK_PROTO_TLS1_3
    tls.verifyServer = s.tls_verify_server
    if s.tls_ca_file:
        tls.CaListFile = s.tls_ca_file
    if s.tls_cert_file:
        tls.certFile = s.tls_cert_file
        tls.privKeyFile = s.tls_key_file


def set_codecs(ep: pj.Endpoint, codecs: tuple[str, ...]) -> list[str]:
    """Only the listed codecs, in order (speex would win by default and garble).
    Returns the listed names this build does not have (Opus on the PyPI wheel)."""
    wanted = [c.lower() for c in codecs]
    found: set[str] = set()
    for info in ep.codecEnum2():
        cid = str(info.codecId)
        prio = 0
        for rank, name in enumerate(wanted):
            if cid.lower() == name or cid.lower().startswith(name + "/"):
                prio = max(1, 255 - rank)
                found.add(name)
        ep.codecSetPriority(cid, prio)
    return [c for c, name in zip(codecs, wanted, strict=True) if name not in found]


#: TLS 1.3 cipher suites (RFC 8446); an OpenSSL that offers none of them has no 1.3.
_TLS13_SUITES = {0x1301, 0x1302, 0x1303}


def tls_max_version(ep: pj.Endpoint) -> str:
    """Measured, not assumed: the wheel's OpenSSL 1.0.2k offers no TLS 1.3 suite."""
    try:
        suites = set(ep.utilSslGetAvailableCiphers())
    except pj.Error:
        return "none"
    if not suites:
        return "none"
    return "1.3" if suites & _TLS13_SUITES else "1.2"
