"""MicroSIP's ``cmd*`` hooks: command-line splitting, placeholders, when each hook
fires, and that a hook can never block or break the engine.

Hooks are real programs: small shell scripts that append their argv and their
``MICROSIP_*`` environment to a log file. Synthetic events are fed in the order the
engine emits them; two tests run the real engine against SIPp.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from enginekit import BASE_INI, Engines, engines_fixture, sip_port
from peers.sipp import SippFactory

from engine.config import AccountConfig, Settings
from engine.events import (
    CallState,
    CallStateName,
    Event,
    HookRun,
    IncomingCall,
    IncomingDecision,
)
from engine.hooks import (
    CallContext,
    HookRunner,
    expand_placeholders,
    split_windows_command_line,
)

# -- helpers ----------------------------------------------------------------------------


class Published:
    """The ``publish`` callable: keeps the HookRun events, lets a test wait for them."""

    def __init__(self) -> None:
        self.runs: list[HookRun] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        if isinstance(event, HookRun):
            with self._cond:
                self.runs.append(event)
                self._cond.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> list[HookRun]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.runs) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.runs)} hook runs, wanted {count}: {self.runs}")
                self._cond.wait(left)
            return list(self.runs)


SCRIPT = """#!/bin/sh
rec="BEGIN"
for a in "$@"; do rec="$rec
ARG $a"; done
rec="$rec
$(env | grep '^MICROSIP_' | sort | sed 's/^/ENV /')
END"
printf '%s\\n' "$rec" >> '{log}'
{extra}
"""


def make_script(tmp_path: Path, name: str = "hook.sh", extra: str = "") -> Path:
    """An executable hook that logs argv and MICROSIP_* to ``tmp_path/hooks.log``."""
    script = tmp_path / name
    script.write_text(SCRIPT.format(log=tmp_path / "hooks.log", extra=extra))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def read_log(tmp_path: Path) -> list[dict[str, Any]]:
    """Each hook run as {"args": [...], "env": {...}}, in the order they ran."""
    log = tmp_path / "hooks.log"
    runs: list[dict[str, Any]] = []
    if not log.exists():
        return runs
    for line in log.read_text().splitlines():
        if line == "BEGIN":
            runs.append({"args": [], "env": {}})
        elif line.startswith("ARG "):
            runs[-1]["args"].append(line[4:])
        elif line.startswith("ENV "):
            key, _, value = line[4:].partition("=")
            runs[-1]["env"][key] = value
    return runs


def all_hooks(script: Path) -> Settings:
    """Every hook runs ``script <label>``."""
    return Settings(
        cmd_outgoing_call=f"{script} outgoing",
        cmd_incoming_call=f"{script} incoming",
        cmd_call_ring=f"{script} ring",
        cmd_call_answer=f"{script} answer",
        cmd_call_answer_video=f"{script} video",
        cmd_call_busy=f"{script} busy",
        cmd_call_start=f"{script} start",
        cmd_call_end=f"{script} end",
    )


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def runner_for(published: Published) -> Iterator[Any]:
    made: list[HookRunner] = []

    def make(settings: Settings, timeout: float = 5.0, **kw: Any) -> HookRunner:
        runner = HookRunner(lambda: settings, published, timeout=timeout, **kw)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close(2.0)


IN_URI = "sip:trunk@pbx.example.com"
PAI_USER = "5551234"  # the P-Asserted-Identity user, differs from the From user


def incoming(call: int = 1) -> IncomingCall:
    return IncomingCall(
        call=call,
        sip_call_id=f"in-{call}@pbx",
        account=1,
        remote_uri=IN_URI,
        remote_user=PAI_USER,
        display_name="Alice Smith",
        to_uri="sip:100@pbx.example.com",
    )


def decision(call: int, action: str, code: int, reason: str) -> IncomingDecision:
    return IncomingDecision(call=call, action=action, code=code, reason=reason)


def state(
    call: int,
    direction: str,
    st: CallStateName,
    code: int = 0,
    reason: str = "",
    duration: float = 0.0,
) -> CallState:
    out = direction == "out"
    return CallState(
        call=call,
        sip_call_id=f"{direction}-{call}@engine",
        account=1,
        direction=direction,
        state=st,
        code=code,
        reason=reason,
        remote_uri="sip:bob@pbx.example.com" if out else IN_URI,
        remote_user="bob" if out else PAI_USER,
        display_name="Bob" if out else "Alice Smith",
        duration=duration,
    )


S = CallStateName


def feed(runner: HookRunner, *events: Event) -> None:
    for event in events:
        runner.on_event(event)


def labels(tmp_path: Path) -> list[str]:
    return [run["args"][0] for run in read_log(tmp_path)]


# -- splitting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "args"),
    [
        # Microsoft's "Parsing C command-line arguments" examples (arguments part).
        ('"abc" d e', ["abc", "d", "e"]),
        (r'a\\b d"e f"g h', [r"a\\b", "de fg", "h"]),
        (r"a\\\"b c d", [r"a\"b", "c", "d"]),
        (r'a\\\\"b c" d e', [r"a\\b c", "d", "e"]),
        # CommandLineToArgvW keeps the pre-2008 rule: "" inside quotes is a literal
        # quote and ends the quoted part (the 2008+ C runtime gives one argument).
        ('a"b"" c d', ['ab"', "c", "d"]),
        ('"a b" "" c', ["a b", "", "c"]),
        ('"""a"""', ['"a"']),
        (r"C:\dir\ end\\", ["C:\\dir\\", r"end\\"]),
    ],
)
def test_split_follows_command_line_to_argv_w(line: str, args: list[str]) -> None:
    """MSDN's backslash/quote rules apply to the arguments after the program."""
    assert split_windows_command_line(f"prog.exe {line}") == ["prog.exe", *args]


