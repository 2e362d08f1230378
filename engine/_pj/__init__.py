"""The engine's private pjsua2 layer: the only code that imports ``pjsua2``.

It owns every pjsua2 object on one dedicated thread, guards the calls the wheel
would abort the interpreter on, turns callbacks into :mod:`engine.events`, and
tears down in the order pjsua2 needs. Swap in another pjsua2 build by installing
it in place of the wheel: nothing outside this package depends on which one runs.
"""

from .snapshot import take_snapshot
from .stack import PjStack, StackSettings
from .transports import TransportInfo

__all__ = ["PjStack", "StackSettings", "TransportInfo", "take_snapshot"]
