"""The engine's fixed set of typed events.

Every SIP callback ends up as one of these frozen dataclasses. ``to_dict()`` is the
one serialisation used by the event stream, the logs, hooks and tests alike. Events
never carry secrets: no passwords, no Authorization headers, no SRTP keys.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from typing import Any, ClassVar


class EventType(enum.StrEnum):
    ENGINE_STARTED = "engine_started"
    ENGINE_STOPPING = "engine_stopping"
    REGISTRATION = "registration"
    INCOMING_CALL = "incoming_call"
    CALL_STATE = "call_state"
    MEDIA_STATE = "media_state"
    DTMF_RECEIVED = "dtmf_received"
    MESSAGE_RECEIVED = "message_received"
    MESSAGE_STATUS = "message_status"
    CALL_REJECTED = "call_rejected"
    HANDLER_FAILED = "handler_failed"
    RECORDING_SAVED = "recording_saved"
    INCOMING_DECISION = "incoming_decision"
    TRANSFER = "transfer"
    TRANSPORT = "transport"
    MWI = "mwi"
    HOOK = "hook"
    DEFERRED_DIAL = "deferred_dial"


class CallStateName(enum.StrEnum):
    CALLING = "calling"
    INCOMING = "incoming"
    EARLY = "early"
    CONNECTING = "connecting"
    CONFIRMED = "confirmed"
    DISCONNECTED = "disconnected"


class RegState(enum.StrEnum):
    NONE = "none"  # the account has no registrar (local "call by IP" account)
    REGISTERING = "registering"
    REGISTERED = "registered"
    UNREGISTERED = "unregistered"
    FAILED = "failed"


class CallDirection(enum.StrEnum):
    IN = "in"  # the far end called us
    OUT = "out"  # we placed the call


class MediaStatus(enum.StrEnum):
    """A call's audio, as pjsua reports it."""

    NONE = "none"
    ACTIVE = "active"
    LOCAL_HOLD = "local_hold"
    REMOTE_HOLD = "remote_hold"
    ERROR = "error"


class DecisionAction(enum.StrEnum):
    """What the engine does with a new inbound call."""

    RING = "ring"  # 180 Ringing, wait for an answer command
    ANSWER = "answer"  # 200 OK (after the decision's delay)
    REJECT = "reject"  # the decision's code (486 Busy Here ...)
    FORWARD = "forward"  # 302 to the forwarding target


class HookOutcome(enum.StrEnum):
    OK = "ok"  # exit code 0
    FAILED = "failed"  # non-zero exit, or killed because the engine is stopping
    TIMEOUT = "timeout"  # killed after the hook timeout
    NOT_STARTED = "not_started"  # the program could not be started


class TransferRole(enum.StrEnum):
    TRANSFEROR = "transferor"  # we sent the REFER
    TRANSFEREE = "transferee"  # the far end asked us to call someone


class DeferredDialState(enum.StrEnum):
    WAITING = "waiting"
    PLACED = "placed"
    DROPPED = "dropped"


