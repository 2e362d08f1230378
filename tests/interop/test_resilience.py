"""The engine when Asterisk goes away (issue 9): restarted, killed mid-call, or
refusing a wrong password. Asterisk's own state (``pjsip show contacts``, its log)
is the judge of what reached it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from asterisk import Asterisk
from engines import Serve, account_ini

pytestmark = pytest.mark.asterisk

#: How soon after Asterisk is back the engine must be registered again.
REREGISTER_S = 10.0


def reachable_within(asterisk: Asterisk, engine: Serve, deadline: float) -> bool:
    """Until ``deadline``: the engine says registered, Asterisk holds alice's contact,
    and a call Asterisk places to that contact reaches the engine (a contact left
    over from before the restart may point at a connection that is gone)."""
    while time.monotonic() < deadline:
        if engine.account()["state"] == "registered" and asterisk.contacts("alice"):
            mark = engine.mark()
            asterisk.originate("alice")
            try:
                left = max(0.5, min(3.0, deadline - time.monotonic()))
                call = engine.wait_new(mark, "incoming_call", timeout=left)["call"]
            except AssertionError:
                continue
            engine.request("hangup", call=call, code=486)
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_registered_again_after_asterisk_restarts(
    asterisk: Asterisk, tmp_path: Path, transport: str
) -> None:
    """Asterisk stops and starts again while the engine is registered: within 10 s of
    Asterisk being back the engine is registered *and reachable* (Asterisk's call to
    alice's contact rings the engine), so ``status`` cannot go on claiming
    "registered" for a contact that no longer works."""
    engine = Serve(tmp_path / "engine", account_ini(asterisk, "alice", transport=transport))
    try:
        engine.wait_registered()
        asterisk.wait_contacts("alice", present=True)
        asterisk.down()
        time.sleep(1.0)  # Asterisk stays away a moment, as a real restart would
        asterisk.up()
        back = time.monotonic()
        assert reachable_within(asterisk, engine, back + REREGISTER_S), (
            f"not registered and reachable {REREGISTER_S:g} s after Asterisk came back: "
            f"contacts {asterisk.contacts('alice')}, engine {engine.account()}"
        )
    finally:
        engine.stop()
        asterisk.reap()


def test_call_ends_when_asterisk_is_killed(asterisk: Asterisk, tmp_path: Path) -> None:
    """``kill -9`` of Asterisk during a call to the tone: no BYE will ever come, and
    the engine ends the call by itself within 30 s with a reason saying the far end
    stopped answering (no media / no response).

    The media timeout is set to 20 s: at the default 30 s the call ends 30 s after
    the last RTP packet plus up to a check interval, just past this 30 s bound."""
    ini = account_ini(asterisk, "alice", engine="mediaTimeout=20")
    engine = Serve(tmp_path / "engine", ini)
    try:
        engine.wait_registered()
        call = engine.dial("101")
        asterisk.kill9()
        killed = time.monotonic()
        ended = engine.wait_for("call_state", timeout=30, call=call, state="disconnected")
        assert time.monotonic() - killed <= 30
        reason = ended["reason"].lower()
        words = ("timeout", "timed out", "no media", "no rtp", "not answering", "stopped answering")
        assert any(w in reason for w in words), ended
    finally:
        engine.stop()
        asterisk.up()  # the next test's Asterisk


def wrong_password_engine(asterisk: Asterisk, tmp_path: Path) -> Serve:
    engine = Serve(tmp_path / "engine", account_ini(asterisk, "alice", password="wrong"))
    account = engine.wait_account(lambda a: a["code"] == 401, 15, "a 401")
    assert account["state"] != "registered", account
    return engine


def test_wrong_password_fails_with_401_without_hammering(
    asterisk: Asterisk, tmp_path: Path
) -> None:
    """A wrong password: ``status`` shows the registration failed with 401, and
    Asterisk sees no more than one REGISTER attempt per backoff step (the engine's
    ``registration_retry`` log lines)."""
    mark = asterisk.log_mark()
    engine = wrong_password_engine(asterisk, tmp_path)
    try:
        engine.wait_log(
            lambda e: e.get("event") == "registration_retry", 15, "a registration retry"
        )
        retries = [e for e in engine.log_entries() if e.get("event") == "registration_retry"]
        failures = asterisk.log_since(mark).count("Failed to authenticate")
        assert 1 <= failures <= len(retries) + 1, (failures, retries)
        assert asterisk.contacts("alice") == []
    finally:
        engine.stop()


def test_wrong_password_is_visible_at_the_default_log_level(
    asterisk: Asterisk, tmp_path: Path
) -> None:
    """A user running the engine as is (log level info) can see that the
    registration failed with 401, not only a generic authentication error."""
    engine = wrong_password_engine(asterisk, tmp_path)
    try:
        engine.wait_log(
            lambda e: (
                e.get("level") in {"info", "warning", "error"}
                and any("401" in str(e.get(k, "")) for k in ("event", "code", "msg", "reason"))
            ),
            10,
            "registration failure with 401 at the default log level",
        )
    finally:
        engine.stop()
