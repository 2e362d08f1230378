"""CallManager's components without pjsua2: the deferred dial on a fake clock with
timers the test fires, and the mute and volume steps on a fake mixer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from engine.config import AccountConfig, Config
from engine.deferred import DeferredDials
from engine.errors import EngineError
from engine.events import (
    DeferredDial,
    DeferredDialState,
    Event,
    RegistrationChanged,
    RegState,
)
from engine.levels import AudioLevels
from engine.state import AccountSnapshot


class FakeTimer:
    def __init__(self, seconds: float, expire: Callable[[], None]) -> None:
        self.seconds = seconds
        self.fire = expire
        self.started = self.cancelled = False

    def start(self) -> None:
        self.started = True

    def cancel(self) -> None:
        self.cancelled = True


class FakeEngine:
    """The Dialer: account 1 has a registrar, account 0 has none."""

    running = True

    def __init__(self) -> None:
        self.reg = RegState.REGISTERING
        self.placed: list[tuple[str, int, tuple[str, ...]]] = []
        self.fail_dial = False

    def default_account(self) -> int:
        return 1

    def account_config(self, index: int) -> AccountConfig:
        return AccountConfig(index=index, server="pbx.example" if index else "")

    def accounts(self) -> list[AccountSnapshot]:
        return [AccountSnapshot(1, "sip:101@pbx.example", "sip:pbx", self.reg, 0, "", 0, "udp")]

    def target_uri(self, target: str, account: int) -> str:
        if not target:
            raise EngineError("invalid dial target", code="invalid_target")
        return f"sip:{target}@pbx.example"

    def dial_now(self, target: str, account: int, post_dial: tuple[str, ...]) -> Any:
        if self.fail_dial:
            raise EngineError("no route", code="sip_error")
        self.placed.append((target, account, post_dial))
        return None  # the dials only pass the call on


class Rig:
    def __init__(self) -> None:
        self.now = 1000.0
        self.engine = FakeEngine()
        self.events: list[Event] = []
        self.timers: list[FakeTimer] = []
        self.dials = DeferredDials(
            self.engine,
            self.events.append,
            threading.RLock(),
            clock=lambda: self.now,
            timer=self._timer,
        )

    def _timer(self, seconds: float, expire: Callable[[], None]) -> FakeTimer:
        self.timers.append(FakeTimer(seconds, expire))
        return self.timers[-1]

    def registration(self, state: RegState, code: int = 200) -> None:
        self.engine.reg = state
        self.dials.on_event(
            RegistrationChanged(
                account=1, uri="sip:101@pbx.example", state=state, code=code, reason="x"
            )
        )

    def states(self) -> list[tuple[str, str]]:
        return [(str(e.state), e.reason) for e in self.events if isinstance(e, DeferredDial)]


def test_an_account_without_registrar_or_registered_dials_at_once() -> None:
    rig = Rig()
    rig.dials.dial_when_registered("200", 0)
    rig.engine.reg = RegState.REGISTERED
    rig.dials.dial_when_registered("201", None, ("1",))
    assert rig.engine.placed == [("200", 0, ()), ("201", 1, ("1",))]
    assert rig.events == [] and rig.timers == []


def test_a_deferred_dial_waits_for_register_200_then_is_placed_once() -> None:
    rig = Rig()
    assert rig.dials.dial_when_registered("5551234", post_dial=("45", "", "6")) is None
    assert rig.states() == [(DeferredDialState.WAITING, "")]
    assert rig.timers[0].started and rig.timers[0].seconds == 120.0
    rig.registration(RegState.REGISTERED)
    rig.registration(RegState.REGISTERED)  # a refresh: nothing left to place
    assert rig.engine.placed == [("5551234", 1, ("45", "", "6"))]
    assert rig.states()[1:] == [(DeferredDialState.PLACED, "")]


def test_a_deferred_dial_expires_on_its_deadline_without_any_event() -> None:
    rig = Rig()
    rig.dials.ttl = 2.0
    rig.dials.dial_when_registered("5551234")
    rig.now += 1.0
    rig.timers[0].fire()  # early: nothing is due yet
    assert len(rig.states()) == 1
    rig.now += 1.0
    rig.timers[0].fire()
    rig.registration(RegState.REGISTERED)
    assert rig.engine.placed == []
    assert rig.states()[1:] == [(DeferredDialState.DROPPED, "not registered within 2 s")]


def test_a_failed_registration_or_dial_drops_the_waiting_dial() -> None:
    rig = Rig()
    rig.dials.dial_when_registered("1")
    rig.registration(RegState.FAILED, 403)
    rig.engine.reg = RegState.REGISTERING
    rig.dials.dial_when_registered("2")
    rig.engine.fail_dial = True
    rig.registration(RegState.REGISTERED)
    dropped = [r for s, r in rig.states() if s == DeferredDialState.DROPPED]
    assert dropped == ["registration failed (403 x)", "dial failed: no route"]


def test_no_dial_is_deferred_after_a_failed_registration_nor_for_a_bad_target() -> None:
    rig = Rig()
    rig.engine.reg = RegState.FAILED
    with pytest.raises(EngineError) as failed:
        rig.dials.dial_when_registered("1")
    assert failed.value.code == "not_registered"
    with pytest.raises(EngineError):
        rig.dials.dial_when_registered("")
    assert rig.events == []


def test_an_account_switch_drops_its_dials_and_stop_cancels_the_timers() -> None:
    rig = Rig()
    rig.dials.dial_when_registered("1")
    rig.dials.drop(1, "switched to account 2")
    rig.dials.cancel_timers()
    assert rig.states()[1:] == [(DeferredDialState.DROPPED, "switched to account 2")]
    assert rig.timers[0].cancelled and rig.dials.timers == []


class Holder:
    def __init__(self, config: Config) -> None:
        self.config = config


def test_mute_toggles_and_volume_steps_of_ten_are_saved_as_microsip_saves_them(
    tmp_path: Any,
) -> None:
    from engine.config import load_config

    ini = tmp_path / "microsip.ini"
    ini.write_text("[Settings]\nvolumeInput=50\n", encoding="utf-8")
    holder = Holder(load_config(ini))
    mixer: dict[str, Any] = {"mic_muted": False, "mic_volume": 50, "speaker_volume": 100}

    def set_levels(**changes: Any) -> dict[str, Any]:
        mixer.update(changes)
        return dict(mixer)

    levels = AudioLevels(
        holder, threading.RLock(), set_levels=set_levels, state=lambda: dict(mixer)
    )
    assert levels.toggle_mute("mic")["mic_muted"] is True
    assert levels.step("mic", -2)["mic_volume"] == 30
    assert holder.config.settings.volume_input == 30
    assert "volumeInput=30" in ini.read_text(encoding="utf-8")