def _now() -> float:
    return time.time()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    """Base of all events; ``type`` names the kind, ``time`` is Unix time."""

    type: ClassVar[EventType]
    time: float = dataclasses.field(default_factory=_now)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": str(self.type)}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineStarted(Event):
    type: ClassVar[EventType] = EventType.ENGINE_STARTED
    sip_address: str
    accounts: tuple[str, ...]
    control: str
    max_calls: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineStopping(Event):
    type: ClassVar[EventType] = EventType.ENGINE_STOPPING
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class RegistrationChanged(Event):
    """An account's registration changed. ``retry_in`` is set after a failure."""

    type: ClassVar[EventType] = EventType.REGISTRATION
    account: int
    uri: str
    state: RegState
    code: int
    reason: str
    expires: int = 0
    retry_in: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class IncomingCall(Event):
    type: ClassVar[EventType] = EventType.INCOMING_CALL
    call: int
    sip_call_id: str
    account: int
    remote_uri: str
    remote_user: str
    display_name: str
    to_uri: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class CallState(Event):
    """A call's INVITE-session state; ``code``/``reason`` are the last SIP status."""

    type: ClassVar[EventType] = EventType.CALL_STATE
    call: int
    sip_call_id: str
    account: int
    direction: CallDirection
    state: CallStateName
    code: int
    reason: str
    remote_uri: str
    remote_user: str = ""
    display_name: str = ""
    duration: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class MediaState(Event):
    """Audio of a call became active, held or ended. ``direction`` is the SDP one."""

    type: ClassVar[EventType] = EventType.MEDIA_STATE
    call: int
    status: MediaStatus
    direction: str
    #: The negotiated audio codec, ``name/clock rate`` ("PCMU/8000", "opus/48000").
    codec: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DtmfReceived(Event):
    type: ClassVar[EventType] = EventType.DTMF_RECEIVED
    call: int
    digit: str
    method: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class MessageReceived(Event):
    type: ClassVar[EventType] = EventType.MESSAGE_RECEIVED
    account: int
    from_uri: str
    to_uri: str
    content_type: str
    body: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class MessageStatus(Event):
    type: ClassVar[EventType] = EventType.MESSAGE_STATUS
    account: int
    to_uri: str
    code: int
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class CallRejected(Event):
    """An inbound INVITE was refused before it became a call (e.g. over capacity)."""

    type: ClassVar[EventType] = EventType.CALL_REJECTED
    remote_uri: str
    sip_call_id: str
    code: int
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class HandlerFailed(Event):
    type: ClassVar[EventType] = EventType.HANDLER_FAILED
    handler: str
    failed_event: str
    error: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordingSaved(Event):
    """A call recording is closed and its WAV header final (``complete`` False if the
    header could not be confirmed in time)."""

    type: ClassVar[EventType] = EventType.RECORDING_SAVED
    call: int
    path: str
    bytes: int
    seconds: float
    complete: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class IncomingDecision(Event):
    """What the engine did with a new inbound call, and why (MicroSIP's order)."""

    type: ClassVar[EventType] = EventType.INCOMING_DECISION
    call: int
    action: DecisionAction
    code: int
    reason: str
    delay: float = 0.0
    target: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class HookRun(Event):
    """A ``cmd*`` hook ran (or failed to): ``outcome`` is ok, failed, timeout or not_started."""

    type: ClassVar[EventType] = EventType.HOOK
    hook: str
    call: int
    outcome: HookOutcome
    exit_code: int | None = None
    seconds: float = 0.0
    error: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransferProgress(Event):
    """A transfer's progress. ``role`` "transferor": our REFER's NOTIFYs (``code`` of
    the new call at the target; ``final`` when done). ``role`` "transferee": the far
    end asked us to call ``target``; ``new_call`` is the call we placed."""

    type: ClassVar[EventType] = EventType.TRANSFER
    call: int
    role: TransferRole
    code: int
    reason: str
    final: bool
    target: str = ""
    new_call: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class MessageWaiting(Event):
    """MWI (RFC 3842) for an account with ``voicemailNumber``."""

    type: ClassVar[EventType] = EventType.MWI
    account: int
    waiting: bool
    new: int
    old: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransportState(Event):
    """A connection-oriented transport (TCP/TLS) connected or failed. For TLS,
    ``verified`` says whether the peer's certificate passed verification and
    ``verify_errors`` why not."""

    type: ClassVar[EventType] = EventType.TRANSPORT
    kind: str
    remote: str
    state: str
    error: str
    verified: bool | None = None
    verify_errors: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeferredDial(Event):
    """A command-line dial waiting for REGISTER 200: ``waiting`` when deferred, then
    ``placed`` or ``dropped`` (its deadline passed, the registration failed, the
    account was switched away) with the ``reason``."""

    type: ClassVar[EventType] = EventType.DEFERRED_DIAL
    account: int
    target: str
    state: DeferredDialState
    reason: str = ""
