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
from .accountadmin import AccountAdmin
from .behaviour import BehaviourSettings, MicroSipBehaviour, caller_id, dtmf_method
from .bus import CallbackHandler, EventBus, Handler
from .callwait import wait_for_state
from .config import AccountConfig, Config
from .deferred import DeferredDials
from .dialplan import to_sip_uri
from .errors import EngineError, EngineStoppedError, InvalidTargetError, NotFoundError
from .events import (
    CallDirection,
    CallState,
    CallStateName,
    EngineStarted,
    EngineStopping,
    Event,
    EventType,
)
from .history import CallHistory, default_history_path
from .hooks import HookRunner
from .levels import AudioLevels
from .milestones import MilestoneLog
from .policy import Toggles, decide
from .recordings import recording_dir, recording_file
from .state import AccountSnapshot, CallSnapshot, Decision, Limits

log = structlog.get_logger("engine.manager")

ENGINE_VERSION = "0.1.0"

T = TypeVar("T")


class CallManager:
    """Accounts, calls and events of one headless softphone.

    Longer than 300 lines as the public facade: one short method per engine command
    (the command table, the CLI and the tests call them by name). The logic lives in
    its components: :mod:`engine.deferred`, :mod:`engine.accountadmin`,
    :mod:`engine.levels` and :mod:`engine.recordings`.
    """

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
        self._lock = threading.RLock()
        self._started = False
        self._stack = PjStack(
            _stack_settings(config, bind_address, sip_port),
            self._publish,
            functools.partial(
                MicroSipBehaviour,
                settings=BehaviourSettings.from_config(config),
                policy=self._decide,
                auto_record=self._auto_record_path,
            ),
        )
        self.toggles = Toggles.from_settings(config.settings)
        self.limits: Limits | None = None
        self.started_at = 0.0
        self._deferred = DeferredDials(self, self._publish, self._lock)
        self._account_admin = AccountAdmin(
            self,
            self._lock,
            add=lambda i, acc, pw: self._stack.run(self._stack.add_account, i, acc, pw),
            remove=lambda i: self._run(self._stack.remove_account, i),
            drop_dials=self._deferred.drop,
        )
        self._levels = AudioLevels(
            self,
            self._lock,
            set_levels=lambda **c: self._run(lambda: self._stack.mixer.set_levels(**c)),
            state=lambda: self._run(self._stack.mixer.state),
        )
        #: Set by the ``exit`` command (MicroSIP's ``/exit``); the service loop stops us.
        self.exit_requested = threading.Event()
        self.history, self.hooks = self._handlers(config)

    def _handlers(self, config: Config) -> tuple[CallHistory, HookRunner]:
        """The handlers every engine has: history, hooks, milestone log, deferred dials."""
        # Call history is written on the SIP thread *before* an event is published,
        # so an ended call is committed before anyone hears it ended (kill -9 safe).
        history = CallHistory(
            default_history_path(config.engine),
            max_rows=config.engine.history_rows,
        )
        hooks = HookRunner(
            lambda: self.config.settings,
            self._publish,
            timeout=float(config.engine.hook_timeout),
            account_provider=self._account_or_none,
        )
        self.bus.subscribe(hooks)
        self.bus.subscribe(MilestoneLog())
        self.bus.subscribe(
            CallbackHandler(
                "deferred-dial", self._deferred.on_event, events=frozenset({EventType.REGISTRATION})
            )
        )
        return history, hooks

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
            for index, acc in self._account_admin.wanted():
                self._account_admin.add(index, acc)
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
        if self.shut_down(reason):
            self.hooks.close()  # lets the cmdCallEnd hooks of the last hang-ups run out
            self.history.close()

    def shut_down(self, reason: str = "stop") -> bool:
        """The first half of :meth:`stop`: hang up, un-REGISTER, destroy pjsua2 and
        deliver the last events; the hooks and the history stay open for their owner
        to close after it (:class:`engine.assembly.Engine`). False if not running."""
        with self._lock:
            if not self._started:
                return False
            self._started = False
        self._publish(EngineStopping(reason=reason))
        self._deferred.cancel_timers()
        self._stack.stop()
        self.bus.close()  # delivers the last events (the hang-ups of shutdown) first
        return True

    #: Called after :attr:`exit_requested` is set, so whoever runs the engine wakes
    #: at once instead of polling the flag (:class:`engine.assembly.Engine` sets it).
    exit_listener: Callable[[], None] | None = None

    def request_exit(self) -> None:
        """Ask the process running this engine to stop it (after replying)."""
        self.exit_requested.set()
        listener = self.exit_listener
        if listener is not None:
            listener()

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
        return recording_file(call, self.account_config(call.account), self.recording_dir())

    def recording_dir(self) -> str:
        return recording_dir(self.config.settings)

    def _auto_record_path(self, call: CallSnapshot) -> str | None:
        return self.recording_file(call) if self.config.settings.auto_recording else None

    # -- accounts ---------------------------------------------------------------

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
        return self._deferred.dial_when_registered(target, account, post_dial)

    def dial_now(self, target: str, account: int, post_dial: tuple[str, ...]) -> CallSnapshot:
        """:meth:`dial` as the deferred dial places its calls."""
        return self.dial(target, account, post_dial=post_dial)

    @property
    def deferred_dial_ttl(self) -> float:
        """Seconds a deferred dial waits for REGISTER 200 before it is dropped."""
        return self._deferred.ttl

    @deferred_dial_ttl.setter
    def deferred_dial_ttl(self, seconds: float) -> None:
        self._deferred.ttl = seconds

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

    # -- audio levels: MicroSIP's mute buttons and volume steps (engine.levels) -----

    def audio_levels(self, **changes: Any) -> dict[str, Any]:
        """Set ``mic_muted`` / ``speaker_muted`` / ``mic_volume`` / ``speaker_volume``
        (0-100); volumes are saved as ``volumeInput`` / ``volumeOutput``."""
        return self._levels.set(**changes)

    def toggle_mute(self, device: str) -> dict[str, Any]:
        return self._levels.toggle_mute(device)

    def volume_step(self, device: str, step: int) -> dict[str, Any]:
        """MicroSIP's micup/micdown/speakup/speakdown: VOLUME_STEP per click."""
        return self._levels.step(device, step)

    # -- accounts: switching and passwords (engine.accountadmin) --------------------

    def switch_account(self, index: int) -> AccountSnapshot | None:
        """Make ``[Account<index>]`` the registered account and save ``accountId``."""
        return self._account_admin.switch(index)

    def save_password(self, index: int, password: str) -> None:
        """Store a plaintext password in ``[Account<index>]``; re-register if active."""
        self._account_admin.save_password(index, password)

    def override_password(self, password: str) -> None:
        """In-memory password for the active account (not saved); re-registers it."""
        self._account_admin.override_password(password)

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
        """The engine, its accounts, calls and capacity: the stack's part read in one
        trip to the SIP thread (:mod:`engine._pj.snapshot`), so the reply agrees with
        itself (``capacity.calls`` counts the ``calls`` it lists)."""
        from ._pj import take_snapshot

        snap = self._run(take_snapshot, self._stack)
        now = snap.taken_at
        return {
            "version": ENGINE_VERSION,
            "pjsip": snap.limits.pjsip_version,
            "uptime": round(now - self.started_at, 3),
            "sip": [str(t) for t in snap.transports],
            "control": self.control,
            "history": str(self.history.path),
            "capacity": {"max_calls": snap.limits.max_calls, "calls": len(snap.calls)},
            "toggles": dataclasses.asdict(self.toggles),
            "audio": snap.audio,
            "limits": snap.limits.to_dict(),
            "accounts": [a.to_dict() for a in snap.accounts],
            # What the configuration ignored or refused (e.g. an account without domain).
            "config_warnings": list(self.config.warnings),
            "calls": [c.to_dict(now) for c in snap.calls],
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


def _loggable(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    d["event_type"] = d.pop("event")
    d.pop("time", None)
    return d
