"""One consistent picture of the stack, taken in one trip to the SIP thread.

``status`` used to be able to disagree with itself when its parts were read in
separate trips: a call ending between two of them left ``capacity.calls`` and
``calls`` counting different things. Everything here is read by one function run
on the SIP thread, the only thread that changes any of it, so the picture is of
one instant. One trip is also cheaper: under many concurrent clients each trip
waits for the GIL (measured in ``scripts/bench.py``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..state import AccountSnapshot, CallSnapshot, Limits
    from .stack import PjStack
    from .transports import TransportInfo


@dataclasses.dataclass(frozen=True)
class StackSnapshot:
    """What the stack holds at :attr:`taken_at` (``time.time()``)."""

    taken_at: float
    transports: tuple[TransportInfo, ...]
    accounts: tuple[AccountSnapshot, ...]
    calls: tuple[CallSnapshot, ...]
    #: The mixer's levels: ``mic_muted``, ``speaker_muted``, ``mic_volume``, ``speaker_volume``.
    audio: dict[str, int | bool]
    #: The build's limits, ``tls_max`` measured (it is probed on first use).
    limits: Limits


def take_snapshot(stack: PjStack) -> StackSnapshot:
    """Read the stack's state; run it on the SIP thread (``stack.run(take_snapshot, stack)``)."""
    stack.tls_max()  # fills limits.tls_max the first time
    assert stack.limits is not None
    return StackSnapshot(
        taken_at=time.time(),
        transports=tuple(stack.transport_list()),
        accounts=tuple(stack.account_list()),
        calls=tuple(stack.call_list()),
        audio=stack.mixer.state(),
        limits=stack.limits,
    )
