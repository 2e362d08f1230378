"""Accounts: MicroSIP ``[AccountN]`` settings → ``pj.AccountConfig``, registration, inbound."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import pjsua2 as pj
import structlog

from ..events import (
    Event,
    IncomingCall,
    MessageReceived,
    MessageStatus,
    MessageWaiting,
    RegistrationChanged,
    RegState,
)
from ..sipuri import header_value, split_name_addr, user_part
from ..state import AccountSnapshot
from .guard import callback
from .inbound import Fault, check_invite
from .status import PJSIP_EBUSY

if TYPE_CHECKING:
    from ..config import AccountConfig
    from .call import PjCall

log = structlog.get_logger("engine.account")

#: Registration retry after a failure: first delay, factor, cap (seconds).
RETRY_FIRST, RETRY_FACTOR, RETRY_MAX = 5.0, 2.0, 300.0

#: What a failed REGISTER most likely means, for the log line a user reads.
_HINTS = {
    401: " (wrong user name, authID or password?)",
    403: " (wrong user name, authID or password?)",
    404: " (unknown user or domain?)",
}

_SRTP = {
    "": pj.PJMEDIA_SRTP_DISABLED,
    "optional": pj.PJMEDIA_SRTP_OPTIONAL,
    "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
}


@dataclasses.dataclass
class RegStatus:
    state: RegState = RegState.UNREGISTERED
    code: int = 0
    reason: str = ""
    expires: int = 0
    failures: int = 0


def _with_scheme(host: str, transport: str) -> str:
    uri = host if host.lower().startswith(("sip:", "sips:")) else f"sip:{host}"
    if transport in ("tcp", "tls") and "transport=" not in uri.lower():
        uri += f";transport={transport}"
    return uri


def id_uri(acc: AccountConfig, local_host: str) -> str:
    """The From identity: ``"Display" <sip:user@domain>`` (local account: our address)."""
    domain = acc.domain or local_host
    uri = f"sip:{acc.username}@{domain}" if acc.username else f"sip:{domain}"
    if acc.display_name:
        name = acc.display_name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{name}" <{uri}>'
    return uri


def build_config(
    acc: AccountConfig, transport_id: int, local_host: str, password: str | None
) -> pj.AccountConfig:
    """Map every MicroSIP account key onto pjsua2's account configuration."""
    cfg = pj.AccountConfig()
    cfg.idUri = id_uri(acc, local_host)
    cfg.sipConfig.transportId = transport_id
    if acc.server:
        cfg.regConfig.registrarUri = _with_scheme(acc.server, acc.transport)
        cfg.regConfig.timeoutSec = max(10, acc.register_refresh)
        cfg.regConfig.retryIntervalSec = 0  # we retry ourselves, with backoff
        cfg.regConfig.registerOnAdd = True
        cfg.regConfig.unregWaitMsec = 1000
        cfg.regConfig.dropCallsOnFail = False
    proxies = pj.StringVector()
    for proxy in acc.proxy:
        uri = _with_scheme(proxy, acc.transport)
        proxies.append(uri if ";lr" in uri else uri + ";lr")
    cfg.sipConfig.proxies = proxies
    if acc.username or password:
        creds = pj.AuthCredInfoVector()
        creds.append(pj.AuthCredInfo("digest", "*", acc.auth_id or acc.username, 0, password or ""))
        cfg.sipConfig.authCreds = creds
    nat = cfg.natConfig
    nat.udpKaIntervalSec = max(0, acc.keep_alive)
    nat.iceEnabled = bool(acc.ice)
    nat.contactRewriteUse = 1 if acc.allow_rewrite else 0
    nat.viaRewriteUse = 1 if acc.allow_rewrite else 0
    nat.sdpNatRewriteUse = 1 if acc.allow_rewrite else 0
    nat.sipOutboundUse = 0
    cfg.mediaConfig.srtpUse = _SRTP.get(acc.srtp, pj.PJMEDIA_SRTP_DISABLED)
    cfg.mediaConfig.srtpSecureSignaling = 0  # SDES over UDP/TCP, as MicroSIP
    if acc.disable_session_timer:
        cfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_INACTIVE
    cfg.presConfig.publishEnabled = bool(acc.publish)
    cfg.mwiConfig.enabled = bool(acc.voicemail_number)
    return cfg


