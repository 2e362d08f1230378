"""Issue 10, item 7: events say each thing once and in full."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from enginekit import Engines, engines_fixture
from peers.baresip import BaresipFactory

from engine.errors import SipError
from engine.manager import CallManager

#: pjlib/include/pj/errno.h: ``PJ_EINVALIDOP`` = ``PJ_ERRNO_START_STATUS + 13``.
PJ_EINVALIDOP = 70013

pytestmark = pytest.mark.peers


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def hold_when_idle(manager: CallManager, call: int, hold: bool, timeout: float = 5.0) -> None:
    """Hold or resume, retrying while another offer/answer (pjsua's own codec-narrowing
    UPDATE, the previous re-INVITE) is still in flight: PJ_EINVALIDOP then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            manager.hold(call, hold)
            return
        except SipError as exc:
            if exc.status != PJ_EINVALIDOP or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_media_state_is_published_once_per_change(
    engines: Engines, baresip_factory: BaresipFactory
) -> None:
    """baresip answers with PCMU and PCMA, so pjsua narrows the codec with an UPDATE
    and reports the (unchanged) stream again: one ``media_state`` per real change —
    active, held, active — and every ``media_state`` differs from the one before."""
    bob = baresip_factory("bob")
    manager, events = engines.start()
    call = manager.dial(bob.add_local_account("bob")).call
    events.wait_for("media_state", timeout=10, call=call, status="active")
    bob.wait_call_event("CALL_ESTABLISHED", 5)
    hold_when_idle(manager, call, True)
    held = events.wait_for("media_state", timeout=5, call=call, status="local_hold")
    hold_when_idle(manager, call, False)
    events.wait(
        lambda e: (
            e["event"] == "media_state" and e["status"] == "active" and e["time"] > held["time"]
        ),
        5,
        "active again",
    )
    manager.hangup(call)
    events.wait_for("call_state", timeout=5, call=call, state="disconnected")
    seen = [(e["status"], e["direction"]) for e in events.of("media_state", call=call)]
    assert seen[:3] == [
        ("active", "sendrecv"),
        ("local_hold", "sendonly"),
        ("active", "sendrecv"),
    ], seen
    assert all(a != b for a, b in itertools.pairwise(seen)), seen


def test_every_event_type_is_documented_with_its_fields() -> None:
    """docs/control-protocol.md has a row for every event type naming all its fields."""
    import dataclasses

    from engine import events as ev

    doc = (Path(__file__).parents[2] / "docs" / "control-protocol.md").read_text()
    doc = doc.split("\n## Events\n", 1)[1].split("\n## ", 1)[0]  # that section only
    rows = {
        line.split("|")[1].strip().strip("`"): line
        for line in doc.splitlines()
        if line.startswith("| `")
    }
    classes = [
        c
        for c in vars(ev).values()
        if isinstance(c, type) and issubclass(c, ev.Event) and c is not ev.Event
    ]
    assert {str(c.type) for c in classes} == {str(t) for t in ev.EventType}
    for cls in classes:
        row = rows.get(str(cls.type))
        assert row is not None, f"no row for {cls.type} in docs/control-protocol.md"
        for field in dataclasses.fields(cls):
            if field.name != "time":
                assert f"`{field.name}`" in row, f"{cls.type}: field {field.name} undocumented"
