"""Hooks and call history against real calls, one test per way a call can go.

For each outcome the SIP code is the one on the wire (SIPp's own count), the hooks
that MicroSIP fires for it ran, in order, with the remote user (P-Asserted-Identity
first) as their last argument and the call's details in their environment, and the
call history has exactly one row with the right type and SIP code.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from enginekit import BASE_INI, Engines, EventLog, engines_fixture, sip_port
from peers.sipp import SippFactory

from engine.history import TYPE_IN, TYPE_MISSED, TYPE_OUT, read_history

pytestmark = pytest.mark.peers

HOOKS = (
    "cmdOutgoingCall",
    "cmdIncomingCall",
    "cmdCallRing",
    "cmdCallAnswer",
    "cmdCallAnswerVideo",
    "cmdCallBusy",
    "cmdCallStart",
    "cmdCallEnd",
)
SCRIPT = """#!/bin/sh
{{ echo "BEGIN"; for a in "$@"; do echo "ARG $a"; done
   env | grep '^MICROSIP_' | sort | sed 's/^/ENV /'; }} >> '{log}'
"""


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def start(engines: Engines, tmp_path: Path, settings: str = "") -> tuple[Any, EventLog, Path]:
    script = tmp_path / "hook.sh"
    script.write_text(SCRIPT.format(log=tmp_path / "hooks.log"))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    hooks = "".join(f"{h}={script} {h}\n" for h in HOOKS)
    db = tmp_path / "history.sqlite3"
    ini = BASE_INI.replace("[Settings]\n", "[Settings]\n" + hooks + settings)
    manager, events = engines.start(ini + f"[Engine]\nhistoryPath={db}\nhookTimeout=5\n")
    return manager, events, db


def runs(tmp_path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in (tmp_path / "hooks.log").read_text().splitlines():
        if line == "BEGIN":
            out.append({"args": [], "env": {}})
        elif line.startswith("ARG "):
            out[-1]["args"].append(line[4:])
        elif line.startswith("ENV "):
            key, _, value = line[4:].partition("=")
            out[-1]["env"][key] = value
    return out


def finished(events: EventLog, call: int, last_hook: str) -> list[dict[str, Any]]:
    """Wait for the call's last hook, then return the hooks that ran for it, in order."""
    events.wait_for("hook", hook=last_hook, call=call, timeout=10)
    done = events.of("hook", call=call)
    assert all(h["outcome"] == "ok" for h in done), done
    return done


def only_row(db: Path) -> dict[str, Any]:
    rows = read_history(db, 10)
    assert len(rows) == 1, rows
    return rows[0]


def test_inbound_answered_call_with_p_asserted_identity(
    engines: Engines, sipp_factory: SippFactory, tmp_path: Path
) -> None:
    manager, events, db = start(engines, tmp_path, "autoAnswer=all\n")
    pai = "P-Asserted-Identity: <sip:5551234@127.0.0.1>"
    sipp = sipp_factory.uac(
        f"sip:100@127.0.0.1:{sip_port(manager)}",
        "uac_policy",
        hold_ms=500,
        params={"headers": pai, "caller": "alice"},
    )
    result = sipp.wait(15)
    assert result.received("200", 0) == 1  # answered on the wire
    call = events.wait_for("incoming_call")["call"]
    hooks = finished(events, call, "cmdCallEnd")
    assert [h["hook"] for h in hooks] == [
        "cmdIncomingCall",
        "cmdCallAnswer",
        "cmdCallStart",
        "cmdCallEnd",
    ]
    logged = runs(tmp_path)
    assert [r["args"][-1] for r in logged] == ["5551234"] * 4  # PAI's user, not From's
    assert {r["env"]["MICROSIP_DIRECTION"] for r in logged} == {"incoming"}
    assert logged[-1]["env"]["MICROSIP_SIP_CODE"] == "200"
    row = only_row(db)
    assert (row["type"], row["direction"], row["sip_code"]) == (TYPE_IN, "in", 200)


