"""The pjsua2 Endpoint subclass: endpoint-wide callbacks turned into events."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pjsua2 as pj

from ..events import CallRejected, TransportState
from ..sipuri import header_value, split_name_addr
from .guard import callback
from .tcpinfo import TcpPeers

if TYPE_CHECKING:
    from .stack import PjStack

_TP_STATES = {
    pj.PJSIP_TP_STATE_CONNECTED: "connected",
    pj.PJSIP_TP_STATE_DISCONNECTED: "disconnected",
    pj.PJSIP_TP_STATE_SHUTDOWN: "shutdown",
    pj.PJSIP_TP_STATE_DESTROY: "destroyed",
}


class SipEndpoint(pj.Endpoint):  # type: ignore[misc]
    def __init__(self, stack: PjStack) -> None:
        super().__init__()
        self.stack = stack
        self.tcp_peers = TcpPeers()

    @callback
    def onTransportState(self, prm: pj.OnTransportStateParam) -> None:
        state = _TP_STATES.get(prm.state, str(prm.state))
        handle = int(prm.hnd) if prm.hnd is not None else 0
        if state == "destroyed":
            self.tcp_peers.gone(handle)
            return
        kind = str(prm.type).lower()
        error = ""
        if prm.lastError:
            error = self.utilStrError(prm.lastError)
        verified: bool | None = None
        messages: tuple[str, ...] = ()
        remote = ""
        if kind.startswith(("tcp", "tls")):
            connected = state == "connected"
            remote = self.tcp_peers.connected(handle) if connected else self.tcp_peers.known(handle)
        if "tls" in kind:
            info = prm.tlsInfo
            remote = str(info.remoteAddr) or remote  # empty once the connection is gone
            if not info.isEmpty():
                verified = int(info.verifyStatus) == 0
                messages = tuple(str(m) for m in info.verifyMsgs)
        self.stack.emit(
            TransportState(
                kind=kind,
                remote=remote,
                state=state,
                error=error,
                verified=verified,
                verify_errors=messages,
            )
        )
        if state == "disconnected" and kind.startswith(("tcp", "tls")):
            for acc in list(self.stack.accounts.values()):
                acc.connection_lost(error, remote)

    @callback
    def onRejectedIncomingCall(self, prm: pj.OnRejectedIncomingCallParam) -> None:
        self.stack.emit(
            CallRejected(
                remote_uri=split_name_addr(str(prm.remoteInfo))[1],
                sip_call_id=header_value(str(prm.rdata.wholeMsg), "Call-ID", "i") or "",
                code=int(prm.statusCode),
                reason=str(prm.reason),
            )
        )
