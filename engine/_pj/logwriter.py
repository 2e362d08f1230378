"""PJSIP's own log, routed into structlog at a capped level."""

from __future__ import annotations

import pjsua2 as pj
import structlog

from .guard import callback

log = structlog.get_logger("pjsip")

#: Above 4 PJSIP prints SRTP master keys; never go there whatever is configured.
MAX_PJSIP_LEVEL = 4

# PJSIP levels: 1 error, 2 warning, 3 info, 4-5 debug.
# PJSIP's level 3 is chatty protocol detail: it goes to our debug level.
_METHODS = {0: "critical", 1: "error", 2: "warning"}
#: Refusals the engine expects and reports itself, so PJSIP's error line is debug:
#: a taken port (the engine falls back or refuses, naming the port) and a SUBSCRIBE
#: for an event package we do not serve (our own MWI SUBSCRIBE looped back by the
#: registrar, answered 489 Bad Event).
_EXPECTED = ("Address already in use", "Unable to create server subscription: Bad Event")


class StructlogWriter(pj.LogWriter):  # type: ignore[misc]
    """Called on any native thread; does nothing but hand the line to structlog."""

    #: Set while the engine does something expected to log errors (the capacity probe).
    muted = False

    @callback
    def write(self, entry: pj.LogEntry) -> None:
        if self.muted:
            return
        msg = str(entry.msg).rstrip()
        if not msg:
            return
        method = _METHODS.get(int(entry.level), "debug")
        if any(text in msg for text in _EXPECTED):
            method = "debug"
        getattr(log, method)("pjsip", msg=msg, thread=str(entry.threadName))


def log_config(cfg: pj.LogConfig, level: int, writer: StructlogWriter) -> None:
    cfg.level = max(0, min(int(level), MAX_PJSIP_LEVEL))
    cfg.consoleLevel = cfg.level
    cfg.msgLogging = 1 if cfg.level >= 4 else 0
    cfg.decor = 0
    cfg.writer = writer
