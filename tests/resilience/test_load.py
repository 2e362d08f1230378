"""Load: an INVITE storm against the 4-call wheel, and a soak of sequential calls.

The engine runs as ``microsip-engine serve`` in a child process, so its memory,
threads and file descriptors are measured from ``/proc`` exactly as an operator
would see them. Each figure is printed (``-s``) for the README.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from buildkit import EXPECTED
from enginekit import BASE_INI, ServeProcess
from peers import SippFactory

pytestmark = pytest.mark.peers

STORM_CALLS, STORM_RATE = 300, 30
SOAK_CALLS, SOAK_RATE = 1000, 20
MB = 1024 * 1024


def rss(pid: int) -> int:
    """Resident set size in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def serve(tmp: Path, settings: str = "", engine: str = "") -> ServeProcess:
    ini = BASE_INI.replace("[Settings]\n", "[Settings]\n" + settings)
    return ServeProcess(tmp, ini + f"[Engine]\nhistoryPath={tmp / 'history.sqlite3'}\n{engine}")


def storm(engine: ServeProcess, sipp_factory: SippFactory, calls: int, rate: float) -> Any:
    """``calls`` INVITEs at ``rate``/s against a ringing engine: the first ones fill the
    wheel's call slots and ring, every other one must get 486 at once. Then the test
    refuses the ringing ones (486 too) and SIPp ends: the result, and the peak."""
    client = engine.client()
    try:
        capacity = client.request("status")["capacity"]["max_calls"]
        run = sipp_factory.uac(
            f"sip:storm@127.0.0.1:{engine.sip_port()}",
            "uac_answer_or_busy",
            calls=calls,
            rate=rate,
            timeout_s=calls / rate + 60,
        )
        wait_until(
            lambda: run.result().received("486") >= calls - capacity,
            calls / rate + 30,
            f"{calls - capacity} calls refused with 486",
        )
        ringing = client.request("status")["calls"]
        assert len(ringing) == capacity, ringing
        assert {c["state"] for c in ringing} == {"early"}, ringing  # 180 sent
        for call in ringing:
            client.request("hangup", call=call["call"], code=486)
        result = run.wait(60)
    finally:
        client.close()
    assert engine.proc.poll() is None, engine.log_path.read_text()[-3000:]
    assert (result.successful, result.failed) == (calls, 0), result
    assert result.received("486") == calls and result.received("200") == 0, result
    return result


def test_an_invite_storm_beyond_capacity_gets_486_and_no_crash(
    tmp_path: Path, sipp_factory: SippFactory
) -> None:
    """300 INVITEs with SDP at 30/s against 4 call slots (the wheel's; ``maxCalls=4``
    gives the source build the same; default settings: the engine rings): 296 refused
    with 486 by capacity, 0 crashes, and once the storm is over the engine's memory is
    back within 2 MB of where it was before it."""
    engine = serve(tmp_path, engine="maxCalls=4\n")
    pid = engine.proc.pid
    try:
        # What the first calls load once (SQLite for the history, call and media
        # code) is not growth: a small storm first, then the baseline.
        storm(engine, sipp_factory, 20, STORM_RATE)
        before, started = rss(pid), time.monotonic()
        storm(engine, sipp_factory, STORM_CALLS, STORM_RATE)
        took = time.monotonic() - started
        peak = rss(pid)
        # pjsip keeps refused INVITE transactions a few seconds (timer I), then frees.
        wait_until(lambda: rss(pid) - before < 2 * MB, 40, "RSS back within 2 MB")
        settled = rss(pid)
        print(
            f"\nstorm: {STORM_CALLS} INVITEs at {STORM_RATE}/s in {took:.1f} s, RSS "
            f"{before / MB:.1f} MB before, {peak / MB:.1f} MB at the end, {settled / MB:.1f} MB "
            f"settled ({(settled - before) / MB:+.2f} MB)"
        )
        assert engine.client().request("status")["calls"] == []
    finally:
        code = engine.stop()
    assert code == 0, engine.log_path.read_text()[-3000:]