def test_split_program_name_rules() -> None:
    """The program ends at the closing quote or the first blank; backslashes are
    literal in it; blanks around the line are trimmed; an empty line is nothing."""
    assert split_windows_command_line(r'"C:\Program Files\crm\crm.exe" --x "a b"') == [
        r"C:\Program Files\crm\crm.exe",
        "--x",
        "a b",
    ]
    assert split_windows_command_line(r"  C:\tools\a\\b.exe  x  ") == [r"C:\tools\a\\b.exe", "x"]
    assert split_windows_command_line('"unterminated program') == ["unterminated program"]
    assert split_windows_command_line("   ") == []
    assert split_windows_command_line("/usr/bin/notify-send\tcall") == [
        "/usr/bin/notify-send",
        "call",
    ]


# -- placeholders --------------------------------------------------------------------------


def test_placeholders_are_expanded_and_url_encoded() -> None:
    """Remote values are percent-encoded (so they cannot add arguments); server and
    extension come from the call's account as MicroSIP writes them."""
    ctx = CallContext(
        call=3,
        sip_call_id="abc 123@host",
        account=1,
        direction="out",
        remote_uri="sip:+1 555/77@pbx.example.com:5070;transport=tcp",
        remote_user="+1 555/77",
        display_name='Zoë "Z" Müller',
        duration=12.7,
    )
    account = AccountConfig(
        index=1, server="pbx.example.com:5060", username="alice", password="p@ss word"
    )
    template = (
        "crm {server} {extension} {duration} {time} {callerid} {user} {number} {domain} "
        "{name} {password} {md5_password} {callid} {direction} {unknown}"
    )
    out = expand_placeholders(template, ctx, account, now=1700000000.9)
    assert out.split(" ") == [
        "crm",
        "pbx.example.com:5060",
        "alice",
        "12",
        "1700000000",
        "Zo%C3%AB%20%22Z%22%20M%C3%BCller",
        "%2B1%20555%2F77",
        "%2B1%20555%2F77",
        "pbx.example.com%3A5070",
        "Zo%C3%AB%20%22Z%22%20M%C3%BCller",
        "p%40ss%20word",
        "b9b86dad668f10fa8e4a1c4b29d104b3",  # md5("p@ss word")
        "abc%20123%40host",
        "out",
        "{unknown}",
    ]
    # No account (or the local one without a server): MicroSIP's defaults; with no
    # display name, {callerid} is the user.
    bare = dataclass_replace(ctx, display_name="")
    assert expand_placeholders("{server}|{extension}|{callerid}|{password}", bare, None) == (
        "localhost||%2B1%20555%2F77|"
    )


def dataclass_replace(ctx: CallContext, **kw: Any) -> CallContext:
    import dataclasses

    return dataclasses.replace(ctx, **kw)


# -- when hooks fire -----------------------------------------------------------------------