class AccountSink(Protocol):
    """What an account's callbacks hand their owner (PjStack): events, registration
    retries, and new inbound calls (adopted, then refused or decided on)."""

    def emit(self, event: Event) -> None: ...

    def schedule(self, delay: float, func: Callable[[], None]) -> None: ...

    def retry_registration(self, index: int, scheduled_by: object) -> None: ...

    def adopt_incoming(self, pj_acc: PjAccount, call_id: int) -> PjCall: ...

    def refuse(self, number: int, code: int, phrase: str = "", contact: str = "") -> None: ...

    def incoming_call(self, call: PjCall, message: str, fault: Fault | None = None) -> None: ...


class PjAccount(pj.Account):  # type: ignore[misc]
    """A pjsua2 account that reports registration, inbound calls and messages."""

    def __init__(self, sink: AccountSink, index: int, acc: AccountConfig, transport: str) -> None:
        super().__init__()
        self.sink = sink
        self.index = index
        self.config = acc
        self.transport = transport
        self.uri = ""
        self.registrar = _with_scheme(acc.server, acc.transport) if acc.server else ""
        self.reg = RegStatus(RegState.REGISTERING if acc.server else RegState.NONE)
        self.unregistering = False
        self.retired = False
        #: ``host:port`` the registrar's 200 came from ("" before): whose connection
        #: loss means ours.
        self.registrar_addr = ""

    def reconfigure(self, acc: AccountConfig, transport: str, uri: str) -> None:
        """New settings for this index (before ``modify``): back in service."""
        self.config, self.transport, self.uri = acc, transport, uri
        self.registrar = _with_scheme(acc.server, acc.transport) if acc.server else ""
        self.reg = RegStatus(RegState.REGISTERING if acc.server else RegState.NONE)
        self.unregistering = False
        self.retired = False
        self.registrar_addr = ""

    @property
    def connection_oriented(self) -> bool:
        """Does the registration travel over a TCP or TLS connection? Then losing that
        connection may mean the registrar lost our contact (e.g. it restarted)."""
        routes = [self.registrar, *self.config.proxy]
        return self.config.transport in ("tcp", "tls") or any(
            r.lower().startswith("sips:") or ";transport=t" in r.lower() for r in routes
        )

    def connection_lost(self, error: str, remote: str) -> None:
        """A TCP/TLS connection to ``remote`` ("" = unknown) went down: if ours,
        re-REGISTER at once over a new one (pjsua's own retry is off,
        ``retryIntervalSec=0``, so nothing else would until the next refresh) and stop
        claiming "registered" meanwhile. Another peer's connection (a call's) is not."""
        if (
            self.unregistering
            or self.retired
            or not self.connection_oriented
            or self.reg.state not in (RegState.REGISTERED, RegState.REGISTERING)
            or (remote and self.registrar_addr and remote != self.registrar_addr)
        ):
            return
        reason = f"connection lost ({error})" if error else "connection lost"
        log.warning("registration_connection_lost", account=self.index, registrar=self.registrar)
        self.reg = dataclasses.replace(
            self.reg, state=RegState.REGISTERING, code=0, reason=reason, expires=0
        )
        self._emit_registering(reason)
        try:
            self.setRegistration(True)
        except pj.Error as exc:
            if exc.status != PJSIP_EBUSY:  # busy: a REGISTER is already under way
                self.sink.schedule(
                    RETRY_FIRST,
                    functools.partial(self.sink.retry_registration, self.index, self),
                )

    def retire(self) -> None:
        """Out of service: un-REGISTER (if registered) and refuse calls from now on."""
        self.unregistering = True
        self.retired = True
        if self.reg.state is RegState.REGISTERED:
            with contextlib.suppress(pj.Error):
                self.setRegistration(False)

    def snapshot(self) -> AccountSnapshot:
        return AccountSnapshot(
            account=self.index,
            uri=self.uri,
            registrar=self.registrar,
            state=self.reg.state,
            code=self.reg.code,
            reason=self.reg.reason,
            expires=self.reg.expires,
            transport=self.transport,
        )

    @callback
    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        code, expires = int(prm.code), int(prm.expiration)
        reason = str(prm.reason)
        retry_in: float | None = None
        if 200 <= code < 300 and expires > 0:
            state, self.reg.failures = RegState.REGISTERED, 0
            with contextlib.suppress(pj.Error):  # where the registrar answered from
                self.registrar_addr = str(prm.rdata.srcAddress)
        elif 200 <= code < 300 or self.unregistering:
            state = RegState.UNREGISTERED
        else:
            state = RegState.FAILED
            self.reg.failures += 1
            retry_in = min(RETRY_MAX, RETRY_FIRST * RETRY_FACTOR ** (self.reg.failures - 1))
            # By index, not a bound method: the timer must not keep this object alive
            # (see PjStack.remove_account) nor retry for an account replaced since.
            self.sink.schedule(
                retry_in, functools.partial(self.sink.retry_registration, self.index, self)
            )
            if code == 0 or not reason:
                reason = reason or "no response"
            # The one line a user sees at the default level (a wrong password is 401/403).
            log.warning(
                "registration_failed",
                account=self.index,
                registrar=self.registrar,
                code=code,
                reason=reason,
                retry_in=retry_in,
                detail=f"registration failed {code} {reason}" + _HINTS.get(code, ""),
            )
        if state is not RegState.REGISTERED:
            expires = 0
        self.reg = dataclasses.replace(
            self.reg, state=state, code=code, reason=reason, expires=expires
        )
        self.sink.emit(
            RegistrationChanged(
                account=self.index,
                uri=self.uri,
                state=state,
                code=code,
                reason=reason,
                expires=expires,
                retry_in=retry_in,
            )
        )

    def retry_registration(self) -> None:
        if self.unregistering or self.reg.state is RegState.REGISTERED or not self.isValid():
            return
        log.info("registration_retry", account=self.index, attempt=self.reg.failures + 1)
        self._emit_registering("retrying")
        self.setRegistration(True)

    def _emit_registering(self, reason: str) -> None:
        self.sink.emit(
            RegistrationChanged(
                account=self.index, uri=self.uri, state=RegState.REGISTERING, code=0, reason=reason
            )
        )

    @callback
    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        call = self.sink.adopt_incoming(self, int(prm.callId))
        if self.retired:  # switched away from: as if it no longer existed
            self.sink.refuse(call.number, 480, "Temporarily Unavailable")
            return
        whole = str(prm.rdata.wholeMsg)
        ci = call.getInfo()
        call.refresh_identity(ci)
        pai = header_value(whole, "P-Asserted-Identity")
        if pai:
            call.remote_user = user_part(pai) or call.remote_user
        self.sink.emit(
            IncomingCall(
                call=call.number,
                sip_call_id=call.sip_call_id,
                account=self.index,
                remote_uri=call.remote_uri,
                remote_user=call.remote_user,
                display_name=call.display_name,
                to_uri=split_name_addr(str(ci.localUri))[1],
            )
        )
        self.sink.incoming_call(call, whole, check_invite(whole))

    @callback
    def onInstantMessage(self, prm: pj.OnInstantMessageParam) -> None:
        self.sink.emit(
            MessageReceived(
                account=self.index,
                from_uri=split_name_addr(str(prm.fromUri))[1],
                to_uri=split_name_addr(str(prm.toUri))[1],
                content_type=str(prm.contentType),
                body=str(prm.msgBody),
            )
        )

    @callback
    def onInstantMessageStatus(self, prm: pj.OnInstantMessageStatusParam) -> None:
        self.sink.emit(
            MessageStatus(
                account=self.index,
                to_uri=split_name_addr(str(prm.toUri))[1],
                code=int(prm.code),
                reason=str(prm.reason),
            )
        )

    @callback
    def onMwiInfo(self, prm: pj.OnMwiInfoParam) -> None:
        body = str(prm.rdata.wholeMsg).split("\r\n\r\n", 1)[-1]
        waiting, new, old = parse_message_summary(body)
        self.sink.emit(MessageWaiting(account=self.index, waiting=waiting, new=new, old=old))


def parse_message_summary(body: str) -> tuple[bool, int, int]:
    """RFC 3842 ``application/simple-message-summary``: waiting flag, new/old voice."""
    waiting, new, old = False, 0, 0
    for line in body.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "messages-waiting":
            waiting = value.lower() == "yes"
        elif key == "voice-message":
            counts = value.split("(", 1)[0].strip().split("/")
            if len(counts) == 2 and all(c.strip().isdigit() for c in counts):
                new, old = int(counts[0]), int(counts[1])
    return waiting, new, old
