"""Which pjsua2 build the suite runs on, and what that build must show.

``./scripts/test`` runs on the PyPI wheel; ``.ci/run`` runs the suite again on the
build of ``scripts/build-pjsua2`` (``PJSUA2_BUILD=source``). The figures are the
ones docs/pjsua2-builds.md documents; tests compare the engine's measurements to them.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Expected:
    """What the build under test must show (docs/pjsua2-builds.md)."""

    build: str
    max_calls: int
    max_accounts: int
    pjsip: str
    tls: str
    opus: bool
    aborts_on_misuse: bool


WHEEL = Expected("pypi-wheel", 4, 8, "2.15.1", "1.2", opus=False, aborts_on_misuse=True)
SOURCE = Expected("source", 64, 32, "2.17", "1.3", opus=True, aborts_on_misuse=False)


def _expected() -> Expected:
    """The build scripts/test selected; without it, the one installed here."""
    chosen = os.environ.get("PJSUA2_BUILD")
    if not chosen:
        chosen = "source" if importlib.util.find_spec("pjsua2_build") else "wheel"
    return SOURCE if chosen == "source" else WHEEL


EXPECTED = _expected()