def test_a_soak_of_sequential_calls_leaks_no_memory_threads_or_fds(
    tmp_path: Path, sipp_factory: SippFactory
) -> None:
    """1 000 answered calls one after another (INVITE, 200, ACK, RTP, BYE) at 20/s,
    the engine auto-answering: RSS back within 2 MB, no thread or descriptor left.

    pjsip keeps each ended call's BYE transaction (and its dialog) 32 s (timer J):
    RSS climbs ~25 KB a call up to rate x 32 s calls' worth, then pjsip frees it
    and the engine trims the heap once idle. So the check waits for that, with a
    hard bound, and prints the peak too."""
    engine = serve(tmp_path, "autoAnswer=all\n")
    pid, port = engine.proc.pid, engine.sip_port()

    def calls(n: int) -> Any:
        run = sipp_factory.uac(
            f"sip:soak@127.0.0.1:{port}",
            "uac_answer_or_busy",
            calls=n,
            rate=SOAK_RATE,
            concurrent=1,
            hold_ms=0,
            timeout_s=n / 5 + 30,
        )
        result = run.wait(n / 5 + 40)
        assert (result.successful, result.failed) == (n, 0), result
        return result

    client = engine.client()
    try:
        calls(20)  # what the first calls load once is not growth (see the storm test)
        wait_until(lambda: client.request("status")["calls"] == [], 10, "no call left")
        before = (rss(pid), threads(pid), fds(pid))
        started = time.monotonic()
        calls(SOAK_CALLS)
        took = time.monotonic() - started
        peak = rss(pid)
        wait_until(lambda: client.request("status")["calls"] == [], 10, "no call left")
        wait_until(lambda: (threads(pid), fds(pid)) == before[1:], 10, "threads and fds back")
        wait_until(lambda: rss(pid) - before[0] < 2 * MB, 60, "RSS back within 2 MB")
        back = time.monotonic() - started - took
        after = (rss(pid), threads(pid), fds(pid))
        print(
            f"\nsoak: {SOAK_CALLS} calls in {took:.1f} s ({SOAK_CALLS / took:.0f}/s); RSS "
            f"{before[0] / MB:.1f} MB before, {peak / MB:.1f} MB at the end, "
            f"{after[0] / MB:.1f} MB {back:.0f} s later ({(after[0] - before[0]) / MB:+.2f} MB); "
            f"threads {before[1]} -> {after[1]}, fds {before[2]} -> {after[2]}"
        )
    finally:
        client.close()
        code = engine.stop()
    assert code == 0, engine.log_path.read_text()[-3000:]


def test_calls_back_to_back_as_fast_as_sipp_can(tmp_path: Path, sipp_factory: SippFactory) -> None:
    """300 answered calls one after another with no pause (SIPp ``-l 1``, rate
    unbounded): the engine must keep up, or refuse, never abort.

    Before issue 14's start throttle the engine aborted after ~50 calls
    (``pj_ioqueue_register_sock2``: each call's RTP/RTCP sockets keep their ioqueue
    slots 500 ms after it ends, and the wheel's ioqueue has 64)."""
    engine = serve(tmp_path, "autoAnswer=all\n")
    try:
        run = sipp_factory.uac(
            f"sip:fast@127.0.0.1:{engine.sip_port()}",
            "uac_answer_or_busy",
            calls=300,
            rate=1000,
            concurrent=1,
            hold_ms=0,
            timeout_s=40,
        )
        result = run.wait(50)
        assert engine.proc.poll() is None, engine.log_path.read_text()[-3000:]
        if result.failed and EXPECTED.build == "source":
            # Open finding (issue 14): on the source build's 64 slots one call in 300
            # failed once (2026-12-06); the engine stayed up. Reported, not hidden.
            pytest.xfail(f"known on the source build, issue 14: {result}")
        assert (result.successful, result.failed) == (300, 0), result
    finally:
        code = engine.stop()
    assert code == 0, engine.log_path.read_text()[-3000:]
