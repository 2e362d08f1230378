"""The table of pjsua accounts: create, re-configure, retire, un-REGISTER.

pjsua never deletes an account while the engine runs (see
:meth:`AccountTable.remove`): a retired account stays, refusing calls, and comes
back if its index does. Runs on the SIP thread only.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pjsua2 as pj

from ..errors import CapacityError, EngineError, NotFoundError
from ..events import RegState
from ..sipuri import split_name_addr
from ..state import AccountSnapshot
from .account import PjAccount, build_config
from .guard import check_length
from .status import PJSIP_EBUSY

if TYPE_CHECKING:
    from ..config import AccountConfig
    from .callops import Messenger
    from .stack import PjStack, StackSettings
    from .transports import TransportInfo


class AccountTable:
    """Live and retired accounts by ``[AccountN]`` index."""

    def __init__(
        self, owner: PjStack, settings: StackSettings, max_accounts: int, messenger: Messenger
    ) -> None:
        self._owner = owner  # what the accounts call back into
        self._settings = settings
        self._max_accounts = max_accounts
        self._messenger = messenger
        self.transports: dict[str, tuple[int, TransportInfo]] = {}
        self.live: dict[int, PjAccount] = {}
        self.retired: dict[int, PjAccount] = {}

    def transport_for(self, kind: str) -> tuple[int, str]:
        """pjsua transport id and a label for an account's ``transport`` key."""
        if kind in ("udp", "tcp", "tls"):
            if kind not in self.transports:
                raise EngineError(f"no {kind.upper()} transport is configured", code="transport")
            return self.transports[kind][0], kind
        return -1, "udp+tcp"

    def add(self, index: int, acc: AccountConfig, password: str | None) -> AccountSnapshot:
        """Create account ``index``, or re-configure the one pjsua already has for it."""
        tid, label = self.transport_for(acc.transport)
        udp = self.transports["udp"][1]
        local_host = udp.host if index == 0 else ""
        if index == 0 and not acc.domain:
            local_host = f"{udp.host}:{udp.port}"
        for what, value in (
            ("server", acc.server),
            ("domain", acc.domain),
            ("username", acc.username),
            ("authID", acc.auth_id),
            ("displayName", acc.display_name),
            *(("proxy", p) for p in acc.proxy),
        ):
            check_length(f"[Account{index}] {what}", value)
        cfg = build_config(acc, tid, local_host, password)
        self._media_transport(cfg, acc.public_addr)
        uri = split_name_addr(str(cfg.idUri))[1]
        existing = self.live.pop(index, None) or self.retired.pop(index, None)
        if existing is not None:
            existing.reconfigure(acc, label, uri)
            self.live[index] = existing
            existing.modify(cfg)
            if acc.server:
                try:
                    existing.setRegistration(True)
                except pj.Error as exc:
                    if exc.status != PJSIP_EBUSY:  # busy: modify() already re-registers
                        raise
            return existing.snapshot()
        if len(self.live) + len(self.retired) >= self._max_accounts:
            raise CapacityError(f"this pjsua2 build allows at most {self._max_accounts} accounts")
        pj_acc = PjAccount(self._owner, index, acc, label)
        pj_acc.uri = uri
        pj_acc.create(cfg, index == 0 and not acc.server)
        self.live[index] = pj_acc
        return pj_acc.snapshot()

    def _media_transport(self, cfg: pj.AccountConfig, public_addr: str) -> None:
        """RTP ports (``rtpPortMin``/``Max``), bind address, and the address the SDP
        advertises (the account's ``publicAddr``, else the engine's)."""
        s, tc = self._settings, cfg.mediaConfig.transportConfig
        if s.rtp_port_min:
            tc.port = s.rtp_port_min
            if s.rtp_port_max > s.rtp_port_min:
                tc.portRange = s.rtp_port_max - s.rtp_port_min
        if s.bind_address and s.bind_address != "0.0.0.0":
            tc.boundAddress = s.bind_address
        if public_addr or s.public_address:
            tc.publicAddress = public_addr or s.public_address

    def remove(self, index: int) -> None:
        """Un-REGISTER account ``index`` and retire it. It stays in pjsua: deleting a
        pjsua account aborts the interpreter if a transaction of it (a MESSAGE still
        retransmitting, a registration) reports back later (``pjsua_acc_get_user_data``
        asserts), and pjsua2's ~Account() would delete whatever account reuses its
        slot. A retired account refuses calls and comes back if its index does."""
        pj_acc = self.live.pop(index, None)
        if pj_acc is None:
            raise NotFoundError(f"no account {index}")
        pj_acc.retire()
        self._messenger.forget_account(index)
        self.retired[index] = pj_acc

    def retry_registration(self, index: int, scheduled_by: object) -> None:
        acc = self.live.get(index)
        if acc is not None and acc is scheduled_by:
            acc.retry_registration()

    def get(self, index: int) -> PjAccount:
        try:
            return self.live[index]
        except KeyError:
            raise NotFoundError(f"no account {index}") from None

    def snapshots(self) -> list[AccountSnapshot]:
        return [a.snapshot() for a in self.live.values()]

    # -- shutdown -------------------------------------------------------------------

    def unregister_all(self) -> None:
        for acc in self.live.values():
            if acc.reg.state is RegState.REGISTERED:
                acc.unregistering = True
                with contextlib.suppress(pj.Error):
                    acc.setRegistration(False)

    def unregistering(self) -> bool:
        return any(
            a.unregistering and a.reg.state is RegState.REGISTERED for a in self.live.values()
        )

    def disown_all(self) -> None:
        """Accounts stay valid through libDestroy: pjsua destroys its endpoint first
        and pending transactions call back into their accounts (see :meth:`remove`).
        pjsua deletes them itself; the Python objects are disowned so that their
        destructors never touch the library afterwards."""
        for acc in [*self.live.values(), *self.retired.values()]:
            acc.thisown = False

    def clear(self) -> None:
        """After libDestroy: the disowned proxies may go."""
        self.live.clear()
        self.retired.clear()
