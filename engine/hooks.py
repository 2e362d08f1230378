"""MicroSIP's ``cmd*`` event hooks, run without ever blocking the phone.

MicroSIP runs each hook hidden and then waits up to 10 s for it on its UI or SIP
thread, freezing the phone. Here a :class:`HookRunner` is a bus handler: it only
decides *which* hooks an event fires and queues them; a worker per call runs that
call's hooks in order (different calls in parallel), each with a timeout after
which its whole process group is killed. Every run ends in a ``hook`` event
(:class:`~engine.events.HookRun`) with outcome ``ok``, ``failed`` (non-zero exit),
``timeout`` or ``not_started`` (no such program, not executable); nothing a hook
does can raise into the engine.

When each hook fires (MicroSIP 3.22, docs/microsip.md#hooks):

- ``cmdIncomingCall``: every inbound INVITE (``incoming_call``), before any policy.
- ``cmdCallRing``: the policy decided to ring (``incoming_decision`` action ``ring``),
  not when it rejected, forwarded or auto-answered the call.
- ``cmdOutgoingCall``: an outbound call starts (first ``call_state`` ``calling``).
- ``cmdCallAnswer``: an inbound call is CONFIRMED; then ``cmdCallStart``.
- ``cmdCallAnswerVideo``: never fires, the engine has no video (MicroSIP fires it
  only when the call has a remote video stream).
- ``cmdCallStart``: any call reaches CONFIRMED.
- ``cmdCallBusy``: a call ends with 486, 600 or 603; ``cmdCallEnd``: any other end
  (hang-up, missed, cancelled, failed).

The command line is split like Windows' ``CommandLineToArgvW`` (see
:func:`split_windows_command_line`) and run without a shell; the remote user part
(from P-Asserted-Identity when the INVITE had one) is appended as the last argument,
unquoted (omitted when empty, as MicroSIP's ``ShellExecute`` call does).

Only ``cmdOutgoingCall`` expands placeholders (MicroSIP's ``URLMask``), in the text
before it is split. Values that come from the remote party are percent-encoded
(``urllib.parse.quote`` with no safe characters), so they can never add arguments:

========================= ==============================================================
``{server}``              the call's account ``server`` (not encoded), ``localhost``
                          when it has none
``{extension}``           that account's ``username`` (not encoded)
``{password}``            that account's password (encoded)
``{md5_password}``        MD5 of the UTF-8 password, lowercase hex
``{duration}``            whole seconds since the answer (0 when the call starts)
``{time}``                Unix time, whole seconds
``{callerid}``            the remote display name, else the remote user (encoded)
``{user}``, ``{number}``  the remote user part (encoded)
``{domain}``              the remote URI's host[:port] (encoded)
``{name}``                the remote display name (encoded)
``{callid}``              the SIP Call-ID (encoded)
``{direction}``           ``out`` (the value MicroSIP's name implies; its published
                          code tests ``role ? "out" : "in"`` and so prints ``in``)
========================= ==============================================================

MicroSIP's own encoder keeps ``!*()'~`` and escapes ``-._`` with lowercase hex; both
decode to the same bytes. MicroSIP takes ``{server}``/``{extension}``/``{password}``
from the active account; here they come from the call's account. The expanded
command line is never logged (it may hold the password).

Environment of a hook: the engine's own environment plus (no secrets)

=========================== ============================================================
``MICROSIP_EVENT``          ``outgoing_call``, ``incoming_call``, ``call_ring``,
                            ``call_answer``, ``call_start``, ``call_busy``, ``call_end``
``MICROSIP_HOOK``           the INI key, e.g. ``cmdCallAnswer``
``MICROSIP_CALL_ID``        the SIP Call-ID
``MICROSIP_CALL``           the engine's call number (as in events and commands)
``MICROSIP_DIRECTION``      ``incoming`` or ``outgoing``
``MICROSIP_REMOTE_URI``     the remote URI (``sip:user@host``)
``MICROSIP_REMOTE_USER``    the remote user part (P-Asserted-Identity first), the same
                            value as the last argument
``MICROSIP_REMOTE_NAME``    the remote display name (may be empty)
``MICROSIP_ACCOUNT``        the account number (0 = local "call by IP" account)
``MICROSIP_SIP_CODE``       the last SIP status code (180 for ``call_ring``, 200 once
                            answered, the final code at the end; 0 if none yet)
``MICROSIP_SIP_REASON``     its reason phrase
``MICROSIP_DURATION``       whole seconds the call was answered (0 if never)
=========================== ============================================================

Hooks get no stdin, and their stdout/stderr go to ``/dev/null`` (MicroSIP runs them
hidden); a hook that leaves children behind after exiting normally keeps them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import structlog

from ._lazy import LazyModule
from .config import AccountConfig, Settings
from .events import (
    CallDirection,
    CallState,
    CallStateName,
    DecisionAction,
    Event,
    EventType,
    HookOutcome,
    HookRun,
    IncomingCall,
    IncomingDecision,
)
from .sipuri import host_port

if TYPE_CHECKING:
    import subprocess
else:  # ~0.5 MB resident: loaded by the first hook that runs
    subprocess = LazyModule("subprocess")

__all__ = [
    "DEFAULT_TIMEOUT",
    "HOOKS",
    "CallContext",
    "HookRunner",
    "expand_placeholders",
    "hook_environment",
    "split_windows_command_line",
]

log = structlog.get_logger("engine.hooks")

#: MicroSIP waits this long for each hook; we kill the hook's process group instead.
DEFAULT_TIMEOUT = 10.0
BUSY_CODES = frozenset({486, 600, 603})

#: INI key -> (``Settings`` field, ``MICROSIP_EVENT`` value).
HOOKS: Mapping[str, tuple[str, str]] = {
    "cmdOutgoingCall": ("cmd_outgoing_call", "outgoing_call"),
    "cmdIncomingCall": ("cmd_incoming_call", "incoming_call"),
    "cmdCallRing": ("cmd_call_ring", "call_ring"),
    "cmdCallAnswer": ("cmd_call_answer", "call_answer"),
    "cmdCallAnswerVideo": ("cmd_call_answer_video", "call_answer_video"),
    "cmdCallBusy": ("cmd_call_busy", "call_busy"),
    "cmdCallStart": ("cmd_call_start", "call_start"),
    "cmdCallEnd": ("cmd_call_end", "call_end"),
}
_SECRET_PLACEHOLDERS = ("{password}", "{md5_password}")
_PLACEHOLDER = re.compile(r"\{([a-z0-9_]+)\}")
_WHITESPACE = " \t"


# -- command lines ----------------------------------------------------------------------


def split_windows_command_line(command: str) -> list[str]:
    """Split ``command`` exactly as Windows' ``CommandLineToArgvW`` does.

    The program (first word) ends at the next quote when it starts with one, else at
    the first blank; backslashes are literal in it. In the arguments, 2n backslashes
    before a quote give n backslashes and the quote toggles "in quotes"; 2n+1 give n
    backslashes and a literal quote; backslashes before anything else are literal.
    Inside quotes, ``""`` gives a literal quote and ends the quoted part (the pre-2008
    rule CommandLineToArgvW kept). A port of Wine's implementation. Leading and
    trailing blanks are trimmed first, as MicroSIP does; an empty line gives ``[]``.
    """
    s = command.strip()
    if not s:
        return []
    n = len(s)
    if s[0] == '"':
        end = s.find('"', 1)
        program, i = (s[1:], n) if end < 0 else (s[1:end], end + 1)
    else:
        i = 0
        while i < n and s[i] not in _WHITESPACE:
            i += 1
        program = s[:i]
    argv = [program]
    while i < n and s[i] in _WHITESPACE:
        i += 1
    if i < n:
        argv.extend(_split_arguments(s[i:]))
    return argv


def _split_arguments(s: str) -> list[str]:
    """The argument part of :func:`split_windows_command_line` (``s`` is not blank)."""
    args: list[str] = []
    cur: list[str] = []
    quotes = backslashes = 0  # quotes: 0 outside, 1 inside (2 folds back to 0)
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in _WHITESPACE and quotes == 0:
            args.append("".join(cur))
            cur, backslashes = [], 0
            while i < n and s[i] in _WHITESPACE:
                i += 1
            if i >= n:
                return args
            continue
        i += 1
        if c == "\\":
            cur.append(c)
            backslashes += 1
            continue
        if c != '"':
            cur.append(c)
            backslashes = 0
            continue
        if backslashes % 2 == 0:  # n backslashes and a quote that toggles
            del cur[len(cur) - backslashes // 2 :]
            quotes += 1
        else:  # n backslashes and a literal quote
            del cur[len(cur) - backslashes // 2 - 1 :]
            cur.append('"')
        backslashes = 0
        while i < n and s[i] == '"':
            quotes += 1
            if quotes == 3:
                cur.append('"')
                quotes = 0
            i += 1
        if quotes == 2:
            quotes = 0
    args.append("".join(cur))
    return args


# -- what a hook is told ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CallContext:
    """What hooks get to know about a call (from its latest event)."""

    call: int
    sip_call_id: str
    account: int
    direction: CallDirection
    remote_uri: str
    remote_user: str
    display_name: str
    code: int = 0
    reason: str = ""
    duration: float = 0.0

    @classmethod
    def of_incoming(cls, ev: IncomingCall) -> CallContext:
        return cls(
            call=ev.call,
            sip_call_id=ev.sip_call_id,
            account=ev.account,
            direction=CallDirection.IN,
            remote_uri=ev.remote_uri,
            remote_user=ev.remote_user,
            display_name=ev.display_name,
        )

    @classmethod
    def of_state(cls, ev: CallState) -> CallContext:
        return cls(
            call=ev.call,
            sip_call_id=ev.sip_call_id,
            account=ev.account,
            direction=ev.direction,
            remote_uri=ev.remote_uri,
            remote_user=ev.remote_user,
            display_name=ev.display_name,
            code=ev.code,
            reason=ev.reason,
            duration=ev.duration,
        )


def url_encode(value: str) -> str:
    """Percent-encode every byte of the UTF-8 value except letters, digits and ``-._~``."""
    return urllib.parse.quote(value, safe="")


def expand_placeholders(
    template: str, ctx: CallContext, account: AccountConfig | None, now: float | None = None
) -> str:
    """``cmdOutgoingCall``'s placeholders (see the module docstring), in one pass, so a
    value that looks like a placeholder is never expanded again."""
    password = account.password if account else ""
    values = {
        "server": (account.server if account else "") or "localhost",
        "extension": account.username if account else "",
        "password": url_encode(password),
        "md5_password": _md5(password) if account else "",
        "duration": str(int(ctx.duration)),
        "time": str(int(time.time() if now is None else now)),
        "callerid": url_encode(ctx.display_name or ctx.remote_user),
        "user": url_encode(ctx.remote_user),
        "number": url_encode(ctx.remote_user),
        "domain": url_encode(host_port(ctx.remote_uri)),
        "name": url_encode(ctx.display_name),
        "callid": url_encode(ctx.sip_call_id),
        "direction": "out" if ctx.direction == CallDirection.OUT else "in",
    }
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def hook_environment(hook: str, ctx: CallContext) -> dict[str, str]:
    """The ``MICROSIP_*`` variables for ``hook`` (an INI key) about ``ctx``."""
    return {
        "MICROSIP_EVENT": HOOKS[hook][1],
        "MICROSIP_HOOK": hook,
        "MICROSIP_CALL_ID": ctx.sip_call_id,
        "MICROSIP_CALL": str(ctx.call),
        "MICROSIP_DIRECTION": "outgoing" if ctx.direction == CallDirection.OUT else "incoming",
        "MICROSIP_REMOTE_URI": ctx.remote_uri,
        "MICROSIP_REMOTE_USER": ctx.remote_user,
        "MICROSIP_REMOTE_NAME": ctx.display_name,
        "MICROSIP_ACCOUNT": str(ctx.account),
        "MICROSIP_SIP_CODE": str(ctx.code),
        "MICROSIP_SIP_REASON": ctx.reason,
        "MICROSIP_DURATION": str(int(ctx.duration)),
    }


# -- running them -----------------------------------------------------------------------


@dataclasses.dataclass
class _Job:
    hook: str
    call: int
    argv: list[str]
    env: dict[str, str]
    #: The command line holds a password: never log or report it, nor the program.
    secret: bool


@dataclasses.dataclass
class _Track:
    """Per-call firing state, so each hook fires once per call."""

    ctx: CallContext
    outgoing_fired: bool = False
    confirmed: bool = False


class HookRunner:
    """The eight MicroSIP hooks as a bus handler (see the module docstring).

    ``settings_provider()`` gives the current :class:`Settings` (read at each event,
    so configuration changes apply to the next hook); ``publish`` takes the ``hook``
    events; ``account_provider(index)`` gives an account's configuration for
    ``cmdOutgoingCall``'s ``{server}``/``{extension}``/``{password}`` placeholders.
    """

    name = "hooks"
    #: The bus only wakes the runner for these.
    event_types = frozenset(
        {EventType.INCOMING_CALL, EventType.INCOMING_DECISION, EventType.CALL_STATE}
    )

    def __init__(
        self,
        settings_provider: Callable[[], Settings],
        publish: Callable[[Event], None],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        account_provider: Callable[[int], AccountConfig | None] | None = None,
    ) -> None:
        self._settings = settings_provider
        self._publish = publish
        self._accounts = account_provider
        self.timeout = timeout
        self._calls: dict[int, _Track] = {}  # only touched by on_event's thread
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queues: dict[int, deque[_Job]] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._killed: set[int] = set()
        self._closed = False
        self._aborting = False

    # -- deciding ---------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Queue the hooks ``event`` fires. Never blocks, never raises."""
        try:
            self._dispatch(event)
        except Exception as exc:  # a bug here must not cost the engine its handler
            log.error("hook_dispatch_failed", event_type=str(event.type), error=repr(exc))

    def _dispatch(self, event: Event) -> None:
        if self._closed:
            return
        if isinstance(event, IncomingCall):
            ctx = CallContext.of_incoming(event)
            self._calls[event.call] = _Track(ctx)
            self._fire("cmdIncomingCall", ctx)
        elif isinstance(event, IncomingDecision):
            track = self._calls.get(event.call)
            if event.action == DecisionAction.RING and track is not None:
                ctx = dataclasses.replace(track.ctx, code=event.code, reason=event.reason)
                self._fire("cmdCallRing", ctx)
        elif isinstance(event, CallState):
            self._on_state(event)

    def _on_state(self, ev: CallState) -> None:
        ctx = CallContext.of_state(ev)
        track = self._calls.setdefault(ev.call, _Track(ctx))
        track.ctx = ctx
        if ev.direction == CallDirection.OUT and ev.state is CallStateName.CALLING:
            if not track.outgoing_fired:
                track.outgoing_fired = True
                self._fire("cmdOutgoingCall", ctx)
        elif ev.state is CallStateName.CONFIRMED and not track.confirmed:
            track.confirmed = True
            if ev.direction == CallDirection.IN:
                self._fire("cmdCallAnswer", ctx)
                # cmdCallAnswerVideo: only for calls with video, and there is none.
            self._fire("cmdCallStart", ctx)
        elif ev.state is CallStateName.DISCONNECTED:
            self._calls.pop(ev.call, None)
            self._fire("cmdCallBusy" if ev.code in BUSY_CODES else "cmdCallEnd", ctx)

    def _fire(self, hook: str, ctx: CallContext) -> None:
        command = str(getattr(self._settings(), HOOKS[hook][0]))
        if not command.strip():
            return
        secret = hook == "cmdOutgoingCall" and any(p in command for p in _SECRET_PLACEHOLDERS)
        if hook == "cmdOutgoingCall":
            command = expand_placeholders(command, ctx, self._account(ctx.account))
        argv = split_windows_command_line(command)
        if not argv:
            return
        if ctx.remote_user:
            argv.append(ctx.remote_user)
        env = {**os.environ, **hook_environment(hook, ctx)}
        self._enqueue(_Job(hook, ctx.call, argv, env, secret))

    def _account(self, index: int) -> AccountConfig | None:
        if self._accounts is None:
            return None
        try:
            return self._accounts(index)
        except Exception:  # e.g. NotFoundError: the account was removed meanwhile
            return None

    # -- running ----------------------------------------------------------------

    def _enqueue(self, job: _Job) -> None:
        with self._lock:
            queue = self._queues.get(job.call)
            if queue is not None:
                queue.append(job)
                return
            self._queues[job.call] = deque([job])
            worker = threading.Thread(
                target=self._drain, args=(job.call,), name=f"hooks-call-{job.call}", daemon=True
            )
            self._threads[job.call] = worker
            worker.start()

    def _drain(self, call: int) -> None:
        """One call's worker: its hooks one after the other, then it ends."""
        while True:
            with self._lock:
                queue = self._queues[call]
                if not queue or self._aborting:
                    if queue:
                        log.warning("hooks_dropped", call=call, count=len(queue))
                    del self._queues[call]
                    del self._threads[call]
                    self._idle.notify_all()
                    return
                job = queue.popleft()
            try:
                self._run(job)
            except Exception as exc:  # keep the worker (and the call's queue) alive
                log.error("hook_run_failed", hook=job.hook, call=call, error=repr(exc))

    def _run(self, job: _Job) -> None:
        program = "<redacted>" if job.secret else job.argv[0]
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                job.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=job.env,
                close_fds=True,
                start_new_session=True,  # its own process group, killed as a whole
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            error = f"{type(exc).__name__}: {reason}: {program}"
            log.error("hook_not_started", hook=job.hook, call=job.call, error=error)
            self._report(job, HookOutcome.NOT_STARTED, None, time.monotonic() - started, error)
            return
        with self._lock:
            self._running[proc.pid] = proc
            if self._aborting:  # close() ran while it was starting
                self._killed.add(proc.pid)
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
        try:
            self._wait(job, proc, started, program)
        finally:
            with self._lock:
                self._running.pop(proc.pid, None)
                self._killed.discard(proc.pid)

    def _wait(self, job: _Job, proc: subprocess.Popen[bytes], started: float, program: str) -> None:
        try:
            code = proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            seconds = time.monotonic() - started
            log.warning(
                "hook_timeout", hook=job.hook, call=job.call, program=program, seconds=seconds
            )
            self._report(
                job, HookOutcome.TIMEOUT, None, seconds, f"killed after {self.timeout:g} s"
            )
            return
        seconds = time.monotonic() - started
        with self._lock:
            killed = proc.pid in self._killed
        if killed:
            self._report(job, HookOutcome.FAILED, code, seconds, "killed: the engine is stopping")
        elif code == 0:
            log.info("hook_ran", hook=job.hook, call=job.call, seconds=round(seconds, 3))
            self._report(job, HookOutcome.OK, code, seconds, "")
        else:
            log.warning(
                "hook_failed", hook=job.hook, call=job.call, program=program, exit_code=code
            )
            self._report(job, HookOutcome.FAILED, code, seconds, f"exit code {code}")

    def _report(
        self, job: _Job, outcome: HookOutcome, code: int | None, seconds: float, error: str
    ) -> None:
        event = HookRun(
            hook=job.hook,
            call=job.call,
            outcome=outcome,
            exit_code=code,
            seconds=round(seconds, 3),
            error=error,
        )
        try:
            self._publish(event)
        except Exception as exc:
            log.error("hook_report_failed", hook=job.hook, call=job.call, error=repr(exc))

    # -- shutdown ---------------------------------------------------------------

    def pending(self) -> int:
        """Hooks queued or running (for tests and status)."""
        with self._lock:
            return sum(len(q) for q in self._queues.values()) + len(self._running)

    def close(self, timeout: float = 5.0) -> None:
        """Take no new events; let queued and running hooks finish for up to ``timeout``
        seconds, then kill the running ones' process groups and drop the rest."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
            while self._queues and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            self._aborting = True
            running = list(self._running.values())
            self._killed.update(p.pid for p in running)
            workers = list(self._threads.values())
        for proc in running:
            _kill_group(proc)
        for worker in workers:
            worker.join(1.0)

    stop = close


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the hook's whole process group (it leads it), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:  # a setuid child changed owner: kill what we can
        proc.kill()
    try:
        proc.wait(5.0)
    except subprocess.TimeoutExpired:
        log.error("hook_unkillable", pid=proc.pid)


def _md5(text: str) -> str:
    # Imported here: hashlib loads OpenSSL's libcrypto (~2 MB resident) and only
    # {md5_password} in a cmdOutgoingCall template ever needs it.
    import hashlib

    return hashlib.md5(text.encode()).hexdigest()
