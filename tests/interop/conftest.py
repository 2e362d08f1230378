"""Fixtures for the Asterisk interop suite (marker ``asterisk``).

One Asterisk per test session, started through ``scripts/asterisk up`` on
OS-chosen loopback ports and stopped with ``down`` whatever happens. Under
``CI=true`` an Asterisk that cannot be started is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator, Iterator

import pytest
from asterisk import Asterisk, require_asterisk

_LOG_FROM = pytest.StashKey[tuple[Asterisk, int]]()
#: "scripts/asterisk up" wall times of this session, for the terminal summary.
_UP_TIMES: list[float] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's report carries what Asterisk logged during the test."""
    report = yield
    if report.failed and report.when in {"setup", "call"} and _LOG_FROM in item.stash:
        server, mark = item.stash[_LOG_FROM]
        report.sections.append(("asterisk log", server.log_since(mark)[-8000:]))
    return report


@pytest.fixture(scope="session")
def asterisk_server() -> Iterator[Asterisk]:
    """The session's Asterisk (users alice, bob, carol; see interop/asterisk/README.md)."""
    require_asterisk()
    server = Asterisk(f"pytest-{os.getpid()}")
    try:
        _UP_TIMES.append(server.up().up_seconds)
        yield server
    finally:
        server.down()
        # Its state (config copy, keys, logs, spool) lives in the cached rootfs.
        shutil.rmtree(server.state, ignore_errors=True)


@pytest.fixture
def asterisk(request: pytest.FixtureRequest, asterisk_server: Asterisk) -> Asterisk:
    """The session's Asterisk, running (started again if a test stopped it), holding
    no contact: each test starts from no registration, whatever the last one left."""
    if asterisk_server.pid() is None:
        _UP_TIMES.append(asterisk_server.up().up_seconds)
    asterisk_server.forget_contacts()
    request.node.stash[_LOG_FROM] = (asterisk_server, asterisk_server.log_mark())
    return asterisk_server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How long Asterisk took to come up (the first time includes building the
    root file system when it was not cached)."""
    if _UP_TIMES:
        times = ", ".join(f"{t:.1f}" for t in _UP_TIMES)
        terminalreporter.write_line(f"asterisk: scripts/asterisk up took {times} s")
