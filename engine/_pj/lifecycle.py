"""The stack's life on the SIP thread: start-up, the poll, shutdown, teardown.

:class:`StackLoop` is the :class:`~engine._pj.thread.LoopSide` the stack's
:class:`~engine._pj.thread.SipThread` runs. It holds the order pjsua2 needs in
one place: every object referenced as soon as it exists (a failed start is torn
down like a stop), calls and registrations ended before the library, sound
closed before its port, and no pjsua2 object referenced at ``libDestroy``.
"""

from __future__ import annotations

import contextlib
import gc
import time
from typing import TYPE_CHECKING

import pjsua2 as pj

from ..errors import EngineError
from .endpoint import SipEndpoint
from .guard import clear_last_exception
from .logwriter import StructlogWriter
from .resources import disown_survivors
from .startup import init_library, measure_limits, set_codec_priorities
from .transports import bind_transports

if TYPE_CHECKING:
    from .stack import PjStack

IDLE_POLL_MS = 250
BUSY_POLL_MS = 20
#: Seconds the shutdown waits for BYEs, un-REGISTERs and WAV headers.
GOODBYE_BUDGET = 1.5


class StackLoop:
    """Runs the stack on its thread (a LoopSide): the thread calls, the stack acts."""

    def __init__(self, stack: PjStack) -> None:
        self.stack = stack
        #: pjsua2 logs through it until libDestroy: referenced as long as the library.
        self._writer: StructlogWriter | None = None

    def start_up(self) -> None:
        st, s = self.stack, self.stack.settings
        ep = st.endpoint = SipEndpoint(st)
        self._writer = StructlogWriter()
        init_library(ep, s, st.build, self._writer)
        st.transports, st.thread.wake_addr = bind_transports(ep, s)
        st.account_table.transports = st.transports
        ep.libStart()
        set_codec_priorities(ep, s, st.build)
        st.media.open(ep, s.audio_input_device, s.audio_output_device)
        st.limits = measure_limits(ep, s, st.build, st.transports, self._writer)

    def poll_ms(self) -> int:
        st = self.stack
        if st.thread.wake_addr is None or st.calls or st.media.finalising:
            return BUSY_POLL_MS  # no wake-up channel, or something to watch closely
        return IDLE_POLL_MS

    def handle_events(self, ms: int) -> None:
        st = self.stack
        assert st.endpoint is not None
        pause = st.start_throttle.pause(time.monotonic())
        if pause > 0:  # too many calls started lately: read no SIP for now
            time.sleep(min(pause, ms / 1000))
            return
        st.endpoint.libHandleEvents(ms)

    def after_events(self) -> None:
        self.stack.call_table.drop_ended()  # ended calls go here, never inside their callbacks
        if self.stack.media.finalising:
            self.stack.media.check_recordings()

    # -- the end ---------------------------------------------------------------------

    def shut_down(self) -> None:
        st = self.stack
        assert st.endpoint is not None
        self._say_goodbye()
        deadline = time.monotonic() + GOODBYE_BUDGET
        while time.monotonic() < deadline and (
            st.calls or st.account_table.unregistering() or st.media.finalising
        ):
            st.endpoint.libHandleEvents(10)
            st.call_table.drop_ended()
            st.media.check_recordings()
        st.thread.fail_pending_commands()
        self.tear_down()

    def _say_goodbye(self) -> None:
        """BYE/CANCEL every call and un-REGISTER every account.

        A function of its own so that its loop variables (pjsua2 objects) are gone
        before ``libDestroy``: a Call still referenced then aborts the process.
        """
        for number in list(self.stack.calls):
            with contextlib.suppress(pj.Error, EngineError):
                self.stack.hangup(number)
        self.stack.account_table.unregister_all()

    def _release_all(self) -> None:
        """Drop our references to every pjsua2 object (see :meth:`_say_goodbye`)."""
        st = self.stack
        st.media.close()  # PortAudio stopped, then its port destroyed
        st.call_table.release_all()
        st.messenger.clear()
        st.account_table.disown_all()  # they live through libDestroy (see there)
        st.thread.clear_timers()

    def tear_down(self) -> None:
        """Drop every pjsua2 object, then the library (aborts if one survives)."""
        st = self.stack
        self._release_all()
        if st.media.finalising:
            st.media.check_recordings(force=True)
        clear_last_exception()
        gc.collect()
        disown_survivors()
        if st.endpoint is not None:
            with contextlib.suppress(pj.Error):
                st.endpoint.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)
            st.endpoint = None
        st.account_table.clear()
        self._writer = None
