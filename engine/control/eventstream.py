"""An event stream's plumbing: the bus handler of one subscribed connection and
the bounded buffer between it and the connection's writer thread."""

from __future__ import annotations

import collections
import select
import socket
import threading
from collections.abc import Callable

import structlog

from ..events import Event
from .protocol import _encode

log = structlog.get_logger("engine.control")

#: Events queued for one subscriber before it is judged too slow and dropped.
MAX_EVENT_BACKLOG = 1000


class _EventBuffer:
    """Bounded FIFO between the bus worker and a subscriber's writer thread."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def push(self, item: bytes) -> bool:
        """Queue ``item``; ``False`` if the buffer is full (the caller drops the client)."""
        with self._cond:
            if self._closed:
                return True
            if len(self._items) >= self._limit:
                return False
            self._items.append(item)
            self._cond.notify()
            return True

    def pop(self) -> bytes | None:
        """The next item, waiting for it; ``None`` once closed."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            return None if self._closed else self._items.popleft()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()


class _Subscriber:
    """The bus handler of one subscribed connection: filter, encode, buffer."""

    def __init__(
        self,
        name: str,
        wanted: frozenset[str] | None,
        buffer: _EventBuffer,
        on_overflow: Callable[[], None],
    ) -> None:
        self.name = name
        self._wanted = wanted
        self._buffer = buffer
        self._on_overflow = on_overflow
        self._overflowed = False

    def on_event(self, event: Event) -> None:
        if self._overflowed or (self._wanted is not None and str(event.type) not in self._wanted):
            return
        try:
            data = _encode(event.to_dict())
        except (TypeError, ValueError) as exc:
            log.error("control_event_unencodable", event_type=str(event.type), error=repr(exc))
            return
        if not self._buffer.push(data):
            self._overflowed = True
            log.warning("control_subscriber_overflow", client=self.name)
            self._on_overflow()


def _wait_for_hangup(sock: socket.socket) -> None:
    """Block until the peer closes completely (or we shut the socket down).

    End of input alone is not a hang-up: ``echo '{"cmd":"subscribe"}' | socat``
    half-closes its side and goes on reading. Only POLLHUP -- both directions
    shut -- ends the stream; a writer error or ``close()`` shuts them for us.
    """
    poller = select.poll()
    poller.register(sock, select.POLLHUP)
    while not poller.poll():
        pass