def test_inbound_answered_fires_incoming_ring_answer_start_end(
    tmp_path: Path, runner_for: Any, published: Published
) -> None:
    """Each hook gets the P-Asserted-Identity user as its last argument and the
    call's details in MICROSIP_* variables."""
    runner = runner_for(all_hooks(make_script(tmp_path)))
    feed(
        runner,
        incoming(1),
        decision(1, "ring", 180, "Ringing"),
        state(1, "in", S.EARLY, 180, "Ringing"),
        state(1, "in", S.CONNECTING, 200, "OK"),
        state(1, "in", S.CONFIRMED, 200, "OK"),
        state(1, "in", S.DISCONNECTED, 200, "Normal call clearing", duration=42.6),
    )
    runs = published.wait(5)
    assert [r.hook for r in runs] == [
        "cmdIncomingCall",
        "cmdCallRing",
        "cmdCallAnswer",
        "cmdCallStart",
        "cmdCallEnd",
    ]
    assert all(r.outcome == "ok" and r.exit_code == 0 and r.call == 1 for r in runs)
    logged = read_log(tmp_path)
    assert [run["args"] for run in logged] == [
        [label, PAI_USER] for label in ("incoming", "ring", "answer", "start", "end")
    ]
    first, ring, answer, _, end = (run["env"] for run in logged)
    assert first == {
        "MICROSIP_ACCOUNT": "1",
        "MICROSIP_CALL": "1",
        "MICROSIP_CALL_ID": "in-1@pbx",
        "MICROSIP_DIRECTION": "incoming",
        "MICROSIP_DURATION": "0",
        "MICROSIP_EVENT": "incoming_call",
        "MICROSIP_HOOK": "cmdIncomingCall",
        "MICROSIP_REMOTE_NAME": "Alice Smith",
        "MICROSIP_REMOTE_URI": IN_URI,
        "MICROSIP_REMOTE_USER": PAI_USER,
        "MICROSIP_SIP_CODE": "0",
        "MICROSIP_SIP_REASON": "",
    }
    assert (ring["MICROSIP_EVENT"], ring["MICROSIP_SIP_CODE"]) == ("call_ring", "180")
    assert (answer["MICROSIP_EVENT"], answer["MICROSIP_SIP_CODE"]) == ("call_answer", "200")
    assert end["MICROSIP_EVENT"] == "call_end"
    assert end["MICROSIP_DURATION"] == "42"
    assert end["MICROSIP_SIP_REASON"] == "Normal call clearing"


def test_inbound_missed_fires_incoming_ring_end(
    tmp_path: Path, runner_for: Any, published: Published
) -> None:
    runner = runner_for(all_hooks(make_script(tmp_path)))
    feed(
        runner,
        incoming(2),
        decision(2, "ring", 180, "Ringing"),
        state(2, "in", S.EARLY, 180, "Ringing"),
        state(2, "in", S.DISCONNECTED, 487, "Request Terminated"),
    )
    assert [r.hook for r in published.wait(3)] == ["cmdIncomingCall", "cmdCallRing", "cmdCallEnd"]
    assert labels(tmp_path) == ["incoming", "ring", "end"]
    assert read_log(tmp_path)[-1]["env"]["MICROSIP_SIP_CODE"] == "487"


@pytest.mark.parametrize("code", [486, 600, 603])
def test_inbound_rejected_busy_fires_incoming_busy(
    tmp_path: Path, runner_for: Any, published: Published, code: int
) -> None:
    """A policy rejection neither rings nor ends: Incoming, then Busy (486/600/603)."""
    runner = runner_for(all_hooks(make_script(tmp_path)))
    feed(
        runner,
        incoming(3),
        decision(3, "reject", code, "Busy Here"),
        state(3, "in", S.DISCONNECTED, code, "Busy Here"),
    )
    assert [r.hook for r in published.wait(2)] == ["cmdIncomingCall", "cmdCallBusy"]
    assert read_log(tmp_path)[1]["args"] == ["busy", PAI_USER]


@pytest.mark.parametrize("action", ["answer", "forward"])
def test_auto_answered_or_forwarded_calls_do_not_ring(
    tmp_path: Path, runner_for: Any, published: Published, action: str
) -> None:
    runner = runner_for(all_hooks(make_script(tmp_path)))
    feed(runner, incoming(4), decision(4, action, 200 if action == "answer" else 302, ""))
    published.wait(1)
    runner.close(5.0)
    assert labels(tmp_path) == ["incoming"]


