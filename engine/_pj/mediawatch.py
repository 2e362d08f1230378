"""The media-inactivity timeout (``[Engine] mediaTimeout``): a call whose far end has
stopped sending RTP is ended with BYE, as a far end that crashed or lost its network
never sends one. pjsua has no such timeout of its own.

Runs on the SIP thread, one check per answered call and second. Only an active,
receiving stream counts: on hold (either side) or with a ``sendonly``/``inactive``
stream the far end is not expected to send, and the silence clock starts afresh
when the stream comes back.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

import pjsua2 as pj
import structlog

from ..events import CallStateName

if TYPE_CHECKING:
    from .call import PjCall
    from .stack import PjStack

log = structlog.get_logger("engine.call")

#: Seconds between two looks at a call's receive counter.
CHECK_EVERY = 1.0
#: The SIP status the ``disconnected`` event and the history carry for a media timeout
#: (no final response exists for it; 408 is what a timed-out peer earns in SIP).
TIMEOUT_CODE = 408


def received_packets(call: PjCall) -> int | None:
    """RTP packets received so far on the call's receiving audio stream, or None when
    none is expected now (no stream, on hold, or a stream we only send on)."""
    if call.media_status != "active" or call.media_dir not in ("sendrecv", "recvonly"):
        return None
    ci = call.getInfo()  # bind first: iterating a temporary reads freed memory
    media = ci.media
    for index in range(len(media)):
        if media[index].type == pj.PJMEDIA_TYPE_AUDIO:
            try:
                stat = call.getStreamStat(index)
            except pj.Error:
                return None
            return int(stat.rtcp.rxStat.pkt)
    return None


def start(stack: PjStack, call: PjCall, timeout: float) -> None:
    """Watch ``call`` (just answered): end it after ``timeout`` s without RTP."""
    call.rx_packets, call.rx_at = -1, time.monotonic()
    stack.schedule(CHECK_EVERY, functools.partial(check, stack, call.number, timeout))


def check(stack: PjStack, number: int, timeout: float) -> None:
    call = stack.calls.get(number)
    if call is None or call.state is not CallStateName.CONFIRMED:
        return
    now = time.monotonic()
    packets = received_packets(call)
    if packets is None or packets != call.rx_packets:
        call.rx_packets, call.rx_at = (-1 if packets is None else packets), now
    silent = now - call.rx_at
    if silent < timeout:
        stack.schedule(CHECK_EVERY, functools.partial(check, stack, number, timeout))
        return
    reason = f"media timeout: the far end sent no media for {silent:.0f} s"
    log.warning("media_timeout", call=number, seconds=round(silent, 1), detail=reason)
    call.end_reason = (TIMEOUT_CODE, reason)
    prm = pj.CallOpParam()
    hdr = pj.SipHeader()  # RFC 3326: tell the far end (if it is still there) why
    hdr.hName, hdr.hValue = "Reason", 'SIP;cause=408;text="media timeout"'
    prm.txOption.headers.append(hdr)
    call.hangup(prm)
