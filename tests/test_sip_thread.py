"""SipThread drives any LoopSide: commands, timers and the hook order, without pjsua2."""

from __future__ import annotations

import threading

import pytest

from engine._pj.thread import SipThread
from engine.errors import EngineStoppedError


class FakeSide:
    """A LoopSide that records what the thread asked of it, and on which thread."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.threads: set[str] = set()

    def _note(self, what: str) -> None:
        self.calls.append(what)
        self.threads.add(threading.current_thread().name)

    def start_up(self) -> None:
        self._note("start_up")

    def poll_ms(self) -> int:
        return 5  # no wake-up address: the loop polls briskly

    def handle_events(self, ms: int) -> None:
        threading.Event().wait(ms / 1000)

    def after_events(self) -> None:
        if "after_events" not in self.calls:
            self._note("after_events")

    def shut_down(self) -> None:
        self._note("shut_down")
        self.tear_down()

    def tear_down(self) -> None:
        self._note("tear_down")


def test_commands_and_timers_run_on_the_thread_in_order() -> None:
    side = FakeSide()
    thread = SipThread(side)
    thread.start_thread(5.0)
    try:
        assert thread.run(lambda a, b: a + b, 2, 3) == 5
        fired = threading.Event()
        thread.run(thread.schedule, 0.01, fired.set)
        assert fired.wait(2.0)
    finally:
        thread.stop()
    assert side.calls == ["start_up", "after_events", "shut_down", "tear_down"]
    assert side.threads == {"pjsua2"}
    with pytest.raises(EngineStoppedError):
        thread.run(lambda: None)


def test_a_failed_start_is_torn_down_and_raised() -> None:
    class Failing(FakeSide):
        def start_up(self) -> None:
            super().start_up()
            raise RuntimeError("no endpoint")

    side = Failing()
    with pytest.raises(RuntimeError, match="no endpoint"):
        SipThread(side).start_thread(5.0)
    assert side.calls == ["start_up", "tear_down"]
    # The one-engine-per-process lock was released: another start works.
    again = SipThread(FakeSide())
    again.start_thread(5.0)
    again.stop()
