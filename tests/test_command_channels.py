"""A MicroSIP command line and the equivalent socket command are one command of
the table: same result, same effect. A real ``microsip-engine serve`` child, its
control socket, and SIPp callers for the hangups. Every wait has a hard timeout."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from enginekit import ServeProcess, client_fixture, serve_fixture
from peers.process import wait_until
from peers.sipp import Sipp, SippFactory

from engine.control import ControlClient

pytestmark = pytest.mark.peers

STEP = 10.0
SECRET = "hunter2-not-in-any-log"


serve = pytest.fixture(name="serve")(serve_fixture)
client = pytest.fixture(name="client")(client_fixture)


def line(client: ControlClient, text: str) -> Any:
    """The result of the one action ``text`` parses into."""
    [done] = client.request("commandline", line=text)
    return done["result"]


def audio(client: ControlClient) -> dict[str, Any]:
    return dict(client.request("status")["audio"])


def test_mute_verbs_and_their_commands_give_the_same_result(client: ControlClient) -> None:
    by_line = line(client, "msip:micmute")
    assert audio(client)["mic_muted"] is True
    line(client, "msip:micunmute")
    assert client.request("audio", mic_muted=True) == by_line
    assert audio(client)["mic_muted"] is True

    by_line = line(client, "msip:speakmuteclick")
    line(client, "msip:speakmuteclick")
    assert client.request("toggle_mute", device="speaker") == by_line
    assert audio(client)["speaker_muted"] is by_line["speaker_muted"] is True


def test_a_volume_verb_and_volume_step_move_the_volume_alike(client: ControlClient) -> None:
    start = audio(client)["speaker_volume"]
    assert start >= 20, "the default speaker volume leaves no room for two steps down"
    by_line = line(client, "msip:speakdown")
    assert by_line["speaker_volume"] == start - 10
    by_socket = client.request("volume_step", device="speaker", step=-1)
    assert by_socket == {**by_line, "speaker_volume": start - 20}
    assert audio(client)["speaker_volume"] == start - 20


def ringing_caller(sipp_factory: SippFactory, serve: ServeProcess, client: ControlClient) -> Any:
    """A SIPp call left ringing here; returns (SIPp run, call number)."""
    sipp = sipp_factory.uac(
        f"sip:100@127.0.0.1:{serve.sip_port()}",
        "uac_policy",
        params={"headers": "Subject: channels", "caller": "sipp"},
    )
    [call] = wait_until(
        lambda: [c["call"] for c in client.request("calls") if c["state"] == "early"] or None,
        STEP,
        "the SIPp call to ring",
    )
    return sipp, call


def rejected(sipp: Sipp) -> bool:
    return sipp.wait(STEP).received("603") == 1


def test_hangupincoming_and_hangup_incoming_reject_a_ringing_call_alike(
    serve: ServeProcess, client: ControlClient, sipp_factory: SippFactory
) -> None:
    sipp, call = ringing_caller(sipp_factory, serve, client)
    assert line(client, "/hangupincoming") == {"hungup": [call]}
    assert rejected(sipp)
    wait_until(lambda: client.request("calls") == [], STEP, "the first call to end")

    sipp, call = ringing_caller(sipp_factory, serve, client)
    assert client.request("hangup_incoming") == {"hungup": [call]}
    assert rejected(sipp)


def test_passwords_by_line_or_socket_are_in_no_result_or_log_line(
    serve: ServeProcess, client: ControlClient
) -> None:
    assert line(client, f"/password:{SECRET}") is None
    assert client.request("password_override", password=SECRET) is None
    assert client.request("save_password", account=0, password=SECRET) is None
    assert SECRET in (serve.tmp / "serve.ini").read_text()  # saved, as MicroSIP does
    # Logged after the password commands: once it is in the log, so are they.
    line(client, "msip:minimize")
    serve.wait_log(
        lambda e: e.get("event") == "microsip_action" and e.get("action") == "minimize",
        STEP,
        "the last command line in the log",
    )
    logged = [e for e in serve.log_entries() if e.get("action") == "passwordoverride"]
    assert len(logged) == 1 and "password" in logged[0]  # logged, masked
    assert SECRET not in serve.log_path.read_text(errors="replace")


def test_a_queued_exit_stops_the_engine_and_its_queue_worker(
    serve: ServeProcess, client: ControlClient
) -> None:
    """``dwData=2`` ``/exit``: the reply comes at once, the queued line stops the
    engine, and the shutdown ends the queue's worker (the process exits 0)."""
    payload = base64.b64encode("/exit".encode("utf-16-le") + b"\0\0").decode()
    reply = client.request("copydata", dwData=2, payload_b64=payload)
    assert reply == {"queued": True, "actions": [{"action": "exit"}]}
    assert wait_until(lambda: serve.proc.poll() is not None, STEP, "the engine to exit") is True
    assert serve.proc.returncode == 0
    events = {e.get("event") for e in serve.log_entries()}
    assert "stopped" in events and "queued_command_still_running" not in events
