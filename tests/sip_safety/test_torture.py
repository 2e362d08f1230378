"""RFC 4475 torture messages and seeded mutations: the expected answer for each, the
engine alive throughout, and an ordinary call answered afterwards."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from enginekit import ServeProcess
from peers.sipp import SippFactory

from .flood import answered_call_completes, idle_after
from .torture import CORPUS, Torture
from .wire import Peer, Transport, ack, alive, ini, sip_port

#: How long a message the engine must not answer is given to stay unanswered.
SILENCE = 1.0


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    proc = ServeProcess(
        tmp_path_factory.mktemp("torture"),
        ini(denyIncoming="button", DND=1, autoAnswer="button"),
    )
    try:
        yield proc
    finally:
        proc.stop()


CASES = [(t, tp) for t in CORPUS for tp in t.transports]


@pytest.mark.parametrize(("torture", "transport"), CASES, ids=[f"{t.name}-{tp}" for t, tp in CASES])
def test_torture_message(engine: ServeProcess, torture: Torture, transport: Transport) -> None:
    peer = Peer(transport, sip_port(engine, transport))
    try:
        cid = uuid.uuid4().hex
        peer.send(torture.render(peer.port, peer.local_port, transport, cid))
        wait = SILENCE if torture.expect is None else 5.0
        response = peer.first(cid, wait)
        code = None if response is None else response.code
        assert code == torture.expect, f"{torture.name}: {response and response.text}"
        if response is not None and response.code >= 300 and torture.text.startswith("INVITE"):
            ack(peer, response)
        alive(engine)
    finally:
        peer.close()


def mutate(rng: random.Random, message: bytes) -> bytes:
    """One random edit of a valid message: flip, drop, duplicate or cut."""
    data = bytearray(message)
    for _ in range(rng.randint(1, 4)):
        what = rng.randrange(5)
        at = rng.randrange(len(data))
        if what == 0:
            data[at] = rng.randrange(256)
        elif what == 1:
            del data[at : at + rng.randint(1, 12)]
        elif what == 2:
            end = data.find(b"\r\n", at)
            if end > 0:
                start = data.rfind(b"\r\n", 0, at) + 2
                data[end:end] = data[start - 2 : end]  # a header line twice
        elif what == 3:
            del data[at:]
        else:
            data[at:at] = rng.choice([b"\r\n", b" ", b":", b";", b"<", b"%", b"\x00", b"\xff"])
        if not data:
            data = bytearray(b"\r\n")
    return bytes(data)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_mutated_messages_then_a_call(
    tmp_path: Path, sipp_factory: SippFactory, transport: Transport
) -> None:
    """1 000 mutations of valid INVITEs and requests from one caller, sent as fast as
    the socket takes them (a new TCP connection whenever the engine drops one)."""
    proc = ServeProcess(tmp_path, ini(denyIncoming="button", DND=1, autoAnswer="button"))
    rng = random.Random(4475)
    valid = [t for t in CORPUS if t.expect is not None and t.expect < 500]
    port = sip_port(proc, transport)
    peer = Peer(transport, port)
    try:
        for n in range(1000):
            cid = f"fuzz{n}"
            message = rng.choice(valid).render(port, peer.local_port, transport, cid)
            try:
                peer.send(mutate(rng, message))
            except OSError:  # the engine closed a TCP connection after garbage
                peer.close()
                peer = Peer(transport, port)
        alive(proc)
        # Sent without waiting for answers: the engine may still be working through
        # the backlog (refusals are spaced out), so wait until it is idle.
        idle_after(proc, 10.0)
        answered_call_completes(sipp_factory, proc)
        alive(proc)
    finally:
        peer.close()
        proc.stop()
