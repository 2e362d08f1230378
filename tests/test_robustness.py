"""Garbage into every engine command: only EngineError comes out, the engine lives on.

Random parameters go through the one command registry (what every channel uses)
into a running engine. Dial targets stay on loopback (a closed port) or are
malformed, so nothing is ever sent to a real address.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from buildkit import EXPECTED
from enginekit import Engines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.commands import CommandRegistry
from engine.commandset import build_registry
from engine.errors import EngineError

pytestmark = pytest.mark.peers


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CLOSED = closed_udp_port()

texts = st.text(max_size=300) | st.sampled_from(["", " ", "\x00", "a" * 5000, "sip:", "@@"])
numbers = st.integers(min_value=-(2**40), max_value=2**40)
# Targets never name a resolvable host: random text could be "pbx.example" and send
# a DNS query (traffic off this machine). They are malformed by construction (a NUL,
# refused before pjsua2; unparsable URIs) or point at a closed loopback port.
targets = (
    texts.map(lambda t: t + "\x00")
    | st.sampled_from(["", " ", "sip:", "@@", "sip:@@", "a" * 5000, "sip:a b@127.0.0.1"])
    | st.builds(
        lambda u: f"sip:{u}@127.0.0.1:{CLOSED}", st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True)
    )
)
# MicroSIP command lines that cannot dial or message a host name (same reason).
line_heads = st.sampled_from(
    ["/dtmf:", "/answer", "/hangupall", "/hangupincoming", "/hangupcalling", "msip:hold",
     "msip:micmute", "msip:speakup", "/password:", "/unknown", "\x00"]
)  # fmt: skip
lines = st.builds(lambda head, tail: head + tail, line_heads, texts)
payloads = texts.map(lambda t: t + "!")  # never valid base64: the decoder has its own fuzz
COMMANDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "dial": st.fixed_dictionaries({"target": targets}),
    "answer": st.fixed_dictionaries({}, optional={"call": numbers, "code": numbers}),
    "hangup": st.fixed_dictionaries({"call": numbers}, optional={"code": numbers}),
    "hold": st.fixed_dictionaries({}, optional={"call": numbers, "hold": st.booleans()}),
    "transfer": st.fixed_dictionaries({"target": targets}, optional={"call": numbers}),
    "transfer_attended": st.fixed_dictionaries({"call": numbers, "to_call": numbers}),
    "dtmf": st.fixed_dictionaries({"digits": texts}, optional={"method": numbers}),
    "message": st.fixed_dictionaries({"target": targets, "text": texts}),
    "play": st.fixed_dictionaries({"call": numbers, "wav": texts}),
    "record": st.fixed_dictionaries({"call": numbers}, optional={"wav": texts}),
    "toggle": st.fixed_dictionaries({"name": texts, "on": st.booleans()}),
    "audio": st.fixed_dictionaries(
        {}, optional={"mic_volume": numbers, "mic_muted": st.booleans()}
    ),
    "conference": st.fixed_dictionaries({}, optional={"calls": texts}),
    "commandline": st.fixed_dictionaries({"line": lines}),
    "copydata": st.fixed_dictionaries({"dwData": numbers, "payload_b64": payloads}),
    "switch_account": st.fixed_dictionaries({"account": numbers}),
    "dial_number": st.fixed_dictionaries({"target": targets}, optional={"post_dial": texts}),
    "hangup_incoming": st.just({}),
    "hangup_calling": st.just({}),
    "toggle_mute": st.fixed_dictionaries({"device": texts | st.sampled_from(["mic", "speaker"])}),
    "volume_step": st.fixed_dictionaries(
        {"device": texts | st.sampled_from(["mic", "speaker"]), "step": numbers}
    ),
    "save_password": st.fixed_dictionaries({"account": numbers, "password": texts}),
    "password_override": st.fixed_dictionaries({"password": texts}),
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, CommandRegistry]]:
    engines = Engines(tmp_path_factory.mktemp("robust"))
    manager, _ = engines.start()
    try:
        with build_registry(manager) as registry:
            yield manager, registry
    finally:
        engines.stop_all()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.sampled_from(sorted(COMMANDS)).flatmap(lambda n: st.tuples(st.just(n), COMMANDS[n])))
def test_garbage_commands_only_raise_engine_errors(
    engine: tuple[Any, CommandRegistry], command: tuple[str, dict[str, Any]]
) -> None:
    manager, registry = engine
    name, params = command
    with contextlib.suppress(EngineError):  # a clear refusal is fine; anything else fails
        registry.call(name, params)
    assert manager.running
    assert manager.status()["capacity"]["max_calls"] == EXPECTED.max_calls


def test_the_engine_still_works_after_the_garbage(engine: tuple[Any, CommandRegistry]) -> None:
    manager, registry = engine
    for call in manager.calls():
        manager.hangup(call.call)
    status = registry.call("status", {})
    assert status["accounts"][0]["account"] == 0
    with pytest.raises(EngineError):
        registry.call("dial", {"target": "\x00"})
