"""Clients for baresip's TCP control channels.

``ctrl_tcp`` speaks JSON in netstrings (``<len>:<json>,``): commands
``{"command", "params", "token"}`` get ``{"response": true, "ok", "data",
"token"}``; events arrive unasked as ``{"event": true, "class", "type", ...}``.
baresip 1.0.0 allows one control connection at a time.

``cons`` is a line console whose output carries the UI text that ctrl_tcp does
not: a received SIP MESSAGE is printed only there, as ``\\r<from>: "<text>"\\n``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .process import PeerError

__all__ = ["ConsoleClient", "CtrlClient", "CtrlResponse", "Event", "ReceivedMessage"]

Event = dict[str, Any]

# ui_output() in baresip 1.0.0 formats a MESSAGE as "\r%r: \"%b\"\n" into a
# 512-byte buffer: longer texts are cut; a text containing '"\n' is ambiguous.
_MESSAGE_RE = re.compile(r'\r(sips?:[^\s"]+): "(.*?)"\n', re.DOTALL)


@dataclass(frozen=True)
class CtrlResponse:
    ok: bool
    data: str


@dataclass(frozen=True)
class ReceivedMessage:
    """A SIP MESSAGE as baresip printed it: sender AOR and UTF-8 text."""

    peer: str
    text: str


class _SocketReader:
    """A TCP connection to baresip read by a daemon thread that feeds ``_feed``."""

    def __init__(self, port: int, thread_name: str) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=2.0)
        self._sock.settimeout(None)
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read_loop, name=thread_name, daemon=True)

    def _read_loop(self) -> None:
        try:
            while chunk := self._sock.recv(65536):
                self._feed(chunk)
        except OSError:
            pass  # closed under us: the waiters see _closed
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def _feed(self, chunk: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=2.0)


class CtrlClient(_SocketReader):
    """One ctrl_tcp connection; a reader thread collects responses and events."""

    def __init__(self, port: int, *, on_event: Callable[[Event], None] | None = None) -> None:
        super().__init__(port, "baresip-ctrl")
        self._responses: dict[str, CtrlResponse] = {}
        self._events: list[Event] = []
        self._tokens = itertools.count(1)
        self._on_event = on_event
        self._send_lock = threading.Lock()
        self._buf = b""
        #: Problems met on the reader thread (bad JSON, a failing event hook).
        self.errors: list[str] = []
        self._thread.start()

    # -- reader ------------------------------------------------------------

    def _feed(self, chunk: bytes) -> None:
        self._buf += chunk
        while True:
            head, colon, rest = self._buf.partition(b":")
            if not colon or not head.isdigit():
                return
            size = int(head)
            if len(rest) < size + 1:
                return
            self._dispatch(rest[:size])
            self._buf = rest[size + 1 :]  # skip the trailing ','

    def _dispatch(self, payload: bytes) -> None:
        try:
            message = json.loads(payload.decode("utf-8", errors="replace"))
        except ValueError as exc:
            self.errors.append(f"undecodable netstring {payload[:200]!r}: {exc}")
            return
        # The hook runs before waiters wake, so what it files (a call's recording on
        # CALL_CLOSED) is in place when a test sees the event.
        if message.get("event") and self._on_event is not None:
            try:
                self._on_event(message)
            except Exception as exc:  # keep reading events whatever the hook does
                self.errors.append(f"event hook failed on {message.get('type')}: {exc!r}")
        with self._cond:
            if message.get("response"):
                token = str(message.get("token", ""))
                self._responses[token] = CtrlResponse(
                    ok=bool(message.get("ok")), data=str(message.get("data", ""))
                )
            elif message.get("event"):
                self._events.append(message)
            self._cond.notify_all()

    # -- API ---------------------------------------------------------------

    def command(
        self, command: str, params: str | None = None, timeout: float = 5.0
    ) -> CtrlResponse:
        """Run a baresip command (any long command name, e.g. ``dial``) and
        wait for its response."""
        token = f"t{next(self._tokens)}"
        body: dict[str, str] = {"command": command, "token": token}
        if params is not None:
            body["params"] = params
        data = json.dumps(body, ensure_ascii=False).encode()
        with self._send_lock:
            self._sock.sendall(b"%d:%s," % (len(data), data))
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    why = "connection closed" if self._closed else f"no response in {timeout}s"
                    raise PeerError(f"baresip command {command!r}: {why}")
                self._cond.wait(left)
            return self._responses.pop(token)

    @property
    def events(self) -> list[Event]:
        with self._cond:
            return list(self._events)

    def wait_event(
        self,
        predicate: Callable[[Event], bool],
        timeout: float,
        what: str,
        since: int = 0,
    ) -> Event:
        """The first event at index >= ``since`` matching ``predicate``."""
        deadline = time.monotonic() + timeout
        index = since
        with self._cond:
            while True:
                while index < len(self._events):
                    event = self._events[index]
                    index += 1
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    seen = "\n".join(
                        f"  {e.get('type')} {e.get('accountaor', '')} {e.get('param', '')}"
                        for e in self._events[since:]
                    )
                    why = "control connection closed" if self._closed else f"{timeout}s passed"
                    errors = "".join(f"\nreader error: {e}" for e in self.errors)
                    raise PeerError(
                        f"no baresip event {what} ({why}); events seen:\n{seen}{errors}"
                    )
                self._cond.wait(left)


class ConsoleClient(_SocketReader):
    """A read-only connection to baresip's ``cons`` module, parsing MESSAGEs."""

    def __init__(self, port: int) -> None:
        super().__init__(port, "baresip-cons")
        self._messages: list[ReceivedMessage] = []
        self._text = ""
        self._pending = b""
        self._thread.start()

    def _feed(self, chunk: bytes) -> None:
        self._pending += chunk
        try:
            text = self._pending.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.end >= len(self._pending):
                return  # a character split across reads: wait for the rest
            text = self._pending.decode("utf-8", errors="replace")
        self._pending = b""
        with self._cond:
            self._text += text
            self._parse()
            self._cond.notify_all()

    def _parse(self) -> None:
        consumed = 0
        for match in _MESSAGE_RE.finditer(self._text):
            self._messages.append(ReceivedMessage(match.group(1), match.group(2)))
            consumed = match.end()
        # Keep an unfinished tail only (a MESSAGE may arrive in pieces).
        tail = self._text[consumed:]
        cut = tail.rfind("\r")
        self._text = tail[cut:] if cut >= 0 else ""

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._cond:
            return list(self._messages)

    def wait_message(
        self, predicate: Callable[[ReceivedMessage], bool], timeout: float, since: int = 0
    ) -> ReceivedMessage:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self._messages[since:]:
                    if predicate(message):
                        return message
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    got = "\n".join(f"  {m.peer}: {m.text!r}" for m in self._messages)
                    raise PeerError(f"no matching MESSAGE within {timeout}s; received:\n{got}")
                self._cond.wait(left)
