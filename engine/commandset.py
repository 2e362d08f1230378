"""The engine's commands, registered once in the one :class:`CommandRegistry`.

The control socket, the ``microsip`` CLI (through the socket) and the WM_COPYDATA
request all reach the engine through these; each is a thin wrapper over a
:class:`CallManager` method.
"""

from __future__ import annotations

import base64
import binascii
import queue
import threading
from typing import TYPE_CHECKING, Any

import structlog

from .commands import CommandError, CommandRegistry, Param
from .errors import EngineError

if TYPE_CHECKING:
    from .manager import CallManager


# MicroSIP's grammar, its executor and the WM_COPYDATA decoder load on first use:
# an idle service does not need them (~1 MB resident).
def run_command_line(m: CallManager, line: str) -> list[dict[str, Any]]:
    from .actions import run_command_line as run

    return run(m, line)


def hangup_all(m: CallManager) -> dict[str, Any]:
    from .actions import hangup_all as run

    return run(m)


log = structlog.get_logger("engine.commands")


class _Queued:
    """Runs queued MicroSIP command lines (WM_COPYDATA ``dwData=2``) in order."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager
        self.queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="copydata-queue", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            line = self.queue.get()
            try:
                run_command_line(self.manager, line)
            except EngineError as exc:
                log.error("queued_command_failed", code=exc.code, error=exc.message)
            except Exception as exc:
                log.exception("queued_command_crashed", error=repr(exc))


def _numbers(text: str) -> list[int] | None:
    """``"1,2"`` → [1, 2]; empty → None (the command's default)."""
    if not text.strip():
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise CommandError(f"calls must be numbers separated by commas, not {text!r}") from None


#: What each parameter name means, in every command that has it (``help`` shows it).
PARAM_HELP = {
    "account": "account number N of [AccountN] (0: the local account; default: the active one)",
    "call": "call number, as `calls` lists them (default where optional: the current call)",
    "calls": "call numbers separated by commas, e.g. 1,2",
    "code": "SIP status code to answer or end with, e.g. 486",
    "digits": "DTMF digits: 0-9 * # A-D",
    "dwData": "COPYDATASTRUCT.dwData: 1 run now, 2 queue",
    "hold": "true holds, false resumes; absent toggles",
    "line": "a MicroSIP command line, as after MicroSIP.exe",
    "loop": "repeat the file until stopped (default true)",
    "method": "DTMF method: 0 auto, 1 in-band, 2 RFC 2833, 3 SIP INFO (default DTMFMethod)",
    "mic_muted": "true mutes the microphone, false unmutes it",
    "mic_volume": "microphone volume 0-100 (saved as volumeInput)",
    "name": "AA, DND or FWD",
    "on": "true switches it on, false off",
    "payload_b64": "the COPYDATASTRUCT payload (UTF-16LE, NUL-terminated), base64",
    "reason": "SIP reason phrase to send with code",
    "speaker_muted": "true mutes the speaker, false unmutes it",
    "speaker_volume": "speaker volume 0-100 (saved as volumeOutput)",
    "target": "a number, a name or a SIP URI (sip:user@host)",
    "text": "the message text",
    "to_call": "the call whose party the other one is connected to",
    "wav": "path of a WAV file",
}


def build_registry(m: CallManager) -> CommandRegistry:
    """Every engine command, bound to ``m``."""
    reg = CommandRegistry(param_help=PARAM_HELP)
    queued = _Queued(m)

    def call_dict(snap: Any) -> dict[str, Any]:
        return dict(snap.to_dict())

    reg.register("status", m.status, help="Engine, accounts, calls and capacity.")
    reg.register(
        "calls", lambda: [c.to_dict() for c in m.calls()], help="The calls and their state."
    )
    reg.register(
        "accounts",
        lambda: [a.to_dict() for a in m.accounts()],
        help="The accounts and their registration state.",
    )
    reg.register(
        "dial",
        lambda target, account=None: call_dict(m.dial(target, account)),
        help="Call a number or SIP URI (account: default the active one).",
        params={"target": Param(str, help="number or SIP URI"), "account": int | None},
    )
    reg.register(
        "answer",
        lambda call=None, code=200: call_dict(m.answer(call, code)),
        help="Answer a call (default: the first ringing inbound call).",
        params={"call": int | None, "code": int | None},
    )
    reg.register(
        "hangup",
        lambda call, code=0, reason="": m.hangup(call, code, reason),
        help="End a call: BYE when answered, CANCEL when calling, code when ringing.",
        params={"call": int, "code": int | None, "reason": str | None},
    )
    reg.register(
        "hangup_all",
        lambda: hangup_all(m),
        help="Hang up every call except ringing inbound ones (MicroSIP /hangupall).",
    )
    reg.register(
        "hold",
        lambda call=None, hold=None: {"held": m.hold(call, hold)},
        help="Hold (hold=true), resume (false) or toggle the call (default: current).",
        params={"call": int | None, "hold": bool | None},
    )
    reg.register(
        "transfer",
        lambda target, call=None: m.transfer(target, call),
        help="Blind transfer (REFER) to a number or SIP URI.",
        params={"target": str, "call": int | None},
    )
    reg.register(
        "transfer_attended",
        lambda call, to_call: m.transfer_attended(call, to_call),
        help="Attended transfer: connect call's party with to_call's (REFER/Replaces).",
        params={"call": int, "to_call": int},
    )
    reg.register(
        "conference",
        lambda calls="": {"conference": m.conference(_numbers(calls))},
        help="Merge calls on the local bridge (calls: '1,2'; default every answered one).",
        params={"calls": str | None},
    )
    reg.register(
        "split",
        lambda calls="": {"conference": m.split(_numbers(calls))},
        help="Take calls (default: all) out of the conference.",
        params={"calls": str | None},
    )
    reg.register(
        "audio",
        lambda **kw: m.audio_levels(**kw),
        help="Mute/unmute microphone or speaker, set volumes (0-100, saved).",
        params={
            "mic_muted": bool | None,
            "speaker_muted": bool | None,
            "mic_volume": int | None,
            "speaker_volume": int | None,
        },
    )
    reg.register(
        "dtmf",
        lambda digits, call=None, method=None: {"method": m.send_dtmf(digits, call, method)},
        help="Send DTMF (method: 0 auto, 1 in-band, 2 RFC 2833, 3 SIP INFO).",
        params={"digits": str, "call": int | None, "method": int | None},
    )
    reg.register(
        "message",
        lambda target, text, account=None: m.send_message(target, text, account),
        help="Send a SIP MESSAGE.",
        params={"target": str, "text": str, "account": int | None},
    )
    reg.register(
        "play",
        lambda call, wav, loop=True: m.play(call, wav, loop),
        help="Play a WAV file into a call.",
        params={"call": int, "wav": str, "loop": bool | None},
    )
    reg.register(
        "record",
        lambda call, wav=None: {"path": m.record(call, wav)},
        help="Record a call (both directions mixed) to a WAV file "
        "(default: MicroSIP's file name under recordingPath).",
        params={"call": int, "wav": str | None},
    )
    reg.register(
        "toggle",
        lambda name, on: m.set_toggle(name, on),
        help="Switch MicroSIP's AA (auto-answer), DND or FWD (forwarding); saved.",
        params={"name": Param(str, help="AA, DND or FWD"), "on": bool},
    )
    reg.register(
        "stop_recording",
        lambda call: m.stop_recording(call),
        help="Stop recording a call; the WAV is complete afterwards.",
        params={"call": int},
    )
    reg.register(
        "switch_account",
        lambda account: m.switch_account(account) and None,
        help="Register [AccountN] instead of the active account (saves accountId).",
        params={"account": int},
    )
    reg.register(
        "commandline",
        lambda line: run_command_line(m, line),
        help="Run a MicroSIP command line, e.g. '5551234' or '/hangupall'.",
        params={"line": str},
    )

    def copydata(dwData: int, payload_b64: str) -> dict[str, Any]:
        try:
            payload = base64.b64decode(payload_b64, validate=True)
        except (binascii.Error, ValueError):
            raise CommandError("copydata: payload_b64 is not valid base64") from None
        from .copydata import decode_copydata
        from .grammar import parse_command_line

        request = decode_copydata(dwData, payload)
        if request.mode == "queued":
            queued.queue.put(request.text)
            # Not the text itself: it may carry /password:.
            return {
                "queued": True,
                "actions": [a.to_dict() for a in parse_command_line(request.text)],
            }
        return {"queued": False, "results": run_command_line(m, request.text)}

    reg.register(
        "copydata",
        copydata,
        help="A WM_COPYDATA message: dwData 1 runs now and replies after, 2 queues.",
        params={"dwData": int, "payload_b64": str},
    )
    reg.register("exit", m.request_exit, help="Stop the engine (hang up, un-REGISTER).")
    return reg
