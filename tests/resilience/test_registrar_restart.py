"""Issue 10, item 2: the registrar (Kamailio, registrations in memory) restarts.

Over TCP the engine sees its connection drop: it must re-REGISTER by itself within
10 s of the registrar being back, and ``status`` must not say "registered" while
the registrar has no contact. Over UDP nothing tells the engine: the refresh
(``registerRefresh=10``, the minimum) brings the contact back within 10 s.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from enginekit import Engines, EventLog, engines_fixture
from peers import require
from peers.kamailio import Kamailio
from peers.sipp import SippFactory

from engine.manager import CallManager

from .kit import registrar_ini, self_signed

pytestmark = pytest.mark.peers

#: The issue's bound: registered again this long after the registrar is back.
BACK_WITHIN = 10.0


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def account_state(manager: CallManager) -> dict[str, Any]:
    (acc,) = [a for a in manager.status()["accounts"] if a["account"] == 1]
    return dict(acc)


def wait_registered_after(events: EventLog, since: float, timeout: float) -> dict[str, Any]:
    return events.wait(
        lambda e: e["event"] == "registration" and e["state"] == "registered" and e["time"] > since,
        timeout,
        "registered again",
    )


@pytest.fixture
def kamailio_tls(tmp_path: Path) -> Iterator[Kamailio]:
    """Kamailio with a TLS listener too (its tls module is kamailio-tls-modules)."""
    kamailio = require("kamailio")
    if not glob.glob("/usr/lib/*/kamailio/modules/tls.so"):
        message = "Kamailio's tls module missing: apt-get install -y kamailio-tls-modules"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    cert_key = self_signed(tmp_path / "tls", require("openssl"))
    instance = Kamailio(
        tmp_path / "kamailio-tls", tls=cert_key, kamailio=kamailio, kamcmd=require("kamcmd")
    )
    try:
        yield instance.start()
    finally:
        instance.stop()


@pytest.mark.parametrize("down_for", [0.0, 3.0])
def test_tcp_registrar_restart_re_registers_and_status_is_truthful(
    kamailio: Kamailio, engines: Engines, down_for: float
) -> None:
    """Kamailio restarted (at once, or after 3 s down) under a TCP registration: the
    engine reports the lost connection, is registered again within 10 s of the
    registrar being back, and Kamailio holds its contact."""
    manager, events = engines.start(registrar_ini(kamailio, transport="tcp"))
    events.wait_for("registration", account=1, state="registered")
    kamailio.wait_registrations("alice", 1)

    kamailio.stop()
    lost = events.wait(
        lambda e: e["event"] == "registration" and e["state"] != "registered",
        5,
        "the registration to stop claiming 'registered'",
    )
    assert "connection lost" in lost["reason"], lost
    # The transport events name the registrar's end of the connection.
    tcp = [e for e in events.of("transport") if e["kind"] == "tcp"]
    assert [e["state"] for e in tcp[:2]] == ["connected", "disconnected"], tcp
    assert all(e["remote"] == kamailio.address for e in tcp[:2]), tcp
    assert account_state(manager)["state"] != "registered"
    if down_for:
        time.sleep(down_for)  # the outage being simulated
        assert account_state(manager)["state"] != "registered"
    kamailio.restart()
    back_at = time.time()
    ev = wait_registered_after(events, back_at - 0.5, BACK_WITHIN)
    assert ev["time"] - back_at < BACK_WITHIN
    assert kamailio.wait_registrations("alice", 1)
    assert account_state(manager)["state"] == "registered"


def test_tls_registrar_restart_re_registers(kamailio_tls: Kamailio, engines: Engines) -> None:
    """The same over TLS (TLS 1.2, Kamailio's certificate verified against our CA
    file): connection lost, registering, registered again within 10 s."""
    k = kamailio_tls
    assert k.tls is not None
    ini = registrar_ini(k, transport="tls").replace(
        f"server={k.address}", f"server=127.0.0.1:{k.tls_port}"
    )
    manager, events = engines.start(ini + f"[Engine]\ntlsCaFile={k.tls[0]}\n")
    events.wait_for("registration", account=1, state="registered")
    k.wait_registrations("alice", 1)
    k.stop()
    lost = events.wait(
        lambda e: e["event"] == "registration" and e["state"] != "registered", 5, "not registered"
    )
    assert "connection lost" in lost["reason"], lost
    assert account_state(manager)["state"] != "registered"
    k.restart()
    back_at = time.time()
    wait_registered_after(events, back_at - 0.5, BACK_WITHIN)
    assert k.wait_registrations("alice", 1)
    tls = [e for e in events.of("transport") if e["kind"].startswith("tls")]
    assert tls and all(e["remote"].startswith("127.0.0.1:") for e in tls), tls


def test_another_peers_tcp_connection_closing_leaves_the_registration_alone(
    kamailio: Kamailio, engines: Engines, sipp_factory: SippFactory
) -> None:
    """Registered over TCP, we call a SIPp UAS directly over TCP; SIPp exits and its
    connection closes: that is not the registrar's, so no re-REGISTER, no
    "connection lost"."""
    manager, events = engines.start(registrar_ini(kamailio, transport="tcp"))
    events.wait_for("registration", account=1, state="registered")
    sipp = sipp_factory.uas("uas_answer", transport="tcp", bye_timeout_ms=10000)
    call = manager.dial(f"sip:pbx@{sipp.address}").call
    events.wait_for("call_state", timeout=10, call=call, state="confirmed")
    manager.hangup(call)
    sipp.wait(15)
    gone = events.wait(
        lambda e: (
            e["event"] == "transport"
            and e["state"] == "disconnected"
            and e["remote"] == sipp.address
        ),
        10,
        "SIPp's TCP connection to close",
    )
    # Whatever the engine would do about it, it does on the SIP thread at once.
    manager.status()
    changes = [e for e in events.of("registration") if e["time"] >= gone["time"]]
    assert changes == [], changes
    assert account_state(manager)["state"] == "registered"


def test_udp_registrar_restart_is_repaired_by_the_refresh(
    kamailio: Kamailio, engines: Engines
) -> None:
    """Over UDP a restart is invisible; with registerRefresh=10 the contact is back in
    the restarted registrar within 10 s."""
    manager, events = engines.start(registrar_ini(kamailio, transport="udp", registerRefresh=10))
    events.wait_for("registration", account=1, state="registered")
    kamailio.wait_registrations("alice", 1)
    kamailio.restart()
    assert kamailio.registrations("alice") == []
    assert kamailio.wait_registrations("alice", 1, timeout=BACK_WITHIN)
    assert account_state(manager)["state"] == "registered"