def test_outbound_answered_fires_outgoing_start_end_with_placeholders(
    tmp_path: Path, runner_for: Any, published: Published
) -> None:
    """cmdOutgoingCall fires once (at the first CALLING) with its placeholders
    expanded; there is no cmdCallAnswer for an outbound call."""
    script = make_script(tmp_path)
    settings = dataclass_settings(
        all_hooks(script), cmd_outgoing_call=f"{script} outgoing {{user}} {{name}} {{direction}}"
    )
    runner = runner_for(settings)
    feed(
        runner,
        state(5, "out", S.CALLING),
        state(5, "out", S.CALLING, 100, "Trying"),
        state(5, "out", S.EARLY, 180, "Ringing"),
        state(5, "out", S.CONNECTING, 200, "OK"),
        state(5, "out", S.CONFIRMED, 200, "OK"),
        state(5, "out", S.DISCONNECTED, 200, "Normal call clearing", duration=3.0),
    )
    assert [r.hook for r in published.wait(3)] == ["cmdOutgoingCall", "cmdCallStart", "cmdCallEnd"]
    logged = read_log(tmp_path)
    assert [run["args"] for run in logged] == [
        ["outgoing", "bob", "Bob", "out", "bob"],
        ["start", "bob"],
        ["end", "bob"],
    ]
    assert {run["env"]["MICROSIP_DIRECTION"] for run in logged} == {"outgoing"}


@pytest.mark.parametrize(("code", "last"), [(404, "cmdCallEnd"), (486, "cmdCallBusy")])
def test_outbound_failed_fires_outgoing_then_end_or_busy(
    tmp_path: Path, runner_for: Any, published: Published, code: int, last: str
) -> None:
    runner = runner_for(all_hooks(make_script(tmp_path)))
    feed(
        runner,
        state(6, "out", S.CALLING),
        state(6, "out", S.DISCONNECTED, code, "Not Found" if code == 404 else "Busy Here"),
    )
    assert [r.hook for r in published.wait(2)] == ["cmdOutgoingCall", last]
    assert read_log(tmp_path)[1]["env"]["MICROSIP_SIP_CODE"] == str(code)


def dataclass_settings(settings: Settings, **kw: Any) -> Settings:
    import dataclasses

    return dataclasses.replace(settings, **kw)


def test_hooks_follow_configuration_changes(
    tmp_path: Path, published: Published, runner_for: Any
) -> None:
    """The command is read when the event arrives: a hook set later applies, an
    emptied one stops."""
    script = make_script(tmp_path)
    current = [Settings()]
    runner = HookRunner(lambda: current[0], published, timeout=5.0)
    try:
        runner.on_event(incoming(7))
        current[0] = Settings(cmd_call_ring=f"{script} ring")
        runner.on_event(decision(7, "ring", 180, "Ringing"))
        current[0] = Settings()
        runner.on_event(state(7, "in", S.DISCONNECTED, 487, "Request Terminated"))
        published.wait(1)
    finally:
        runner.close(5.0)
    assert labels(tmp_path) == ["ring"]


# -- never blocking, never breaking --------------------------------------------------------


def _group_alive(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in process group ``pgid``."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def test_sleeping_hook_is_killed_with_its_children_and_never_blocks(
    tmp_path: Path, runner_for: Any, published: Published
) -> None:
    """A hook that sleeps 30 s (and leaves a ``sleep 30 &`` child): on_event returns
    at once, the hook's whole process group is SIGKILLed at the timeout, a
    ``timeout`` event follows, and the call's next hook still runs."""
    pids = tmp_path / "pids"
    slow = make_script(tmp_path, "slow.sh", f"sleep 30 &\necho $$ $! > '{pids}'\nsleep 30")
    fast = make_script(tmp_path)
    runner = runner_for(
        Settings(cmd_incoming_call=str(slow), cmd_call_ring=f"{fast} ring"), timeout=1.0
    )
    began = time.monotonic()
    runner.on_event(incoming(8))
    runner.on_event(decision(8, "ring", 180, "Ringing"))
    elapsed = time.monotonic() - began
    assert elapsed < 0.05, f"on_event blocked for {elapsed:.3f} s"
    runs = published.wait(2, timeout=10)
    assert [(r.hook, r.outcome) for r in runs] == [
        ("cmdIncomingCall", "timeout"),
        ("cmdCallRing", "ok"),
    ]
    assert runs[0].exit_code is None and 0.9 < runs[0].seconds < 3.0
    pgid, child = (int(x) for x in pids.read_text().split())
    assert _group_alive(pgid) == [], "the hook's process group survived"
    assert child not in _group_alive(pgid)


