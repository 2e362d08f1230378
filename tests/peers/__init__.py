"""Real SIP peers on loopback for the test suite: Kamailio, SIPp and baresip.

Each peer is a child process on OS-chosen ports of 127.0.0.1 with its logs in
the test's tmp dir; fixtures in ``tests/conftest.py`` start and stop them.
"""

from .baresip import Baresip, BaresipFactory, Recording
from .baresip_ctrl import CtrlResponse, Event, ReceivedMessage
from .kamailio import DEFAULT_USERS, Kamailio
from .probe import options_status
from .process import PeerError, PeerProcess, free_port, require, wait_until
from .sipp import SCENARIO_DIR, Sipp, SippFactory, SippResult

__all__ = [
    "DEFAULT_USERS",
    "SCENARIO_DIR",
    "Baresip",
    "BaresipFactory",
    "CtrlResponse",
    "Event",
    "Kamailio",
    "PeerError",
    "PeerProcess",
    "ReceivedMessage",
    "Recording",
    "Sipp",
    "SippFactory",
    "SippResult",
    "free_port",
    "options_status",
    "require",
    "wait_until",
]
