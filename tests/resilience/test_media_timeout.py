"""Issue 10, item 3: a call does not outlive its far end.

``[Engine] mediaTimeout`` (2 s here) ends an answered call whose far end stopped
sending RTP, with BYE and a reason the ``disconnected`` event and the history row
carry; a call on hold is not "without media". A hang-up of ours whose BYE the far
end answers 481 is not reported as ``200 OK``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from enginekit import BASE_INI, Engines, EventLog, engines_fixture
from peers.baresip import BaresipFactory
from peers.sipp import SippFactory

from engine.manager import CallManager

pytestmark = pytest.mark.peers

SCENARIOS = Path(__file__).with_name("scenarios")
TIMEOUT = 2
TIMEOUT_INI = BASE_INI + f"[Engine]\nmediaTimeout={TIMEOUT}\n"


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def talking(manager: CallManager, events: EventLog, target: str) -> int:
    """Dial ``target``; once audio flows, stay in the call longer than the timeout
    (the far end is sending: the call must survive that)."""
    call = manager.dial(target).call
    events.wait_for("media_state", timeout=10, call=call, status="active")
    time.sleep(TIMEOUT + 1.0)  # longer than the timeout, with media flowing
    assert manager.call_info(call).state == "confirmed"
    return call


def assert_ended_by_media_timeout(
    manager: CallManager, events: EventLog, call: int, killed_at: float
) -> None:
    ended = events.wait_for("call_state", timeout=TIMEOUT + 8, call=call, state="disconnected")
    assert ended["code"] == 408 and "media timeout" in ended["reason"], ended
    assert ended["time"] - killed_at >= TIMEOUT - 0.5, "ended before the far end fell silent"
    (row,) = [r for r in manager.history.rows() if r["callId"] == ended["sip_call_id"]]
    assert (row["sip_code"], row["sip_reason"]) == (408, ended["reason"]), row
    assert "media timeout" in row["info"]


def test_sipp_killed_mid_call_is_ended_by_the_media_timeout(
    engines: Engines, sipp_factory: SippFactory
) -> None:
    manager, events = engines.start(TIMEOUT_INI)
    sipp = sipp_factory.uas("uas_answer", bye_timeout_ms=30000, timeout_s=40)
    call = talking(manager, events, sipp.uri("pbx"))
    assert sipp.process is not None
    sipp.process.send_signal(signal.SIGKILL)
    assert_ended_by_media_timeout(manager, events, call, time.time())


def test_baresip_killed_mid_call_is_ended_by_the_media_timeout(
    engines: Engines, baresip_factory: BaresipFactory
) -> None:
    bob = baresip_factory("bob")
    aor = bob.add_local_account("bob")
    manager, events = engines.start(TIMEOUT_INI)
    call = talking(manager, events, aor)
    assert bob.process is not None
    bob.process.kill()
    assert_ended_by_media_timeout(manager, events, call, time.time())


def test_a_held_call_is_not_ended_by_the_media_timeout(
    engines: Engines, baresip_factory: BaresipFactory
) -> None:
    """baresip stops sending while we hold it (it answers ``recvonly``): three
    timeouts on hold leave the call up; resumed, it ends only when we hang up."""
    bob = baresip_factory("bob")
    aor = bob.add_local_account("bob")
    manager, events = engines.start(TIMEOUT_INI)
    call = talking(manager, events, aor)
    assert manager.hold(call, True) is True
    events.wait_for("media_state", timeout=5, call=call, status="local_hold")
    time.sleep(3 * TIMEOUT)  # held far longer than the timeout
    assert manager.call_info(call).state == "confirmed"
    assert manager.hold(call, False) is False
    time.sleep(TIMEOUT + 1.0)  # resumed: media flows again
    assert manager.call_info(call).state == "confirmed"
    manager.hangup(call)
    ended = events.wait_for("call_state", timeout=5, call=call, state="disconnected")
    assert "media timeout" not in ended["reason"]


def test_our_hang_up_answered_481_is_not_reported_as_200_ok(
    engines: Engines, sipp_factory: SippFactory
) -> None:
    """pjsua ends the call as its BYE leaves and reports a ``200 OK`` nobody sent; the
    far end's 481 comes later. The event says we hung up, not that it said OK (the
    code stays the INVITE's 200: the call was answered)."""
    manager, events = engines.start()
    sipp = sipp_factory.uas(SCENARIOS / "uas_bye_481.xml", bye_timeout_ms=15000)
    call = manager.dial(sipp.uri("pbx")).call
    events.wait_for("call_state", timeout=10, call=call, state="confirmed")
    manager.hangup(call)
    ended: dict[str, Any] = events.wait_for("call_state", call=call, state="disconnected")
    assert (ended["code"], ended["reason"]) == (200, "hung up locally"), ended
    result = sipp.wait(15)
    assert result.failed == 0, result
