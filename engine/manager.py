"""``CallManager``: the engine's public face, the counterpart of MicroSIP's main class.

It owns the pjsua2 stack (through the private :mod:`engine._pj` layer), the accounts
from ``microsip.ini``, the event bus and its handlers. Every method may be called
from any thread; the work itself is marshalled onto the pjsua2 thread.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from . import logs
from .behaviour import BehaviourSettings, MicroSipBehaviour, caller_id, dtmf_method
from .bus import CallbackHandler, EventBus, Handler
from .callwait import wait_for_state
from .config import AccountConfig, Config
from .dialplan import to_sip_uri
from .errors import EngineError, EngineStoppedError, InvalidTargetError, NotFoundError
from .events import (
    CallDirection,
    CallState,
    CallStateName,
    DeferredDial,
    DeferredDialState,
    EngineStarted,
    EngineStopping,
    Event,
    EventType,
    RegistrationChanged,
    RegState,
)
from .history import CallHistory, default_history_path
from .hooks import HookRunner
from .milestones import MilestoneLog
from .policy import Toggles, decide
from .state import AccountSnapshot, CallSnapshot, Decision, Limits

log = structlog.get_logger("engine.manager")

ENGINE_VERSION = "0.1.0"

T = TypeVar("T")

#: How long a command-line dial waits for REGISTER 200 before it is dropped: long
#: enough to fix a password (``/password:``), short enough that no call surprises
#: anyone hours later.
DEFERRED_DIAL_TTL = 120.0
#: Volume change per MicroSIP micup/micdown/speakup/speakdown (0-100 scale).
VOLUME_STEP = 10


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

        logs.library_default()  # serve has configured logging already; a library has not
        self.config = config
        self.bus = EventBus()
        self.control = control
        self._passwords: dict[int, str] = {}
        self._lock = threading.RLock()
        self._started = False
        behaviour = functools.partial(
            MicroSipBehaviour,
            settings=BehaviourSettings(
                auto_hangup_time=float(config.settings.auto_hang_up_time),
                media_timeout=float(config.engine.media_timeout),
                dtmf_method=config.settings.dtmf_method,
            ),
            policy=self._decide,
            auto_record=self._auto_record_path,
        )
        self._stack = PjStack(
            _stack_settings(config, bind_address, sip_port), self._publish, behaviour
        )
        self.toggles = Toggles.from_settings(config.settings)
        self.limits: Limits | None = None
        self.started_at = 0.0
        #: Dials waiting for REGISTER 200: (account, target, post-dial, deadline).
        self._pending: list[tuple[int, str, tuple[str, ...], float]] = []
        #: Seconds a deferred dial waits; each has a timer of its own, so it expires
        #: on its deadline even if no registration event ever comes.
        self.deferred_dial_ttl = DEFERRED_DIAL_TTL
        self._expiry_timers: list[threading.Timer] = []
        # Call history is written on the SIP thread *before* an event is published,
        # so an ended call is committed before anyone hears it ended (kill -9 safe).
        self.history = CallHistory(
            default_history_path(config.engine),
            max_rows=config.engine.history_rows,
        )
        self.hooks = HookRunner(
            lambda: self.config.settings,
            self._publish,
            timeout=float(config.engine.hook_timeout),
            account_provider=self._account_or_none,
        )
        self.bus.subscribe(self.hooks)
        self.bus.subscribe(MilestoneLog())
        #: Set by the ``exit`` command (MicroSIP's ``/exit``); the service loop stops us.
        self.exit_requested = threading.Event()
        self.bus.subscribe(
            CallbackHandler(
                "deferred-dial", self._dial_pending, events=frozenset({EventType.REGISTRATION})
            )
        )

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> Limits:
        """Start pjsua2, bind the transports, create the accounts. Raises on failure."""
        fmt = self.config.settings.recording_format
        if fmt and fmt.lower() != "wav":
            log.warning(
                "recording_format_unsupported",
                detail=f"recordingFormat={fmt} is not supported: recordings are WAV",
            )
        with self._lock:
            if self._started:
                raise EngineError("already started", code="invalid_state")
            self.limits = self._stack.start()
            self._started = True
            self._check_sip_port()
            self.started_at = time.time()
        if self.limits.tls and self.limits.tls_max != "1.3":
            log.warning(
                "tls_outdated",
                detail=f"SIP over TLS on this pjsua2 build stops at TLS {self.limits.tls_max}: "
                "the PyPI wheel bundles OpenSSL 1.0.2k, out of security support since 2019. "
                "Build pjsua2 from Debian's sources (OpenSSL 3, TLS 1.3): "
                "./scripts/build-pjsua2, then ./scripts/run --pjsua2=source",
            )
        try:
            s = self.config.settings
            self._run(
                lambda: self._stack.mixer.set_levels(
                    mic_volume=s.volume_input, speaker_volume=s.volume_output
                )
            )
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

    def _check_sip_port(self) -> None:
        """Say once which port SIP got when the automatic choice (5060) was taken."""
        wanted = self._stack.settings.sip_port
        used = {int(a.rsplit(":", 1)[1]) for a in self.sip_addresses() if a.startswith("udp:")}
        if wanted and used and wanted not in used:
            log.warning(
                "sip_port_in_use",
                wanted=wanted,
                used=min(used),
                detail=f"port {wanted} is in use; SIP listens on {min(used)} instead "
                "(set sourcePort to insist on a port)",
            )

    def stop(self, reason: str = "stop") -> None:
        """Hang up every call, un-REGISTER, destroy pjsua2, stop the handlers."""
        with self._lock:
            if not self._started:
                return
            self._started = False
        self._publish(EngineStopping(reason=reason))
        with self._lock:
            timers, self._expiry_timers = self._expiry_timers, []
        for timer in timers:
            timer.cancel()
        self._stack.stop()
        self.bus.close()  # delivers the last events (the hang-ups of shutdown) first
        self.hooks.close()  # then lets their cmdCallEnd hooks run out
        self.history.close()

    def request_exit(self) -> None:
        """Ask the process running this engine to stop it (after replying)."""
        self.exit_requested.set()

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
        self.history.handle(event)  # never raises; commits before the end is published
        if logs.debug_enabled:  # to_dict() on the SIP thread only when it is logged
            log.debug("event", **_loggable(event.to_dict()))
        self.bus.publish(event)

    def _account_or_none(self, index: int) -> AccountConfig | None:
        try:
            return self.account_config(index)
        except NotFoundError:
            return None

    # -- call handling policy (runs on the SIP thread: pure and fast) ---------

    def _decide(self, call: CallSnapshot, invite: str) -> Decision:
        settings = self.config.settings
        account = self.account_config(call.account)
        return decide(call, invite, settings, account, self._stack.call_list(), self.toggles)

    def set_toggle(self, name: str, on: bool) -> dict[str, bool]:
        """Switch MicroSIP's AA, DND or FWD button; saved to the ini like MicroSIP."""
        key = name.upper()
        if key not in ("AA", "DND", "FWD"):
            raise EngineError(f"unknown toggle {name!r}: use AA, DND or FWD", code="bad_params")
        with self._lock:
            self.toggles = dataclasses.replace(self.toggles, **{key.lower(): on})
            self.config = self.config.with_values({("Settings", key): "1" if on else "0"})
        return dataclasses.asdict(self.toggles)

    def recording_file(self, call: CallSnapshot) -> str:
        """MicroSIP's name: YYYYMMDD-HHMMSS-<remote>-<incoming|outgoing>-<account>.wav."""
        acc = self.account_config(call.account)
        who = acc.label or acc.username or "local"
        direction = "incoming" if call.direction == CallDirection.IN else "outgoing"
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(call.answer_time or time.time()))
        name = f"{stamp}-{_file_safe(call.remote_user)}-{direction}-{_file_safe(who)}.wav"
        return os.path.join(self.recording_dir(), name)

    def recording_dir(self) -> str:
        path = self.config.settings.recording_path
        if not path:
            base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
            path = os.path.join(base, "microsip-engine", "recordings")
        return path

    def _auto_record_path(self, call: CallSnapshot) -> str | None:
        return self.recording_file(call) if self.config.settings.auto_recording else None

    # -- accounts ---------------------------------------------------------------

    def _wanted_accounts(self) -> list[tuple[int, AccountConfig]]:
        s = self.config.settings
        wanted: list[tuple[int, AccountConfig]] = []
        active = self.config.active_account()
        if s.enable_local_account or active is None:
            local = self.config.local_account
            if not self.config.document.has_section("Account0"):
                # MicroSIP's local account listens on every transport.
                local = dataclasses.replace(local, transport="both")
            wanted.append((0, local))
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
        self,
        target: str,
        account: int | None = None,
        headers: dict[str, str] | None = None,
        post_dial: tuple[str, ...] = (),
    ) -> CallSnapshot:
        """Call ``target`` (a number or a SIP URI) from ``account`` (default: the active one).

        ``post_dial`` groups are sent as DTMF after the answer, with MicroSIP's timing.
        """
        index = self.default_account() if account is None else account
        uri = self.target_uri(target, index)
        local_uri, sent = caller_id(self.account_config(index).hide_cid, headers or {})
        return self._run(self._stack.make_call, index, uri, sent, tuple(post_dial), local_uri)

    def dial_when_registered(
        self, target: str, account: int | None = None, post_dial: tuple[str, ...] = ()
    ) -> CallSnapshot | None:
        """MicroSIP's command-line dial: waits for REGISTER 200 when the account has a
        registrar and is not registered yet (returns None then; the call follows)."""
        index = self.default_account() if account is None else account
        self.target_uri(target, index)  # a bad target fails now, not later
        if not self.account_config(index).server or self._registered(index):
            return self.dial(target, index, post_dial=post_dial)
        failed = [a for a in self.accounts() if a.account == index and a.state == RegState.FAILED]
        if failed:  # deferring would only drop the call later, silently for the caller
            raise EngineError(
                f"[Account{index}] is not registered: its last registration failed "
                f"({failed[0].code} {failed[0].reason}); not dialling",
                code="not_registered",
            )
        ttl = self.deferred_dial_ttl
        timer = threading.Timer(ttl, self._expire_pending)
        timer.daemon = True
        with self._lock:
            self._pending.append((index, target, tuple(post_dial), time.monotonic() + ttl))
            self._expiry_timers.append(timer)
        log.info("dial_deferred", account=index, target=target, timeout=ttl)
        self._publish(DeferredDial(account=index, target=target, state=DeferredDialState.WAITING))
        timer.start()  # after "waiting": its "dropped" is never stamped less than ttl later
        if self._registered(index):  # registered meanwhile: do not wait for a refresh
            self._flush_pending(index)
        return None

    def _registered(self, index: int) -> bool:
        return any(a.account == index and a.state == RegState.REGISTERED for a in self.accounts())

    def _dial_pending(self, event: Event) -> None:
        if not isinstance(event, RegistrationChanged):
            return
        if event.state is RegState.REGISTERED:
            self._flush_pending(event.account)
        elif event.state is RegState.FAILED:
            self._drop_pending(event.account, f"registration failed ({event.code} {event.reason})")

    def _expire_pending(self) -> None:
        """A deferred dial's timer: drop every dial whose deadline has passed."""
        now = time.monotonic()
        with self._lock:
            if not self._started:
                return
            expired = [p for p in self._pending if p[3] <= now]
            self._pending = [p for p in self._pending if p[3] > now]
        for account, target, _, _ in expired:
            self._dropped(account, target, f"not registered within {self.deferred_dial_ttl:g} s")

    def _dropped(self, account: int, target: str, why: str) -> None:
        log.warning("deferred_dial_dropped", account=account, target=target, reason=why)
        self._publish(
            DeferredDial(
                account=account, target=target, state=DeferredDialState.DROPPED, reason=why
            )
        )

    def _drop_pending(self, index: int, why: str) -> None:
        """A deferred dial is not kept for a registration that failed or an account
        switched away: a call placed hours later would surprise everyone."""
        with self._lock:
            dropped = [p for p in self._pending if p[0] == index]
            self._pending = [p for p in self._pending if p[0] != index]
        for _, target, _, _ in dropped:
            self._dropped(index, target, why)

    def _flush_pending(self, index: int) -> None:
        with self._lock:
            due = [p for p in self._pending if p[0] == index]
            self._pending = [p for p in self._pending if p[0] != index]
        now = time.monotonic()
        for account, target, post_dial, deadline in due:
            if now > deadline:
                self._dropped(
                    account, target, f"not registered within {self.deferred_dial_ttl:g} s"
                )
                continue
            try:
                self.dial(target, account, post_dial=post_dial)
            except EngineError as exc:
                self._dropped(account, target, f"dial failed: {exc.message}")
                continue
            self._publish(
                DeferredDial(account=account, target=target, state=DeferredDialState.PLACED)
            )

    def target_uri(self, target: str, account: int) -> str:
        """A bare number becomes ``sip:number@domain``; a full URI is used as is."""
        target = target.strip()
        if len(target) > 512:  # the pjsua2 layer refuses it too (guard.MAX_URI)
            raise InvalidTargetError(f"dial target is too long: {len(target)} characters (512 max)")
        if not target or any(c in target for c in "\r\n\0\t"):
            raise InvalidTargetError(f"invalid dial target {target[:80]!r}")
        acc = self.account_config(account)
        host_like = "@" in target or ":" in target or any(c.isalpha() for c in target)
        if not acc.domain and not host_like and "." not in target:
            # sip:<digits> would be read as an IPv4 address by the resolver.
            raise InvalidTargetError(
                f"cannot dial {target!r} from the local account (no domain): "
                "give a SIP URI or a host"
            )
        transport = acc.transport if acc.transport in ("tcp", "tls") else None
        return to_sip_uri(target, acc.domain, transport=transport)

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

    def wait_for(self, call: int, state: str = "confirmed", timeout: float = 30.0) -> CallState:
        """Wait until ``call`` reaches ``state`` (or a later one: ``early`` is passed by
        a call answered without ringing) and return that ``call_state`` event.

        Raises :class:`EngineError` ``call_ended`` (with the SIP code and reason) if
        the call ends first, ``timeout`` after ``timeout`` seconds, and
        :class:`NotFoundError` for a call that does not exist.
        """
        return wait_for_state(self.bus, self.calls, call, state, timeout)

    def _first_ringing(self) -> int:
        for snap in self.calls():
            if snap.direction == CallDirection.IN and snap.state in (
                CallStateName.INCOMING,
                CallStateName.EARLY,
            ):
                return snap.call
        raise NotFoundError("no ringing inbound call to answer")

    def play(self, call: int, wav: str, loop: bool = True) -> None:
        """Play a WAV file into the call (what the far end hears)."""
        self._run(self._stack.play, call, wav, loop)

    def record(self, call: int, wav: str | None = None) -> str:
        """Record the call (far end and what we play, mixed) to a WAV file; without a
        path, MicroSIP's file name under ``recordingPath``. Returns the path."""
        path = wav or self.recording_file(self.call_info(call))
        self._run(self._stack.record, call, path)
        return path

    def stop_recording(self, call: int) -> None:
        self._run(self._stack.stop_recording, call)

    def current_call(self) -> int:
        """MicroSIP's "current call": the newest answered call, else the newest call."""
        calls = self.calls()
        answered = [c for c in calls if c.state == CallStateName.CONFIRMED]
        pool = answered or calls
        if not pool:
            raise NotFoundError("there is no call")
        return max(pool, key=lambda c: c.call).call

    def send_dtmf(self, digits: str, call: int | None = None, method: int | None = None) -> str:
        """Send DTMF with ``DTMFMethod`` (or ``method``); returns the method used."""
        number = self.current_call() if call is None else call
        chosen = dtmf_method(self.config.settings.dtmf_method, method)
        return self._run(self._stack.send_dtmf, number, digits, chosen)

    def hold(self, call: int | None = None, hold: bool | None = None) -> bool:
        """Hold, resume or (``hold=None``) toggle; returns whether the call is now held."""
        number = self.current_call() if call is None else call
        return self._run(self._stack.hold, number, hold)

    def transfer(self, target: str, call: int | None = None) -> None:
        """Blind transfer (REFER) of ``call`` (default: the current one) to ``target``."""
        number = self.current_call() if call is None else call
        account = self.call_info(number).account
        self._run(self._stack.transfer, number, self.target_uri(target, account))

    def send_message(self, target: str, text: str, account: int | None = None) -> None:
        """Send a SIP MESSAGE (delivery status arrives as a ``message_status`` event)."""
        if self.config.settings.disable_messaging:
            raise EngineError("messaging is disabled (disableMessaging=1)", code="disabled")
        index = self.default_account() if account is None else account
        self._run(self._stack.send_message, index, self.target_uri(target, index), text)

    def transfer_attended(self, call: int, to_call: int) -> None:
        """Attended transfer: REFER ``call``'s party to ``to_call``'s (with Replaces)."""
        self._run(self._stack.transfer_attended, call, to_call)

    def conference(self, calls: list[int] | None = None) -> list[int]:
        """Merge calls on the local bridge (default: every answered call)."""
        numbers = calls or [c.call for c in self.calls() if c.state == CallStateName.CONFIRMED]
        if len(numbers) < 2 and not calls:
            raise EngineError("a conference needs two answered calls", code="invalid_state")
        return self._run(self._stack.mixer.merge, numbers)

    def split(self, calls: list[int] | None = None) -> list[int]:
        """Take calls (default: all) out of the conference; returns who is left in it."""
        return self._run(self._stack.mixer.split, calls)

    # -- audio levels: MicroSIP's mute buttons and volume steps --------------------

    def audio_levels(self, **changes: Any) -> dict[str, Any]:
        """Set ``mic_muted`` / ``speaker_muted`` / ``mic_volume`` / ``speaker_volume``
        (0-100); volumes are saved as ``volumeInput`` / ``volumeOutput``."""
        state = self._run(lambda: self._stack.mixer.set_levels(**changes))
        saved = (
            {("Settings", "volumeInput"): str(state["mic_volume"])}
            if "mic_volume" in changes
            else {}
        )
        if "speaker_volume" in changes:
            saved[("Settings", "volumeOutput")] = str(state["speaker_volume"])
        if saved:
            with self._lock:
                self.config = self.config.with_values(saved)
        return state

    def toggle_mute(self, device: str) -> dict[str, Any]:
        key = "mic_muted" if device == "mic" else "speaker_muted"
        current = self._run(self._stack.mixer.state)
        return self.audio_levels(**{key: not current[key]})

    def volume_step(self, device: str, step: int) -> dict[str, Any]:
        """MicroSIP's micup/micdown/speakup/speakdown: VOLUME_STEP per click."""
        key = "mic_volume" if device == "mic" else "speaker_volume"
        current = self._run(self._stack.mixer.state)
        return self.audio_levels(**{key: int(current[key]) + step * VOLUME_STEP})

    # -- accounts: switching and passwords (MicroSIP's /account: and /password:) ----

    def switch_account(self, index: int) -> AccountSnapshot | None:
        """Make ``[Account<index>]`` the registered account and save ``accountId``.

        The old account un-REGISTERs, the new one REGISTERs; 0 keeps only the local one.
        """
        with self._lock:
            if index != 0:
                self.account_config(index)  # NotFoundError for a missing account
            old = self.default_account()
            self.config = self.config.set_account_id(index)
            # MicroSIP's rules may map the saved value (0 without enableLocalAccount
            # means account 1): follow what the configuration now says is active.
            new = self.default_account()
            if old != new:
                self._drop_pending(old, f"switched to account {new}")
            if old != 0 and old != new:
                self._run(self._stack.remove_account, old)
            if new == 0:
                if not any(a.account == 0 for a in self.accounts()):
                    return self._add_account(0, self.config.local_account)
                return None
            if old == new and any(a.account == new for a in self.accounts()):
                return None  # already the registered account: nothing to redo
            return self._add_account(new, self.account_config(new))

    def save_password(self, index: int, password: str) -> None:
        """Store a plaintext password in ``[Account<index>]``; re-register if active."""
        with self._lock:
            self.config = self.config.save_password(index, password)
            self._passwords.pop(index, None)
            if index != 0 and index == self.default_account():
                self._add_account(index, self.account_config(index))

    def override_password(self, password: str) -> None:
        """In-memory password for the active account (not saved); re-registers it."""
        with self._lock:
            index = self.default_account()
            self._passwords[index] = password
            if index != 0:
                self._add_account(index, self.account_config(index))

    # -- state ------------------------------------------------------------------

    def sip_thread_alive(self, timeout: float) -> bool:
        """A no-op round trip through the SIP thread within ``timeout`` (the watchdog's
        proof of life: a thread stuck in pjsua2 cannot answer it)."""
        try:
            self._stack.run(lambda: None, timeout=timeout)
        except EngineError:
            return False
        return True

    def sip_addresses(self) -> list[str]:
        return [str(t) for t in self._run(self._stack.transport_list)]

    def status(self) -> dict[str, Any]:
        now = time.time()
        assert self.limits is not None
        # One trip to the SIP thread, not one per part: under many concurrent clients
        # each trip waits for the GIL (measured in scripts/bench.py), and one
        # snapshot keeps "capacity.calls" and "calls" consistent.
        stack = self._stack
        transports, calls, audio, tls_max, accounts = self._run(
            lambda: (
                stack.transport_list(),
                stack.call_list(),
                stack.mixer.state(),
                stack.tls_max(),
                stack.account_list(),
            )
        )
        return {
            "version": ENGINE_VERSION,
            "pjsip": self.limits.pjsip_version,
            "uptime": round(now - self.started_at, 3),
            "sip": [str(t) for t in transports],
            "control": self.control,
            "history": str(self.history.path),
            "capacity": {"max_calls": self.limits.max_calls, "calls": len(calls)},
            "toggles": dataclasses.asdict(self.toggles),
            "audio": audio,
            "limits": {**self.limits.to_dict(), "tls_max": tls_max},
            "accounts": [a.to_dict() for a in accounts],
            # What the configuration ignored or refused (e.g. an account without domain).
            "config_warnings": list(self.config.warnings),
            "calls": [c.to_dict(now) for c in calls],
        }

    def _run(self, func: Callable[..., T], *args: Any) -> T:
        if not self._started:
            raise EngineStoppedError("the engine is not running")
        return self._stack.run(func, *args)


