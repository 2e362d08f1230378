"""One info line per milestone an operator looks for: an account registered or
failed, a call started or ended. Everything else stays at debug level.

A bus handler (its own thread), so logging never delays SIP processing.
"""

from __future__ import annotations

import structlog

from .events import CallState, CallStateName, Event, EventType, RegistrationChanged, RegState

log = structlog.get_logger("engine")


class MilestoneLog:
    """Logs changes only: a registration refreshed every few minutes is not news."""

    name = "milestone-log"
    event_types = frozenset({EventType.REGISTRATION, EventType.CALL_STATE})

    def __init__(self) -> None:
        self._reg: dict[int, RegState] = {}

    def on_event(self, event: Event) -> None:
        if isinstance(event, RegistrationChanged):
            self._registration(event)
        elif isinstance(event, CallState):
            self._call(event)

    def _registration(self, event: RegistrationChanged) -> None:
        if self._reg.get(event.account) is event.state:
            return
        self._reg[event.account] = event.state
        if event.state is RegState.REGISTERED:
            log.info("account_registered", account=event.account, uri=event.uri)
        elif event.state is RegState.FAILED:
            log.warning(
                "account_registration_failed",
                account=event.account,
                uri=event.uri,
                code=event.code,
                reason=event.reason,
                retry_in=event.retry_in,
            )

    @staticmethod
    def _call(event: CallState) -> None:
        who = {"call": event.call, "direction": event.direction, "remote": event.remote_uri}
        if event.state in (CallStateName.CALLING, CallStateName.INCOMING):
            log.info("call_started", account=event.account, **who)
        elif event.state is CallStateName.DISCONNECTED:
            duration = round(event.duration, 1)
            log.info("call_ended", code=event.code, reason=event.reason, duration=duration, **who)
