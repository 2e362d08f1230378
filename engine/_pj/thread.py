"""The one thread that owns pjsua2: commands in, timers, the poll loop, shutdown.

Design (docs/pjsua2-builds.md, "Threading"): pjsua2 runs in poll mode on a thread
we create; every pjsua2 object is created, used and dropped there. Other threads
call :meth:`SipThread.run`, which queues a function and wakes the loop by sending
a CRLF keep-alive (which PJSIP silently ignores) to our own UDP transport, so an
idle engine can poll slowly without making commands wait.

:class:`SipThread` knows nothing of SIP: the SIP side is a :class:`LoopSide`
given at construction (:class:`~engine._pj.lifecycle.StackLoop` in the engine), so
the thread is used, not inherited, and tests can drive it with a stand-in.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

import pjsua2 as pj
import structlog

from ..errors import EngineError, EngineStoppedError
from .guard import translate

log = structlog.get_logger("engine.stack")

T = TypeVar("T")

#: pjsua2 has one Endpoint per process; a second one would abort in C.
_ONE_PER_PROCESS = threading.Lock()


class LoopSide(Protocol):
    """What the SIP layer does on the thread, in the order the thread calls it."""

    def start_up(self) -> None:
        """Create the endpoint (first thing on the thread); raising aborts the start."""

    def poll_ms(self) -> int:
        """How long the next poll may block when no timer is due sooner."""

    def handle_events(self, ms: int) -> None:
        """One poll: hand pjsua2 up to ``ms`` milliseconds to process SIP and timers."""

    def after_events(self) -> None:
        """Runs after every poll, once commands and timers ran."""

    def shut_down(self) -> None:
        """The loop has ended: say goodbye, then :meth:`tear_down`."""

    def tear_down(self) -> None:
        """Drop every pjsua2 object and the library (also after a failed start)."""


class SipThread:
    """Runs the pjsua2 loop on a thread of its own and marshals work onto it."""

    def __init__(self, side: LoopSide) -> None:
        self._side = side
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._stop = threading.Event()
        self._stopped = threading.Event()
        # Sent from, not listened on; bound on first use to loopback (the only place
        # it sends to), never auto-bound to 0.0.0.0: the engine opens no port the
        # user did not ask for.
        self._wake_sock: socket.socket | None = None
        self._wake_lock = threading.Lock()
        #: Our own UDP transport, set by the SIP side once bound: commands wake the
        #: poll by a keep-alive sent there (None: no wake-up, so poll briskly).
        self.wake_addr: tuple[str, int] | None = None

    # -- the thread --------------------------------------------------------------

    def start_thread(self, timeout: float) -> None:
        if not _ONE_PER_PROCESS.acquire(blocking=False):
            raise EngineError(
                "another engine already runs in this process (pjsua2 allows one)",
                code="invalid_state",
            )
        self._thread = threading.Thread(target=self._main, name="pjsua2", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise EngineError("pjsua2 did not start in time", code="start_failed")
        if self._start_error is not None:
            raise self._start_error

    def run(self, func: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Run ``func(*args)`` on the pjsua2 thread and return its result."""
        if threading.current_thread() is self._thread:
            return func(*args)
        if self._stop.is_set() or not self._ready.is_set():
            raise EngineStoppedError("the engine is not running")
        fut: Future[T] = Future()
        self._commands.put((lambda: func(*args), fut))
        self._wake()
        try:
            return fut.result(timeout)
        except TimeoutError:
            if fut.cancel():
                raise EngineError(
                    "the SIP thread did not answer in time; the command was not run",
                    code="timeout",
                ) from None
            raise EngineError(
                "the SIP thread did not answer in time; the command is still running",
                code="timeout",
            ) from None
        finally:
            del fut  # the future holds the exception, the exception this frame: no cycle

    def _wake(self) -> None:
        if self.wake_addr is None:
            return
        with self._wake_lock, contextlib.suppress(OSError):
            if self._wake_sock is None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((self.wake_addr[0], 0))
                self._wake_sock = sock
            self._wake_sock.sendto(b"\r\n\r\n", self.wake_addr)

    def schedule(self, delay: float, func: Callable[[], None]) -> None:
        """Run ``func`` on the pjsua2 thread after ``delay`` seconds (pjsua2 thread only)."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_seq), func))

    def _main(self) -> None:
        try:
            self._side.start_up()
        except BaseException as exc:
            error = translate("start", exc) if isinstance(exc, pj.Error) else exc
            self._start_error = detached(error)
            self._side.tear_down()
            self._ready.set()
            self._stopped.set()
            _ONE_PER_PROCESS.release()
            return
        self._ready.set()
        try:
            self._loop()
        finally:
            self._side.shut_down()
            self._stopped.set()
            _ONE_PER_PROCESS.release()

    def _loop(self) -> None:
        while not self._stop.is_set():
            poll = self._side.poll_ms()
            if self._timers:
                until = (self._timers[0][0] - time.monotonic()) * 1000
                poll = max(0, min(poll, int(until) + 1))
            self._side.handle_events(poll)
            self._drain()

    def _drain(self) -> None:
        while True:
            try:
                func, fut = self._commands.get_nowait()
            except queue.Empty:
                break
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(func())
            except pj.Error as exc:
                fut.set_exception(detached(translate("command", exc)))
            except BaseException as exc:
                fut.set_exception(detached(exc))
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, func = heapq.heappop(self._timers)
            try:
                func()
            except pj.Error as exc:
                log.error("timer_failed", error=translate("timer", exc).message)
            except Exception as exc:
                log.error("timer_failed", error=repr(exc))
        self._side.after_events()

    def clear_timers(self) -> None:
        """Forget every timer (shutdown: they may hold pjsua2 objects)."""
        self._timers.clear()

    def fail_pending_commands(self) -> None:
        """Commands queued but never run: their callers get a clear error."""
        for number, fut in self._pending_commands():
            fut.set_exception(EngineStoppedError(f"engine stopped before command {number} ran"))

    def _pending_commands(self) -> Iterator[tuple[int, Future[Any]]]:
        n = 0
        while True:
            try:
                _, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            n += 1
            if fut.set_running_or_notify_cancel():
                yield n, fut

    def stop(self, timeout: float = 2.5) -> None:
        """End the loop: the side's ``shut_down`` and ``tear_down`` run on this thread
        (for the stack: hang up, un-REGISTER, destroy). Safe to call twice and from
        any thread."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake()
        self._thread.join(timeout + 1.0)
        if self._thread.is_alive():
            log.error("sip_thread_still_running", detail=f"not stopped after {timeout + 1.0} s")
        with self._wake_lock:
            if self._wake_sock is not None:
                self._wake_sock.close()
                self._wake_sock = None


def detached(exc: BaseException) -> BaseException:
    """The exception alone: no traceback, no chained cause or context. Their frames
    may hold pjsua2 objects, which must die on the pjsua2 thread, before libDestroy."""
    exc.__context__ = exc.__cause__ = None
    return exc.with_traceback(None)