def _stack_settings(config: Config, bind: str | None, port: int | None) -> Any:
    from ._pj import StackSettings

    s, e = config.settings, config.engine
    active = config.active_account()
    transports = {"udp", "tcp"}
    for acc in [config.local_account, *config.accounts.values()]:
        if acc.transport == "tls":
            transports.add("tls")
    if e.tls_cert_file:
        transports.add("tls")  # a certificate means: accept TLS connections
    # sourcePort=0 means "auto" in MicroSIP: we prefer 5060 and fall back to any free
    # port. A port the user asked for (sourcePort, --sip-port) is used or refused.
    # "Any port" (--sip-port 0) retries too: the port UDP got may be taken for TCP.
    sip_port = (s.source_port or 5060) if port is None else port
    return StackSettings(
        sip_port=sip_port,
        port_fallback=(port is None and not s.source_port) or port == 0,
        bind_address=bind if bind is not None else getattr(e, "bind_address", ""),
        # MicroSIP's publicAddr of the registering account also goes into SIP (Via/Contact).
        public_address=active.public_addr if active is not None else "",
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
        # With this build, a TLS *listener* given the system's large CA bundle stalls
        # incoming handshakes (measured): the system bundle is only a client default.
        tls_ca_file=e.tls_ca_file or ("" if e.tls_cert_file else _system_ca_bundle()),
        tls_cert_file=e.tls_cert_file,
        tls_key_file=e.tls_key_file,
        tls_verify_server=e.tls_verify_server,
        vad=s.vad,
        echo_canceller=s.ec,
        # [Engine] nullAudio=1 keeps a server silent whatever the devices keys say.
        audio_input_device="" if e.null_audio else s.audio_input_device,
        audio_output_device="" if e.null_audio else s.audio_output_device,
    )


def _system_ca_bundle() -> str:
    """The wheel's OpenSSL has no default CA path of its own: point it at the system's."""
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if os.path.exists(path):
            return path
    return ""


def _file_safe(text: str) -> str:
    """MicroSIP replaces these characters in recording file names."""
    return "".join("_" if c in '/\\?%*:|"<>. ' else c for c in text) or "unknown"


def _loggable(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    d["event_type"] = d.pop("event")
    d.pop("time", None)
    return d
