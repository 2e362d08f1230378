"""Queued MicroSIP command lines (WM_COPYDATA ``dwData=2``), run one after another.

The sender has its reply as soon as a line is queued, so a line that fails later is
only logged, never raised. The worker thread starts with the first line and stops
when the queue is closed (the engine's shutdown): lines not started by then are
dropped and counted in the log. A line's text is never logged: it may carry
``/password:``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import structlog

from .errors import EngineError, EngineStoppedError

log = structlog.get_logger("engine.commands")

_STOP = object()


class LineQueue:
    """Runs ``run(line)`` for each :meth:`put` line, in order, on a thread of its own."""

    def __init__(self, run: Callable[[str], object], *, name: str = "copydata-queue") -> None:
        self._run_line = run
        self._name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the worker may still be finishing a line)."""
        return self._closed.is_set()

    def put(self, line: str) -> None:
        """Queue ``line``; after :meth:`close` this raises ``stopped``."""
        with self._lock:
            if self._closed.is_set():
                raise EngineStoppedError("the engine is stopping: no more queued command lines")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
            self._queue.put(line)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker: the line being run finishes (up to ``timeout`` seconds),
        the lines after it are dropped. Idempotent."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            thread = self._thread
            if thread is None:
                return
            self._queue.put(_STOP)
        if thread is threading.current_thread():
            return  # a queued line closed its own queue: the loop ends after it
        thread.join(timeout)
        if thread.is_alive():
            log.warning("queued_command_still_running", timeout=timeout)

    def _work(self) -> None:
        dropped = 0
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            if self._closed.is_set():
                dropped += 1
                continue
            assert isinstance(item, str)
            self._run_one(item)
        if dropped:
            log.warning("queued_commands_dropped", count=dropped, reason="engine stopping")

    def _run_one(self, line: str) -> None:
        try:
            self._run_line(line)
        except EngineError as exc:
            log.error("queued_command_failed", code=exc.code, error=exc.message)
        except Exception as exc:
            log.exception("queued_command_crashed", error=repr(exc))
