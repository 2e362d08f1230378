"""Safety of the inbound-call path: what PJSIP lets through and pjsua2 cannot survive.

Three facts of the pjsua2 wheel (the README's "SIP input safety" has the figures):

* A final response sent from inside ``Account.onIncomingCall`` to an INVITE without
  SDP ends the call at once; pjsua2 then frees the INVITE's copy a second time and
  the process aborts (``pjsip_rx_data_free_cloned: Assertion 'rdata'``). Every final
  response to a new call is therefore sent *after* the callback has returned.
* pjsua creates the RTP/RTCP sockets of an INVITE with SDP before the application
  hears of it, and a closed socket keeps its ioqueue slot for 500 ms (pjlib's safe
  unregistration); the media ioqueue has 64 slots. Rejecting calls as fast as they
  come exhausts it (``pj_ioqueue_register_sock2`` asserts). :class:`ReleaseGate`
  spaces out the calls the engine ends, and a call whose end is postponed keeps its
  pjsua slot, so that pjsua itself answers the excess 486 without creating media.
* PJSIP accepts an INVITE with duplicated single-value headers, or (over UDP) a
  body shorter than its Content-Length; RFC 3261 wants a 400 for those (RFC 4475
  tests both): :func:`check_invite` names the fault.
"""

from __future__ import annotations

import collections
import dataclasses

#: Calls that may start per :data:`START_WINDOW` seconds: at most 16 in any 500 ms,
#: 32 sockets waiting out pjlib's 500 ms, plus 8 of 4 live calls, well below the 64
#: slots. The window is short so that a pause never reaches a UDP caller's first
#: retransmission (T1, 500 ms): pjsua answers an INVITE statelessly (486) while its
#: call slots are full, so a retransmitted copy read after a slot came free would
#: become a new call that rings for a caller who has long had its 486.
START_BUDGET = 8
START_WINDOW = 0.3
#: Calls the engine may end per :data:`WINDOW`: fewer than may start, less the 4
#: pjsua slots, so that the engine's own refusals never make the SIP thread pause.
RELEASE_BUDGET = 10
WINDOW = 0.6

#: Headers RFC 3261 allows once in a request (long and compact forms).
_SINGLE = {
    "call-id": "Call-ID",
    "i": "Call-ID",
    "from": "From",
    "f": "From",
    "to": "To",
    "t": "To",
    "cseq": "CSeq",
    "max-forwards": "Max-Forwards",
    "content-length": "Content-Length",
    "l": "Content-Length",
    "content-type": "Content-Type",
    "c": "Content-Type",
}


@dataclasses.dataclass(frozen=True)
class Fault:
    """Why an INVITE is refused: the status code and its reason phrase."""

    code: int
    phrase: str


class ReleaseGate:
    """At most ``budget`` call ends in any ``window`` seconds; later ones wait."""

    def __init__(self, budget: int = RELEASE_BUDGET, window: float = WINDOW) -> None:
        self.budget = budget
        self.window = window
        self._slots: collections.deque[float] = collections.deque()

    def reserve(self, now: float) -> float:
        """Book the next free moment to end a call; returns the wait in seconds.

        Bookings never go backwards in time, so the ``budget``-th latest one tells
        when a window has room again."""
        while self._slots and self._slots[0] <= now - self.window:
            self._slots.popleft()
        at = now
        if len(self._slots) >= self.budget:
            at = max(now, self._slots[-self.budget] + self.window)
        self._slots.append(at)
        return at - now


class StartThrottle:
    """Calls started (each opens an RTP/RTCP socket pair) in the last ``window`` s.

    The calls a caller ends (CANCEL, BYE) close their sockets whenever the caller
    likes; only the pace at which calls start bounds those. Over ``budget``, the SIP
    thread stops reading SIP until the window has room again: the INVITEs wait in
    the socket (UDP retransmits the ones the kernel drops)."""

    def __init__(self, budget: int = START_BUDGET, window: float = START_WINDOW) -> None:
        self.budget = budget
        self.window = window
        self._starts: collections.deque[float] = collections.deque()

    def started(self, now: float) -> None:
        self._starts.append(now)

    def pause(self, now: float) -> float:
        """Seconds to wait before reading SIP again (0: go on)."""
        while self._starts and self._starts[0] <= now - self.window:
            self._starts.popleft()
        if len(self._starts) < self.budget:
            return 0.0
        return max(0.0, self._starts[-self.budget] + self.window - now)


def _split(whole: str) -> tuple[list[tuple[str, str]], str]:
    """Unfolded headers (lower-case name, value) and the body, as received."""
    head, sep, body = whole.partition("\r\n\r\n")
    if not sep:
        head, _, body = whole.partition("\n\n")
    lines = head.replace("\r\n", "\n").split("\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
        elif ":" in line:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
    return headers, body


def check_invite(whole: str) -> Fault | None:
    """The RFC 3261 faults of an INVITE that PJSIP accepted (None: nothing wrong).

    Only what reaches us: PJSIP itself drops a bad SIP version, an unknown URI
    scheme or a number-less CSeq, answers an unknown ``Require`` 420 and a CSeq
    method that does not match 500 (the README's RFC 4475 table)."""
    headers, body = _split(whole)
    seen = collections.Counter(_SINGLE[n] for n, _ in headers if n in _SINGLE)
    for name, count in seen.items():
        if count > 1:
            return Fault(400, f"Duplicate {name} header")
    # Over TCP/TLS PJSIP frames the body by its Content-Length: only a datagram
    # can carry less than it announces (RFC 3261 18.3: 400).
    via = next((v for n, v in headers if n in ("via", "v")), "")
    datagram = via.upper().replace(" ", "").startswith("SIP/2.0/UDP")
    length = next((v for n, v in headers if n in ("content-length", "l")), "").strip()
    if length.isdigit() and datagram and int(length) > _size(body):
        return Fault(400, "Content-Length larger than the body")
    return None


def _size(body: str) -> int:
    return len(body.encode("utf-8", "surrogateescape"))