def test_inbound_missed_call(engines: Engines, sipp_factory: SippFactory, tmp_path: Path) -> None:
    manager, events, db = start(engines, tmp_path)
    sipp = sipp_factory.uac(
        f"sip:100@127.0.0.1:{sip_port(manager)}",
        "uac_cancel",
        hold_ms=500,
        params={"headers": "Subject: missed", "caller": "bob"},
    )
    result = sipp.wait(15)
    assert result.received("180") == 1 and result.received("487") == 1  # rang, cancelled
    call = events.wait_for("incoming_call")["call"]
    hooks = finished(events, call, "cmdCallEnd")
    assert [h["hook"] for h in hooks] == ["cmdIncomingCall", "cmdCallRing", "cmdCallEnd"]
    assert [r["args"][-1] for r in runs(tmp_path)] == ["bob"] * 3
    row = only_row(db)
    assert (row["type"], row["sip_code"], row["answer_time"]) == (TYPE_MISSED, 487, None)


def test_inbound_busy_call(engines: Engines, sipp_factory: SippFactory, tmp_path: Path) -> None:
    manager, events, db = start(engines, tmp_path, "denyIncoming=button\nDND=1\n")
    sipp = sipp_factory.uac(
        f"sip:100@127.0.0.1:{sip_port(manager)}",
        "uac_policy",
        hold_ms=300,
        params={"headers": "Subject: busy", "caller": "carol"},
    )
    assert sipp.wait(15).received("486") == 1
    call = events.wait_for("incoming_call")["call"]
    hooks = finished(events, call, "cmdCallBusy")
    assert [h["hook"] for h in hooks] == ["cmdIncomingCall", "cmdCallBusy"]
    assert runs(tmp_path)[-1]["env"]["MICROSIP_SIP_CODE"] == "486"
    row = only_row(db)
    assert (row["direction"], row["sip_code"]) == ("in", 486)


def test_outbound_answered_call(
    engines: Engines, sipp_factory: SippFactory, tmp_path: Path
) -> None:
    manager, events, db = start(engines, tmp_path)
    uas = sipp_factory.uas("uas_answer", bye_timeout_ms=10000)
    call = manager.dial(uas.uri("dave")).call
    events.wait_for("call_state", call=call, state="confirmed")
    time.sleep(0.5)  # a call that lasts a moment
    manager.hangup(call)
    assert uas.wait(15).received("BYE") == 1
    hooks = finished(events, call, "cmdCallEnd")
    assert [h["hook"] for h in hooks] == ["cmdOutgoingCall", "cmdCallStart", "cmdCallEnd"]
    logged = runs(tmp_path)
    assert [r["args"][-1] for r in logged] == ["dave"] * 3
    assert {r["env"]["MICROSIP_DIRECTION"] for r in logged} == {"outgoing"}
    row = only_row(db)
    assert (row["type"], row["direction"], row["sip_code"]) == (TYPE_OUT, "out", 200)
    # Ended at least the 0.5 s after the answer that the test waited; ``duration`` is
    # that span in whole seconds (MicroSIP's column), truncated.
    span = row["end_time"] - row["answer_time"]
    assert span >= 0.5, row
    assert -0.1 < span - row["duration"] < 1.1, row  # the two clocks differ by ms


def test_outbound_failed_call(engines: Engines, sipp_factory: SippFactory, tmp_path: Path) -> None:
    """The far end rings, then gives up with 480: Outgoing, then End (not Busy)."""
    manager, events, db = start(engines, tmp_path)
    uas = sipp_factory.uas("uas_ring", ring_timeout_ms=500)
    call = manager.dial(uas.uri("erin")).call
    ended = events.wait_for("call_state", call=call, state="disconnected", timeout=10)
    assert ended["code"] == 480
    assert uas.wait(15).sent("480") == 1
    hooks = finished(events, call, "cmdCallEnd")
    assert [h["hook"] for h in hooks] == ["cmdOutgoingCall", "cmdCallEnd"]
    assert runs(tmp_path)[-1]["env"]["MICROSIP_SIP_CODE"] == "480"
    row = only_row(db)
    assert (row["type"], row["sip_code"], row["answer_time"]) == (TYPE_OUT, 480, None)
