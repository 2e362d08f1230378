"""The event bus: events in from the SIP thread, out to pluggable handlers.

``publish`` never blocks (the pjsua2 thread calls it). Each handler has a worker
thread and a queue of its own, so a handler that raises or blocks for seconds
neither delays SIP processing nor stops the other handlers. A handler that raises
is logged and a ``HandlerFailed`` event goes to the others.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import structlog

from .events import Event, EventType, HandlerFailed

log = structlog.get_logger("engine.bus")

#: Events queued for one handler before the oldest ones are dropped (a stuck
#: handler must not grow memory without bound).
MAX_BACKLOG = 10_000


@runtime_checkable
class Handler(Protocol):
    """A UI-less consumer of engine events."""

    name: str

    def on_event(self, event: Event) -> None: ...


#: A handler may also have ``event_types``: a frozenset of the EventTypes it wants
#: (None or absent: all of them).


class _Worker:
    def __init__(self, bus: EventBus, handler: Handler) -> None:
        self.bus = bus
        self.handler = handler
        self.queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self.dropped = 0
        self.thread = threading.Thread(
            target=self._run, name=f"handler-{handler.name}", daemon=True
        )

    def _run(self) -> None:
        while True:
            event = self.queue.get()
            if event is None:
                return
            try:
                self.handler.on_event(event)
            except Exception as exc:  # isolate the handler, tell the others
                log.error(
                    "handler_failed",
                    handler=self.handler.name,
                    event_type=str(event.type),
                    error=repr(exc),
                )
                if not isinstance(event, HandlerFailed):
                    self.bus.publish(
                        HandlerFailed(
                            handler=self.handler.name,
                            failed_event=str(event.type),
                            error=repr(exc),
                        ),
                        skip=self,
                    )

    def put(self, event: Event) -> None:
        # A handler may name the events it wants (``event_types``); others are not queued,
        # so its thread is not woken (fewer wake-ups competing for the GIL with the
        # SIP thread).
        wanted = getattr(self.handler, "event_types", None)
        if (
            wanted is not None
            and event.type not in wanted
            and event.type is not EventType.HANDLER_FAILED
        ):
            return
        if self.queue.qsize() >= MAX_BACKLOG:
            self.dropped += 1
            if self.dropped in (1, 100, 10_000):
                log.warning("handler_backlog_full", handler=self.handler.name, dropped=self.dropped)
            return
        self.queue.put(event)


class EventBus:
    """Fan-out of events to handlers, each on its own thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._closed = False

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        """Start delivering events to ``handler``; returns a function that stops it."""
        worker = _Worker(self, handler)
        with self._lock:
            if self._closed:
                raise RuntimeError("event bus is closed")
            self._workers.append(worker)
        worker.thread.start()

        def unsubscribe() -> None:
            with self._lock:
                if worker not in self._workers:
                    return
                self._workers.remove(worker)
            worker.queue.put(None)

        return unsubscribe

    def publish(self, event: Event, *, skip: object = None) -> None:
        """Queue ``event`` for every handler. Never blocks, never raises."""
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            if worker is not skip:
                worker.put(event)

    def close(self, timeout: float = 2.0) -> None:
        """Let handlers drain what is queued (up to ``timeout`` s in all), then stop them."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.queue.put(None)
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))


class CallbackHandler:
    """Adapts a plain function to the :class:`Handler` protocol."""

    def __init__(
        self,
        name: str,
        func: Callable[[Event], None],
        events: frozenset[EventType] | None = None,
    ) -> None:
        self.name = name
        self._func = func
        self.event_types = events

    def on_event(self, event: Event) -> None:
        self._func(event)
