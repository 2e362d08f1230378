"""The ``copydata`` control command end to end: MicroSIP's WM_COPYDATA
(docs/microsip.md#wm-copydata).

A real ``microsip-engine serve`` child and a real SIPp caller. ``dwData=1`` runs the
command line and replies after it ran; ``dwData=2`` replies at once and runs it
queued. Malformed payloads get an error reply with a code, and the engine keeps
serving. Every wait has a hard timeout.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from enginekit import ServeProcess, client_fixture, serve_fixture
from peers import wait_until
from peers.sipp import SCENARIO_DIR, SippFactory

from engine.control import ControlClient, RemoteError

pytestmark = pytest.mark.peers

STEP = 10.0


_RTP_NOP = re.compile(r"\s*<nop>\s*<action>\s*<exec rtp_stream=[^>]*/>\s*</action>\s*</nop>")


def silent_uac(tmp: Path) -> Path:
    """``uac_wait_bye`` without its RTP steps. The engine's BYE here follows the ACK
    within a millisecond (no CLI process in between); SIPp still at the "start RTP"
    step would take that BYE as unexpected and fail the call. Without that step, the
    ACK is followed directly by the wait for BYE."""
    text, count = _RTP_NOP.subn("", (SCENARIO_DIR / "uac_wait_bye.xml").read_text())
    assert count == 2, "uac_wait_bye.xml no longer has its two rtp_stream steps"
    path = tmp / "uac_wait_bye_silent.xml"
    path.write_text(text)
    return path


def payload(text: str) -> bytes:
    """What MicroSIP's second instance sends: UTF-16LE, NUL-terminated, no program name."""
    return text.encode("utf-16-le") + b"\0\0"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def copydata(client: ControlClient, dw_data: Any, data: bytes) -> Any:
    return client.request("copydata", dwData=dw_data, payload_b64=b64(data))


serve = pytest.fixture(name="serve")(serve_fixture)
client = pytest.fixture(name="client")(client_fixture)


def test_dwdata_1_answers_and_replies_after_dwdata_2_queues_hangupall(
    serve: ServeProcess, client: ControlClient, sipp_factory: SippFactory, tmp_path: Path
) -> None:
    sipp = sipp_factory.uac(
        f"sip:100@127.0.0.1:{serve.sip_port()}", silent_uac(tmp_path), bye_timeout_ms=15000
    )
    [ringing] = wait_until(
        lambda: [c for c in client.request("calls") if c["state"] == "early"] or None,
        STEP,
        "the SIPp call to ring",
    )

    reply = copydata(client, 1, payload("msip:answer"))
    assert reply == {
        "queued": False,
        "results": [{"action": "answer", "result": {"call": ringing["call"]}}],
    }
    # The reply came after the answer: the call is no longer ringing.
    [call] = client.request("calls")
    assert call["state"] in ("connecting", "confirmed"), call
    wait_until(
        lambda: client.request("calls")[0]["state"] == "confirmed", STEP, "the call to confirm"
    )

    reply = copydata(client, 2, payload("/hangupall"))
    assert reply == {"queued": True, "actions": [{"action": "hangupall"}]}
    wait_until(lambda: client.request("calls") == [], STEP, "the queued /hangupall to end it")
    result = sipp.wait(STEP)
    assert result.successful == 1 and result.received("BYE") == 1


LIMIT = 65536

MALFORMED: list[tuple[str, Any, bytes, str, str]] = [
    ("odd length", 1, b"a\0b", "copydata_error", "odd length"),
    ("missing NUL", 1, "/answer".encode("utf-16-le"), "copydata_error", "NUL terminator"),
    ("empty", 1, b"", "copydata_error", "empty payload"),
    ("oversize", 1, payload("1" * (LIMIT // 2)), "copydata_error", "exceeds the limit"),
    ("dwData 0", 0, payload("/hangupall"), "copydata_error", "unknown dwData 0"),
    ("dwData 3", 3, payload("/hangupall"), "copydata_error", "unknown dwData 3"),
    ("dwData -1", -1, payload("/hangupall"), "copydata_error", "unknown dwData -1"),
    ("lone surrogate", 1, b"\x00\xd8\0\0", "copydata_error", "lone surrogate"),
    # At the byte limit the payload is fine, but no command line is that long.
    ("at the limit", 1, payload("1" * (LIMIT // 2 - 1)), "grammar_error", "characters long"),
    ("not a command", 1, payload("/hangup"), "grammar_error", "unknown command"),
    ("dwData as text", "1", payload("/hangupall"), "bad_params", "must be int"),
    ("dwData as bool", True, payload("/hangupall"), "bad_params", "must be int"),
]


def test_malformed_payloads_are_rejected_and_the_engine_keeps_serving(
    serve: ServeProcess, client: ControlClient
) -> None:
    other = ControlClient(serve.control, timeout=STEP)  # a second, well-behaved client
    problems = []
    for what, dw_data, data, code, fragment in MALFORMED:
        try:
            copydata(client, dw_data, data)
        except RemoteError as exc:
            if exc.code != code or fragment not in exc.message:
                problems.append(f"{what}: {exc.code}: {exc.message}")
        else:
            problems.append(f"{what}: accepted")
        assert client.request("status")["calls"] == []
        assert other.request("calls") == []
    assert problems == []

    for bad in ("not base64!", "QU JD", "QQ"):
        with pytest.raises(RemoteError, match="not valid base64") as info:
            client.request("copydata", dwData=1, payload_b64=bad)
        assert info.value.code == "bad_params"
    with pytest.raises(RemoteError, match="missing required parameter 'payload_b64'"):
        client.request("copydata", dwData=1)
    with pytest.raises(RemoteError, match="unknown parameter 'text'"):
        client.request("copydata", dwData=1, payload_b64=b64(payload("/answer")), text="x")

    # A queued command that fails is logged; its sender was already answered.
    assert copydata(client, 2, payload("/answer")) == {
        "queued": True,
        "actions": [{"action": "answer"}],
    }
    serve.wait_log(
        lambda e: e.get("event") == "queued_command_failed" and e.get("code") == "not_found",
        STEP,
        "the queued /answer to fail in the log",
    )
    # Still serving, on both connections: a well-formed request runs.
    assert copydata(other, 1, payload("/hangupall")) == {
        "queued": False,
        "results": [{"action": "hangupall", "result": {"hungup": []}}],
    }
    assert client.request("status")["accounts"][0]["account"] == 0
    other.close()
    assert serve.proc.poll() is None
    assert not [e for e in serve.log_entries() if e.get("event") == "control_internal_error"]