def test_missing_or_unrunnable_program_is_an_event_not_an_error(
    tmp_path: Path, runner_for: Any, published: Published
) -> None:
    not_executable = tmp_path / "plain.txt"
    not_executable.write_text("#!/bin/sh\n")
    runner = runner_for(
        Settings(
            cmd_incoming_call=str(tmp_path / "no-such-program") + " --flag",
            cmd_call_ring=str(not_executable),
            cmd_call_end='sh -c "exit 3"',
        )
    )
    feed(
        runner,
        incoming(9),
        decision(9, "ring", 180, "Ringing"),
        state(9, "in", S.DISCONNECTED, 487, "Request Terminated"),
    )
    missing, denied, failed = published.wait(3)
    assert (missing.outcome, missing.exit_code) == ("not_started", None)
    assert "FileNotFoundError" in missing.error and "no-such-program" in missing.error
    assert denied.outcome == "not_started" and "PermissionError" in denied.error
    assert (failed.outcome, failed.exit_code) == ("failed", 3)


def test_different_calls_run_in_parallel_and_each_call_in_order(
    tmp_path: Path, runner_for: Any, published: Published
) -> None:
    """Call 10's slow first hook delays only call 10: call 11's hook finishes first."""
    slow = make_script(tmp_path, "slow.sh", "sleep 1")
    fast = make_script(tmp_path)
    settings = Settings(cmd_incoming_call=str(slow), cmd_call_end=f"{fast} end")
    runner = runner_for(settings)
    feed(
        runner,
        incoming(10),
        state(10, "in", S.DISCONNECTED, 487, "Request Terminated"),
        state(11, "out", S.DISCONNECTED, 404, "Not Found"),
    )
    runs = published.wait(3)
    assert [(r.call, r.hook) for r in runs] == [
        (11, "cmdCallEnd"),
        (10, "cmdIncomingCall"),
        (10, "cmdCallEnd"),
    ]


def test_answer_video_never_fires(tmp_path: Path, runner_for: Any, published: Published) -> None:
    """There is no video, so cmdCallAnswerVideo never runs, even when configured."""
    script = make_script(tmp_path)
    runner = runner_for(Settings(cmd_call_answer_video=f"{script} video"))
    feed(
        runner,
        incoming(12),
        state(12, "in", S.CONFIRMED, 200, "OK"),
        state(12, "in", S.DISCONNECTED, 200, ""),
    )
    runner.close(5.0)
    assert published.runs == [] and labels(tmp_path) == []


def test_passwords_in_the_command_are_never_logged_or_reported(
    tmp_path: Path, published: Published
) -> None:
    secret = "hunter2-secret"
    account = AccountConfig(index=1, server="pbx", username="alice", password=secret)
    settings = Settings(cmd_outgoing_call=f"{tmp_path}/missing-{{password}} {{md5_password}}")
    runner = HookRunner(lambda: settings, published, account_provider=lambda i: account)
    with structlog.testing.capture_logs() as logs:
        runner.on_event(state(13, "out", S.CALLING))
        (run,) = published.wait(1)
        runner.close(2.0)
    assert run.outcome == "not_started"
    assert secret not in repr(run) and secret not in repr(logs), (run, logs)
    assert "<redacted>" in run.error


def test_close_kills_running_hooks(tmp_path: Path, published: Published) -> None:
    slow = make_script(tmp_path, "slow.sh", "sleep 30")
    runner = HookRunner(lambda: Settings(cmd_incoming_call=str(slow)), published, timeout=60)
    runner.on_event(incoming(14))
    runner.on_event(incoming(15))
    began = time.monotonic()
    runner.close(0.5)
    assert time.monotonic() - began < 3
    runs = published.wait(2)
    assert {(r.outcome, r.exit_code) for r in runs} == {("failed", -9)}
    assert runner.pending() == 0
    runner.on_event(incoming(16))  # closed: ignored
    assert runner.pending() == 0


# -- the real engine against SIPp ------------------------------------------------------------


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def _with_settings(ini: str, keys: dict[str, str]) -> str:
    lines = "".join(f"{k}={v}\n" for k, v in keys.items())
    return ini.replace("[Settings]\n", "[Settings]\n" + lines, 1)


