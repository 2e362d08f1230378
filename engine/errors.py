"""The engine's exception types.

Every failure that crosses the engine's public API is one of these; ``pj.Error``
(whose ``str()`` is empty) is translated in the private pjsua2 layer only.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class: ``code`` is a short machine-readable word, the message is for people."""

    code = "engine_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class ConfigError(EngineError):
    """A configuration file or value is wrong; names the file, line and key when known."""

    code = "config_error"

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        where = ""
        if path is not None:
            where = path + (f":{line}" if line is not None else "") + ": "
        super().__init__(where + message)
        self.path = path
        self.line = line
        self.key = key


class SipError(EngineError):
    """pjsua2 refused an operation: ``status`` is the pj_status_t, ``reason`` its text."""

    code = "sip_error"

    def __init__(self, operation: str, status: int, reason: str) -> None:
        super().__init__(f"{operation} failed: {reason} (status {status})")
        self.operation = operation
        self.status = status
        self.reason = reason


class CapacityError(EngineError):
    """A limit of the pjsua2 build (calls, accounts, players) would be exceeded."""

    code = "capacity"


class NotFoundError(EngineError):
    """No such call or account."""

    code = "not_found"


class InvalidTargetError(EngineError):
    """A dial target, URI or argument is malformed."""

    code = "invalid_target"


class EngineStoppedError(EngineError):
    """The engine is not running (not started yet, or stopping)."""

    code = "stopped"
