"""``CallManager``: the engine's public face, the counterpart of MicroSIP's main class.

It owns the pjsua2 stack (through the private :mod:`engine._pj` layer), the accounts
from ``microsip.ini``, the event bus and its handlers. Every method may be called
from any thread; the work itself is marshalled onto the pjsua2 thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from .bus import CallbackHandler, EventBus, Handler
from .config import AccountConfig, Config
from .errors import EngineError, EngineStoppedError, InvalidTargetError, NotFoundError
from .events import EngineStarted, EngineStopping, Event
from .state import AccountSnapshot, CallSnapshot, Limits

log = structlog.get_logger("engine.manager")

ENGINE_VERSION = "0.1.0"

T = TypeVar("T")


class CallManager:
    """Accounts, calls and events of one headless softphone."""

    def __init__(
        self,
        config: Config,
        *,
        bind_address: str | None = None,
        sip_port: int | None = None,
        control: str = "",
    ) -> None:
        from ._pj import PjStack  # the only way into pjsua2

        self.config = config
        self.bus = EventBus()
        self.control = control
        self._passwords: dict[int, str] = {}
        self._lock = threading.RLock()
        self._started = False
        self._stack = PjStack(_stack_settings(config, bind_address, sip_port), self._publish)
        self.limits: Limits | None = None
        self.started_at = 0.0

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> Limits:
        """Start pjsua2, bind the transports, create the accounts. Raises on failure."""
        with self._lock:
            if self._started:
                raise EngineError("already started", code="invalid_state")
            self.limits = self._stack.start()
            self._started = True
            self.started_at = time.time()
        try:
            for index, acc in self._wanted_accounts():
                self._add_account(index, acc)
        except BaseException:
            self.stop()
            raise
        self._publish(
            EngineStarted(
                sip_address=" ".join(self.sip_addresses()),
                accounts=tuple(a.uri for a in self.accounts()),
                control=self.control,
                max_calls=self.limits.max_calls,
            )
        )
        return self.limits

    def stop(self, reason: str = "stop") -> None:
        """Hang up every call, un-REGISTER, destroy pjsua2, stop the handlers."""
        with self._lock:
            if not self._started:
                return
            self._started = False
        self._publish(EngineStopping(reason=reason))
        self._stack.stop()
        self.bus.close()

    @property
    def running(self) -> bool:
        return self._started

    def __enter__(self) -> CallManager:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- events -----------------------------------------------------------------

    def subscribe(self, handler: Handler | Callable[[Event], None]) -> Callable[[], None]:
        """Deliver every event to ``handler`` (on a thread of its own)."""
        if not isinstance(handler, Handler):
            handler = CallbackHandler(getattr(handler, "__name__", "callback"), handler)
        return self.bus.subscribe(handler)

    def _publish(self, event: Event) -> None:
        log.debug("event", **_loggable(event.to_dict()))
        self.bus.publish(event)

    # -- accounts ---------------------------------------------------------------

    def _wanted_accounts(self) -> list[tuple[int, AccountConfig]]:
        s = self.config.settings
        wanted: list[tuple[int, AccountConfig]] = []
        active = self.config.active_account()
        if s.enable_local_account or active is None:
            wanted.append((0, self.config.local_account))
        if active is not None:
            wanted.append((active.index, active))
        return wanted

    def _add_account(self, index: int, acc: AccountConfig) -> AccountSnapshot:
        password = self._passwords.get(index, acc.password)
        return self._stack.run(self._stack.add_account, index, acc, password)

    def accounts(self) -> list[AccountSnapshot]:
        return self._run(self._stack.account_list)

    def account_config(self, index: int) -> AccountConfig:
        if index == 0:
            return self.config.local_account
        try:
            return self.config.accounts[index]
        except KeyError:
            raise NotFoundError(f"no [Account{index}] in the configuration") from None

    def default_account(self) -> int:
        active = self.config.active_account()
        return active.index if active is not None else 0

    # -- calls ------------------------------------------------------------------

    def dial(
        self, target: str, account: int | None = None, headers: dict[str, str] | None = None
    ) -> CallSnapshot:
        """Call ``target`` (a number or a SIP URI) from ``account`` (default: the active one)."""
        index = self.default_account() if account is None else account
        uri = self.target_uri(target, index)
        return self._run(self._stack.make_call, index, uri, dict(headers or {}))

    def target_uri(self, target: str, account: int) -> str:
        """A bare number becomes ``sip:number@domain``; a full URI is used as is."""
        target = target.strip()
        if not target or any(c in target for c in '\r\n\0<> \t"'):
            raise InvalidTargetError(f"invalid dial target {target!r}")
        if target.lower().startswith(("sip:", "sips:")):
            return target
        acc = self.account_config(account)
        if "@" in target:
            return f"sip:{target}"
        if acc.domain:
            return f"sip:{target}@{acc.domain}"
        if any(c.isalpha() for c in target) or "." in target or ":" in target:
            return f"sip:{target}"  # call by IP / host
        raise InvalidTargetError(
            f"cannot dial {target!r} from the local account: give a SIP URI or host"
        )

    def answer(self, call: int | None = None, code: int = 200) -> CallSnapshot:
        """Answer ``call``, or the first ringing inbound call."""
        number = call if call is not None else self._first_ringing()
        return self._run(self._stack.answer, number, code)

    def hangup(self, call: int, code: int = 0, reason: str = "") -> None:
        """End a call: BYE when answered, CANCEL when calling, ``code`` when ringing."""
        self._run(self._stack.hangup, call, code, reason)

    def reject(self, call: int, code: int = 486, reason: str = "") -> None:
        if not 400 <= code < 700:
            raise EngineError(f"reject needs a 4xx-6xx code, not {code}", code="bad_params")
        self.hangup(call, code, reason)

    def calls(self) -> list[CallSnapshot]:
        return self._run(self._stack.call_list)

    def call_info(self, call: int) -> CallSnapshot:
        for snap in self.calls():
            if snap.call == call:
                return snap
        raise NotFoundError(f"no call {call}")

    def _first_ringing(self) -> int:
        for snap in self.calls():
            if snap.direction == "in" and snap.state in ("incoming", "early"):
                return snap.call
        raise NotFoundError("no ringing inbound call to answer")

    def play(self, call: int, wav: str, loop: bool = True) -> None:
        """Play a WAV file into the call (what the far end hears)."""
        self._run(self._stack.play, call, wav, loop)

    def record(self, call: int, wav: str) -> None:
        """Record the call (far end and what we play, mixed) to a WAV file."""
        self._run(self._stack.record, call, wav)

    def stop_recording(self, call: int) -> None:
        self._run(self._stack.stop_recording, call)

    # -- state ------------------------------------------------------------------

    def sip_addresses(self) -> list[str]:
        return [str(t) for t in self._run(self._stack.transport_list)]

    def status(self) -> dict[str, Any]:
        now = time.time()
        assert self.limits is not None
        return {
            "version": ENGINE_VERSION,
            "pjsip": self.limits.pjsip_version,
            "uptime": round(now - self.started_at, 3),
            "sip": self.sip_addresses(),
            "control": self.control,
            "capacity": {"max_calls": self.limits.max_calls, "calls": len(self.calls())},
            "limits": self.limits.to_dict(),
            "accounts": [a.to_dict() for a in self.accounts()],
            "calls": [c.to_dict(now) for c in self.calls()],
        }

    def _run(self, func: Callable[..., T], *args: Any) -> T:
        if not self._started:
            raise EngineStoppedError("the engine is not running")
        return self._stack.run(func, *args)


def _stack_settings(config: Config, bind: str | None, port: int | None) -> Any:
    from ._pj import StackSettings

    s, e = config.settings, config.engine
    transports = {"udp", "tcp"}
    for acc in [config.local_account, *config.accounts.values()]:
        if acc.transport == "tls":
            transports.add("tls")
    # sourcePort=0 means "auto" in MicroSIP: we prefer 5060 and fall back to any free port.
    sip_port = (s.source_port or 5060) if port is None else port
    return StackSettings(
        sip_port=sip_port,
        port_fallback=port is None,
        bind_address=bind if bind is not None else getattr(e, "bind_address", ""),
        public_address="",
        transports=tuple(sorted(transports)),
        rtp_port_min=s.rtp_port_min,
        rtp_port_max=s.rtp_port_max,
        user_agent=s.user_agent or f"microsip-engine/{ENGINE_VERSION}",
        nameservers=tuple(n for n in s.dns_srv_ns.replace(",", " ").split() if n),
        stun_servers=tuple(x for x in s.stun.replace(",", " ").split() if x)
        if s.enable_stun
        else (),
        codecs=s.audio_codecs,
        max_calls=e.max_calls,
        pjsip_log_level=e.pjsip_log_level,
    )


def _loggable(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    d["event_type"] = d.pop("event")
    d.pop("time", None)
    return d
