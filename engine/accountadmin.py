"""Which accounts the engine registers, and MicroSIP's account administration:
``/account:`` (switch the registered account) and ``/password:`` (save or override
a password), each saved to the ini the way MicroSIP saves it."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Protocol

from .config import AccountConfig, Config
from .state import AccountSnapshot


class AccountHost(Protocol):
    """What the account administration needs of the engine (:class:`CallManager`)."""

    config: Config

    def accounts(self) -> list[AccountSnapshot]: ...

    def account_config(self, index: int) -> AccountConfig: ...

    def default_account(self) -> int: ...


class AccountAdmin:
    """Adds, removes and re-registers accounts through the given stack calls.

    ``lock`` is the engine's: the configuration it replaces is the engine's too.
    ``add`` creates or re-creates an account (index, config, password); ``remove``
    un-REGISTERs and retires one (pjsua keeps it: deleting one can abort the
    process, see :meth:`engine._pj.stack.PjStack.remove_account`); ``drop_dials``
    drops the dials waiting for an account switched away from.
    """

    def __init__(
        self,
        host: AccountHost,
        lock: threading.RLock,
        *,
        add: Callable[[int, AccountConfig, str], AccountSnapshot],
        remove: Callable[[int], None],
        drop_dials: Callable[[int, str], None],
    ) -> None:
        self._host = host
        self._lock = lock
        self._add = add
        self._remove = remove
        self._drop_dials = drop_dials
        #: In-memory passwords (``/password:`` without saving) by account index.
        self._passwords: dict[int, str] = {}

    def wanted(self) -> list[tuple[int, AccountConfig]]:
        """The accounts to register at start: the local one and the active one."""
        config = self._host.config
        wanted: list[tuple[int, AccountConfig]] = []
        active = config.active_account()
        if config.settings.enable_local_account or active is None:
            local = config.local_account
            if not config.document.has_section("Account0"):
                # MicroSIP's local account listens on every transport.
                local = dataclasses.replace(local, transport="both")
            wanted.append((0, local))
        if active is not None:
            wanted.append((active.index, active))
        return wanted

    def add(self, index: int, acc: AccountConfig) -> AccountSnapshot:
        """Create (or re-create) the account with its in-memory password, if any."""
        return self._add(index, acc, self._passwords.get(index, acc.password))

    def switch(self, index: int) -> AccountSnapshot | None:
        """Make ``[Account<index>]`` the registered account and save ``accountId``.

        The old account un-REGISTERs, the new one REGISTERs; 0 keeps only the local one.
        """
        host = self._host
        with self._lock:
            if index != 0:
                host.account_config(index)  # NotFoundError for a missing account
            old = host.default_account()
            host.config = host.config.set_account_id(index)
            # MicroSIP's rules may map the saved value (0 without enableLocalAccount
            # means account 1): follow what the configuration now says is active.
            new = host.default_account()
            if old != new:
                self._drop_dials(old, f"switched to account {new}")
            if old != 0 and old != new:
                self._remove(old)
            if new == 0:
                if not any(a.account == 0 for a in host.accounts()):
                    return self.add(0, host.config.local_account)
                return None
            if old == new and any(a.account == new for a in host.accounts()):
                return None  # already the registered account: nothing to redo
            return self.add(new, host.account_config(new))

    def save_password(self, index: int, password: str) -> None:
        """Store a plaintext password in ``[Account<index>]``; re-register if active."""
        host = self._host
        with self._lock:
            host.config = host.config.save_password(index, password)
            self._passwords.pop(index, None)
            if index != 0 and index == host.default_account():
                self.add(index, host.account_config(index))

    def override_password(self, password: str) -> None:
        """In-memory password for the active account (not saved); re-registers it."""
        host = self._host
        with self._lock:
            index = host.default_account()
            self._passwords[index] = password
            if index != 0:
                self.add(index, host.account_config(index))
