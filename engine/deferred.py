"""MicroSIP's command-line dial when the account is not registered yet: the dial
waits for REGISTER 200, and is dropped on a failed registration, an account switch
or after its time to live, each drop announced as a ``deferred_dial`` event."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

import structlog

from .errors import EngineError
from .events import DeferredDial, DeferredDialState, Event, RegistrationChanged, RegState

if TYPE_CHECKING:
    from .config import AccountConfig
    from .state import AccountSnapshot, CallSnapshot

log = structlog.get_logger("engine.manager")  # the name the log lines always had

#: How long a command-line dial waits for REGISTER 200 before it is dropped: long
#: enough to fix a password (``/password:``), short enough that no call surprises
#: anyone hours later.
DEFERRED_DIAL_TTL = 120.0


class Dialer(Protocol):
    """What the deferred dial needs of the engine (:class:`CallManager` is one)."""

    @property
    def running(self) -> bool: ...

    def default_account(self) -> int: ...

    def account_config(self, index: int) -> AccountConfig: ...

    def accounts(self) -> list[AccountSnapshot]: ...

    def target_uri(self, target: str, account: int) -> str: ...

    def dial_now(self, target: str, account: int, post_dial: tuple[str, ...]) -> CallSnapshot: ...


class Timer(Protocol):
    """One expiry timer (a :class:`threading.Timer` outside the tests)."""

    def start(self) -> None: ...

    def cancel(self) -> None: ...


def daemon_timer(seconds: float, expire: Callable[[], None]) -> Timer:
    """A timer thread that never keeps the process alive."""
    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    return timer


class _Pending(NamedTuple):
    account: int
    target: str
    post_dial: tuple[str, ...]
    deadline: float  # on the dials' clock (time.monotonic outside the tests)


class DeferredDials:
    """Dials waiting for REGISTER 200. ``lock`` is the engine's: a switch of account
    drops the dials of the old one under the same lock that switches it. ``clock``
    and ``timer`` are there for the tests: a fake clock and timers they fire."""

    def __init__(
        self,
        dialer: Dialer,
        publish: Callable[[Event], None],
        lock: threading.RLock,
        ttl: float = DEFERRED_DIAL_TTL,
        *,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[float, Callable[[], None]], Timer] = daemon_timer,
    ) -> None:
        self._dialer = dialer
        self._publish = publish
        self._lock = lock
        #: Seconds a deferred dial waits; each has a timer of its own, so it expires
        #: on its deadline even if no registration event ever comes.
        self.ttl = ttl
        self._clock = clock
        self._timer = timer
        self._pending: list[_Pending] = []
        self.timers: list[Timer] = []

    def dial_when_registered(
        self, target: str, account: int | None = None, post_dial: tuple[str, ...] = ()
    ) -> CallSnapshot | None:
        """Dial now when the account has no registrar or is registered; else wait for
        REGISTER 200 (returns None then; the call follows)."""
        d = self._dialer
        index = d.default_account() if account is None else account
        d.target_uri(target, index)  # a bad target fails now, not later
        if not d.account_config(index).server or self._registered(index):
            return d.dial_now(target, index, tuple(post_dial))
        failed = [a for a in d.accounts() if a.account == index and a.state == RegState.FAILED]
        if failed:  # deferring would only drop the call later, silently for the caller
            raise EngineError(
                f"[Account{index}] is not registered: its last registration failed "
                f"({failed[0].code} {failed[0].reason}); not dialling",
                code="not_registered",
            )
        ttl = self.ttl
        timer = self._timer(ttl, self._expire)
        with self._lock:
            self._pending.append(_Pending(index, target, tuple(post_dial), self._clock() + ttl))
            self.timers.append(timer)
        log.info("dial_deferred", account=index, target=target, timeout=ttl)
        self._publish(DeferredDial(account=index, target=target, state=DeferredDialState.WAITING))
        timer.start()  # after "waiting": its "dropped" is never stamped less than ttl later
        if self._registered(index):  # registered meanwhile: do not wait for a refresh
            self._flush(index)
        return None

    def on_event(self, event: Event) -> None:
        """The bus handler: registration events place or drop the waiting dials."""
        if not isinstance(event, RegistrationChanged):
            return
        if event.state is RegState.REGISTERED:
            self._flush(event.account)
        elif event.state is RegState.FAILED:
            self.drop(event.account, f"registration failed ({event.code} {event.reason})")

    def drop(self, index: int, why: str) -> None:
        """A deferred dial is not kept for a registration that failed or an account
        switched away: a call placed hours later would surprise everyone."""
        for p in self._take(lambda p: p.account == index):
            self._dropped(index, p.target, why)

    def cancel_timers(self) -> None:
        """Stop every expiry timer (the engine is stopping)."""
        with self._lock:
            timers, self.timers = self.timers, []
        for timer in timers:
            timer.cancel()

    def _registered(self, index: int) -> bool:
        return any(
            a.account == index and a.state == RegState.REGISTERED for a in self._dialer.accounts()
        )

    def _take(self, which: Callable[[_Pending], bool]) -> list[_Pending]:
        with self._lock:
            taken = [p for p in self._pending if which(p)]
            self._pending = [p for p in self._pending if not which(p)]
        return taken

    def _expire(self) -> None:
        """A deferred dial's timer: drop every dial whose deadline has passed."""
        now = self._clock()
        with self._lock:
            if not self._dialer.running:
                return
            expired = self._take(lambda p: p.deadline <= now)
        for p in expired:
            self._dropped(p.account, p.target, self._too_late())

    def _too_late(self) -> str:
        return f"not registered within {self.ttl:g} s"

    def _dropped(self, account: int, target: str, why: str) -> None:
        log.warning("deferred_dial_dropped", account=account, target=target, reason=why)
        self._publish(
            DeferredDial(
                account=account, target=target, state=DeferredDialState.DROPPED, reason=why
            )
        )

    def _flush(self, index: int) -> None:
        due = self._take(lambda p: p.account == index)
        now = self._clock()
        for p in due:
            if now > p.deadline:
                self._dropped(p.account, p.target, self._too_late())
                continue
            try:
                self._dialer.dial_now(p.target, p.account, p.post_dial)
            except EngineError as exc:
                self._dropped(p.account, p.target, f"dial failed: {exc.message}")
                continue
            self._publish(
                DeferredDial(account=p.account, target=p.target, state=DeferredDialState.PLACED)
            )
