"""Every rule that refuses an inbound call, for INVITEs with and without an SDP offer,
over UDP and TCP: the caller gets the rule's final response and the engine lives.

Before the fix, a refusal of an INVITE without SDP aborted the process
(``pjsip_rx_data_free_cloned: Assertion 'rdata'``): the DND and duplicate-caller
cases here died on their first INVITE without SDP.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from enginekit import ServeProcess

from .wire import Peer, Response, Transport, ack, alive, ini, invite, sip_port

ACCOUNT1 = "username=100\ndomain=example.invalid\ntransport="


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[str], ServeProcess]]:
    running: list[ServeProcess] = []

    def make(text: str) -> ServeProcess:
        where = tmp_path / f"e{len(running)}"
        where.mkdir()
        engine = ServeProcess(where, text)
        running.append(engine)
        return engine

    try:
        yield make
    finally:
        for engine in running:
            engine.stop()


def refused(peer: Peer, caller: str = "alice", user: str = "test", sdp: bool = True) -> Response:
    call_id, msg = invite(peer, caller=caller, user=user, sdp=sdp)
    peer.send(msg)
    response = peer.final(call_id)
    assert response is not None, f"no final response to {caller}'s INVITE (sdp={sdp})"
    ack(peer, response)
    return response


def ring(peer: Peer, caller: str) -> str:
    """A call that rings (with SDP), left ringing."""
    call_id, msg = invite(peer, caller=caller)
    peer.send(msg)
    first = peer.first(call_id)
    assert first is not None and first.code == 180, first
    return call_id


TRANSPORTS: list[Transport] = ["udp", "tcp"]
SDP = [True, False]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("settings", "user", "phrase"),
    [
        ({"denyIncoming": "button", "DND": 1}, "test", "Busy Here"),
        ({"denyIncoming": "all"}, "test", "Busy Here"),
        # The only account is 100@example.invalid: a call to another user, to
        # our address as the domain, or from another domain is refused.
        ({"accountId": 1, "enableLocalAccount": 0, "denyIncoming": "user"}, "999", ""),
        ({"accountId": 1, "enableLocalAccount": 0, "denyIncoming": "domain"}, "100", ""),
        ({"accountId": 1, "enableLocalAccount": 0, "denyIncoming": "userdomain"}, "999", ""),
        ({"accountId": 1, "enableLocalAccount": 0, "denyIncoming": "remotedomain"}, "100", ""),
    ],
    ids=["dnd", "deny-all", "deny-user", "deny-domain", "deny-userdomain", "deny-remotedomain"],
)
def test_deny_rules_refuse_with_and_without_sdp(
    start: Callable[[str], ServeProcess],
    transport: Transport,
    settings: dict[str, object],
    user: str,
    phrase: str,
) -> None:
    extra = {"Account1": ACCOUNT1} if "accountId" in settings else {}
    engine = start(ini(**settings, **extra))
    peer = Peer(transport, sip_port(engine, transport))
    try:
        for n, sdp in enumerate([False, True, False]):
            response = refused(peer, caller=f"c{n}", user=user, sdp=sdp)
            assert response.code == 486, response.text
            if phrase:
                assert response.phrase == phrase
            alive(engine)
    finally:
        peer.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("sdp", SDP, ids=["sdp", "no-sdp"])
@pytest.mark.parametrize(
    ("settings", "second", "phrase"),
    [
        ({}, "alice", "Already in call with this contact"),
        ({"callWaiting": 0}, "bob", "Busy Here"),
        ({"maxConcurrentCalls": 1}, "bob", "Maximum concurrent calls reached"),
    ],
    ids=["same-caller", "call-waiting-off", "max-concurrent"],
)
def test_busy_rules_refuse_the_second_call(
    start: Callable[[str], ServeProcess],
    transport: Transport,
    sdp: bool,
    settings: dict[str, object],
    second: str,
    phrase: str,
) -> None:
    """The embedded default's case from the report: alice rings, then alice again."""
    engine = start(ini(**settings))
    peer = Peer(transport, sip_port(engine, transport))
    try:
        ring(peer, "alice")
        for _ in range(2):
            response = refused(peer, caller=second, sdp=sdp)
            assert (response.code, response.phrase) == (486, phrase), response.text
            alive(engine)
    finally:
        peer.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("sdp", SDP, ids=["sdp", "no-sdp"])
def test_over_capacity_is_refused(
    start: Callable[[str], ServeProcess], transport: Transport, sdp: bool
) -> None:
    """Every call slot ringing: the next call gets 486 at once."""
    engine = start(ini())
    slots = int(engine.ready["max_calls"])
    peer = Peer(transport, sip_port(engine, transport))
    try:
        for n in range(slots):
            ring(peer, f"r{n}")
        for n in range(3):
            assert refused(peer, caller=f"x{n}", sdp=sdp).code == 486
        alive(engine)
    finally:
        peer.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_retired_account_answers_480(
    start: Callable[[str], ServeProcess], transport: Transport
) -> None:
    """An account switched away from refuses its calls 480, SDP or not."""
    engine = start(ini(accountId=1, Account1="username=100\ndomain=127.0.0.1\ntransport="))
    with contextlib.closing(engine.client()) as client:
        client.request("switch_account", account=0)
    peer = Peer(transport, sip_port(engine, transport))
    try:
        for sdp in (False, True, False):
            assert refused(peer, user="100", sdp=sdp).code == 480
            alive(engine)
    finally:
        peer.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_immediate_forwarding_with_and_without_sdp(
    start: Callable[[str], ServeProcess], transport: Transport
) -> None:
    """A 302 ends the call just like a refusal, and went out on the same path."""
    engine = start(ini(forwarding="all", forwardingNumber="sip:555@127.0.0.1:9"))
    peer = Peer(transport, sip_port(engine, transport))
    try:
        for n, sdp in enumerate((False, True, False)):
            response = refused(peer, caller=f"f{n}", sdp=sdp)
            assert response.code == 302, response.text
            assert "sip:555@127.0.0.1:9" in (response.header("Contact") or ""), response.text
            alive(engine)
    finally:
        peer.close()
