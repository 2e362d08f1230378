"""structlog set-up and secret redaction.

Configured once at start-up; modules only call ``structlog.get_logger``. Redaction
is a processor, so nothing that reaches a log line (ours or PJSIP's) can carry a
password, a digest response or an SRTP key.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog

SECRET_KEYS = re.compile(r"pass(word)?|secret|token|authorization|crypto|md5", re.IGNORECASE)

_TEXT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization / Proxy-Authorization: the digest response and the rest.
    (re.compile(r"(?im)^((?:proxy-)?authorization\s*:).*$"), r"\1 <redacted>"),
    # SDES keys in SDP (a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:KEY|2^20).
    (re.compile(r"(?i)(inline:)[^\s|\"']+"), r"\1<redacted>"),
    # Key dumps PJSIP prints at high levels ("key=..." / "master key ...").
    (re.compile(r"(?i)((?:master )?key\s*[=:]\s*)[0-9A-Za-z+/=]{16,}"), r"\1<redacted>"),
    # password=... in URIs, ini lines, command lines (/password:x).
    (re.compile(r"(?i)(pass(?:word)?\s*[=:]\s*)(?:\"[^\"]*\"?|\S+)"), r"\1<redacted>"),
    # user:password@host in a SIP URI.
    (re.compile(r"(?i)\b(sips?:[^:@\s;>\"]+:)[^@\s;>\"]+@"), r"\1<redacted>@"),
    (re.compile(r"(?i)(auth_pass=)[^;>\s]+"), r"\1<redacted>"),
)


#: Whether debug lines are wanted: lets hot paths skip building what would be dropped.
#: True until :func:`configure` says otherwise (structlog's default prints everything).
debug_enabled = True


def redact_text(text: str) -> str:
    """Remove secrets from free text (SIP messages, command lines)."""
    for pattern, repl in _TEXT_RULES:
        text = pattern.sub(repl, text)
    return text


def redact(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: secret-named keys are masked, every string is scrubbed."""
    for key, value in list(event_dict.items()):
        if SECRET_KEYS.search(key) and value not in (None, ""):
            event_dict[key] = "<redacted>"
        elif isinstance(value, str):
            event_dict[key] = redact_text(value)
    return event_dict


class LogFile:
    """``serve --log-file``: an append-only file that logrotate can move away. After
    :meth:`request_reopen` (SIGHUP) the next line goes to a fresh file at the path.
    Safe from a signal handler: that only sets a flag; writers reopen under a lock."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._lock = threading.Lock()
        self._reopen = False
        self._file = self._open()

    def _open(self) -> TextIO:
        return open(self.path, "a", encoding="utf-8")

    def request_reopen(self) -> None:
        self._reopen = True

    def write(self, text: str) -> int:
        with self._lock:
            if self._reopen:
                self._reopen = False
                self._file.close()
                self._file = self._open()
            return self._file.write(text)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()


def library_default() -> None:
    """Quiet unless asked: a program that uses the engine as a library and has not
    set up structlog itself gets warnings and errors only (structlog's own default
    prints every debug line). Call :func:`configure` (e.g. ``level="debug"``) or
    ``structlog.configure`` before creating the engine to choose otherwise."""
    if not structlog.is_configured():
        configure("console", "warning")


def configure(
    fmt: str = "console", level: str = "info", stream: TextIO | LogFile | None = None
) -> None:
    """Set up structlog for the whole process: console or JSON lines, secrets redacted."""
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    global debug_enabled
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    debug_enabled = numeric <= logging.DEBUG
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write() per line (PrintLogger's print() makes two: the line, then "\n"),
        # so processes sharing a log file (the supervisor and its engine) never
        # interleave inside a line when Python's streams are unbuffered. A LogFile
        # has the write/flush WriteLogger uses.
        logger_factory=structlog.WriteLoggerFactory(cast(TextIO, stream) or sys.stderr),
        cache_logger_on_first_use=False,
    )