@pytest.mark.peers
def test_engine_runs_the_five_inbound_hooks_in_order(
    engines: Engines, sipp_factory: SippFactory, tmp_path: Path
) -> None:
    """SIPp calls the local account, we answer, SIPp hangs up: Incoming, Ring, Answer,
    Start, End ran in that order, each with SIPp's user ``sipp`` last."""
    script = make_script(tmp_path)
    manager, events = engines.start(
        _with_settings(
            BASE_INI,
            {
                "cmdIncomingCall": f"{script} incoming",
                "cmdCallRing": f"{script} ring",
                "cmdCallAnswer": f"{script} answer",
                "cmdCallStart": f"{script} start",
                "cmdCallEnd": f"{script} end",
            },
        )
    )
    # The engine runs the hooks itself (CallManager.hooks). SIPp hangs up itself
    # (BYE after 300 ms): a BYE of ours sent right after the ACK can reach SIPp
    # before its scenario waits for one ("unexpected BYE").
    sipp = sipp_factory.uac(f"sip:100@127.0.0.1:{sip_port(manager)}", "uac_send_bye", hold_ms=300)
    number = events.wait_for("incoming_call")["call"]
    events.wait_for("call_state", call=number, state="early")
    manager.answer(number)
    events.wait_for("call_state", call=number, state="confirmed")
    events.wait_for("call_state", call=number, state="disconnected")
    events.wait_for("hook", hook="cmdCallEnd", call=number)
    assert sipp.wait(15).successful == 1
    hooks = [(e["hook"], e["outcome"]) for e in events.of("hook", call=number)]
    assert hooks == [
        ("cmdIncomingCall", "ok"),
        ("cmdCallRing", "ok"),
        ("cmdCallAnswer", "ok"),
        ("cmdCallStart", "ok"),
        ("cmdCallEnd", "ok"),
    ]
    logged = read_log(tmp_path)
    assert [run["args"] for run in logged] == [
        [label, "sipp"] for label in ("incoming", "ring", "answer", "start", "end")
    ]
    sip_call_id = events.wait_for("incoming_call")["sip_call_id"]
    assert {run["env"]["MICROSIP_CALL_ID"] for run in logged} == {sip_call_id}
    assert {run["env"]["MICROSIP_REMOTE_NAME"] for run in logged} == {"SIPp"}


RING_TIMING = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- UAC: INVITE (starts response timer 1), 180 stops it, then expect 486 and ACK. -->
<scenario name="uac_ring_timing">
  <send retrans="500" start_rtd="1">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "SIPp" <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" rtd="1"/>
  <recv response="486"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: "SIPp" <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""


@pytest.mark.peers
def test_engine_rings_within_100ms_while_a_hook_sleeps(
    engines: Engines, sipp_factory: SippFactory, tmp_path: Path
) -> None:
    """cmdIncomingCall sleeps 30 s: SIPp still gets 180 within 100 ms of its INVITE
    (SIPp's own INVITE→180 response time, from its -trace_rtt file), and the hook is
    killed at its 1 s timeout."""
    slow = make_script(tmp_path, "slow.sh", "sleep 30")
    ini = _with_settings(BASE_INI, {"cmdIncomingCall": str(slow)}) + "[Engine]\nhookTimeout=1\n"
    manager, events = engines.start(ini)
    scenario = tmp_path / "uac_ring_timing.xml"
    scenario.write_text(RING_TIMING)
    sipp = sipp_factory.uac(
        f"sip:100@127.0.0.1:{sip_port(manager)}",
        scenario,
        extra_args=["-trace_rtt", "-rtt_freq", "1"],
    )
    number = events.wait_for("incoming_call")["call"]
    events.wait_for("call_state", call=number, state="early")
    manager.hangup(number, 486)
    result = sipp.wait(15)
    hook = events.wait_for("hook", hook="cmdIncomingCall", call=number, timeout=5)
    assert result.successful == 1, result
    assert sipp.process is not None
    rtt_file = sipp.workdir / f"{sipp.scenario}_{sipp.process.pid}_rtt.csv"
    rows = [line.split(";") for line in rtt_file.read_text().splitlines()[1:] if line]
    assert len(rows) == 1, rows
    ring_ms = float(rows[0][1])
    assert ring_ms < 100, f"180 Ringing took {ring_ms} ms on the wire"
    assert (hook["outcome"], hook["exit_code"]) == ("timeout", None)
    assert 0.9 < hook["seconds"] < 3.0
