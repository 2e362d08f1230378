"""structlog set-up and secret redaction.

Configured once at start-up; modules only call ``structlog.get_logger``. Redaction
is a processor, so nothing that reaches a log line (ours or PJSIP's) can carry a
password, a digest response or an SRTP key.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

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


def configure(fmt: str = "console", level: str = "info", stream: TextIO | None = None) -> None:
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
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
