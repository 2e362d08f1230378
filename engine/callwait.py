"""Waiting for a call to reach a state: ``CallManager.wait_for``.

Event-driven (a bus subscription), never polling: the caller's thread blocks on a
queue the bus fills, with a hard deadline.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

from .bus import CallbackHandler, EventBus
from .errors import EngineError, NotFoundError
from .events import CallState, CallStateName, EventType
from .state import CallSnapshot

#: Call states in the order a call passes them (calling/incoming are alternatives).
_STATE_RANK = {
    CallStateName.CALLING: 0,
    CallStateName.INCOMING: 0,
    CallStateName.EARLY: 1,
    CallStateName.CONNECTING: 2,
    CallStateName.CONFIRMED: 3,
    CallStateName.DISCONNECTED: 4,
}


def _reached(current: CallStateName, wanted: CallStateName) -> bool:
    if wanted is CallStateName.DISCONNECTED or current is not CallStateName.DISCONNECTED:
        return _STATE_RANK.get(current, -1) >= _STATE_RANK[wanted]
    return False


def _state_event(snap: CallSnapshot) -> CallState:
    """A ``call_state`` event for a call already in the state asked for."""
    return CallState(
        call=snap.call,
        sip_call_id=snap.sip_call_id,
        account=snap.account,
        direction=snap.direction,
        state=snap.state,
        code=snap.code,
        reason=snap.reason,
        remote_uri=snap.remote_uri,
        remote_user=snap.remote_user,
        display_name=snap.display_name,
        duration=time.time() - snap.answer_time if snap.answer_time else 0.0,
    )


def wait_for_state(
    bus: EventBus,
    calls: Callable[[], list[CallSnapshot]],
    call: int,
    state: str,
    timeout: float,
) -> CallState:
    """See :meth:`engine.manager.CallManager.wait_for`."""
    try:
        wanted = CallStateName(state)
    except ValueError:
        raise EngineError(
            f"unknown call state {state!r} (one of {', '.join(_STATE_RANK)})",
            code="bad_params",
        ) from None
    seen: queue.SimpleQueue[CallState] = queue.SimpleQueue()
    unsubscribe = bus.subscribe(
        CallbackHandler(
            f"wait-for-{call}",
            lambda ev: seen.put(ev) if isinstance(ev, CallState) and ev.call == call else None,
            events=frozenset({EventType.CALL_STATE}),
        )
    )
    try:  # subscribed first, then the current state: no change can slip between
        now = [c for c in calls() if c.call == call]
        if now and _reached(now[0].state, wanted):
            return _state_event(now[0])
        if not now and seen.empty():
            raise NotFoundError(f"no call {call}")
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = seen.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise EngineError(
                    f"call {call} did not reach {state} within {timeout:g} s", code="timeout"
                ) from None
            if _reached(event.state, wanted):
                return event
            if event.state is CallStateName.DISCONNECTED:
                raise EngineError(
                    f"call {call} ended ({event.code} {event.reason}) before {state}",
                    code="call_ended",
                )
    finally:
        unsubscribe()
