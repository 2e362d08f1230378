"""The engine's commands: one table, registered once in the one :class:`CommandRegistry`.

Every channel reaches the engine through these: the control socket, TCP control,
the ``microsip`` CLI (through the socket), WM_COPYDATA (``copydata``) and MicroSIP's
command line, whose parsed actions :mod:`engine.actions` maps onto commands of this
table. A command is a :class:`CallManager` method when that already is the command,
or a method of :class:`EngineCommands` when it needs more (a JSON result, MicroSIP's
hangup groups and dial). Adding a command is one method and one row in its
area's table, which :func:`command_table` joins.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .commands import CommandError, CommandFunc, CommandRegistry, Param, ParamSpec
from .dialplan import format_number
from .errors import EngineError, NotFoundError
from .events import CallDirection, CallStateName
from .linequeue import LineQueue

if TYPE_CHECKING:
    from .manager import CallManager
    from .state import CallSnapshot

RINGING = (CallStateName.INCOMING, CallStateName.EARLY)
UNANSWERED_OUT = (CallStateName.CALLING, CallStateName.EARLY, CallStateName.CONNECTING)
DEVICES = ("mic", "speaker")
#: What ``post_dial`` may hold: DTMF digits, and commas between the groups.
_POST_DIAL_CHARS = frozenset("0123456789*#ABCDabcd,")


def _numbers(text: str) -> list[int] | None:
    """``"1,2"`` → [1, 2]; empty → None (the command's default)."""
    if not text.strip():
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise CommandError(f"calls must be numbers separated by commas, not {text!r}") from None


def _device(command: str, device: str) -> str:
    if device not in DEVICES:
        raise CommandError(f"{command}: device must be 'mic' or 'speaker', not {device!r}")
    return device


def _post_dial(text: str) -> tuple[str, ...]:
    """``"45,,6"`` → ("45", "", "6"): the groups sent after the answer (an empty
    group is one more pause); trailing empty groups are dropped, as on a command line."""
    bad = sorted(set(text) - _POST_DIAL_CHARS)
    if bad:
        raise CommandError(
            f"dial_number: post_dial may hold DTMF digits (0-9 * # A-D) and commas, not {bad[0]!r}"
        )
    groups = text.split(",") if text else []
    while groups and not groups[-1]:
        groups.pop()
    return tuple(groups)


class EngineCommands:
    """The commands that are more than a :class:`CallManager` method; each public
    method is one command (see :func:`command_table`). Owns the queue of
    WM_COPYDATA ``dwData=2`` lines; :meth:`close` stops it."""

    def __init__(self, manager: CallManager, registry: CommandRegistry) -> None:
        self.m = manager
        self.registry = registry
        self.queue = LineQueue(self.commandline)

    def close(self) -> None:
        self.queue.close()

    # -- state ------------------------------------------------------------------

    def calls(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.m.calls()]

    def accounts(self) -> list[dict[str, Any]]:
        return [a.to_dict() for a in self.m.accounts()]

    # -- calls ------------------------------------------------------------------

    def dial(self, target: str, account: int | None = None) -> dict[str, Any]:
        return self.m.dial(target, account).to_dict()

    def dial_number(self, target: str, post_dial: str = "") -> dict[str, Any]:
        """MicroSIP's dial: the active account's dialingPrefix and dialPlan, then the
        call, deferred until that account is registered."""
        groups = _post_dial(post_dial)
        index = self.m.default_account()
        acc = self.m.account_config(index)
        number = format_number(
            target,
            dialing_prefix=acc.dialing_prefix,
            dial_plan=acc.dial_plan,
            is_local=index == 0 or "@" in target or target.startswith("sip"),
        )
        if number is None:
            raise EngineError(
                f"{target!r} does not match the dial plan of [Account{index}]",
                code="dialplan_mismatch",
            )
        call = self.m.dial_when_registered(number, index, groups)
        if call is None:
            return {"deferred": True, "target": number, "account": index}
        return {"call": call.call, "remote_uri": call.remote_uri}

    def answer(self, call: int | None = None, code: int = 200) -> dict[str, Any]:
        return self.m.answer(call, code).to_dict()

    def hangup_all(self) -> dict[str, Any]:
        """Every call except ringing inbound ones (MicroSIP's ``/hangupall``)."""
        return self._hangup_each(
            lambda c: (
                c.state != CallStateName.DISCONNECTED
                and not (c.direction == CallDirection.IN and c.state in RINGING)
            )
        )

    def hangup_incoming(self) -> dict[str, Any]:
        """Ringing inbound calls (MicroSIP's ``/hangupincoming``)."""
        return self._hangup_each(lambda c: c.direction == CallDirection.IN and c.state in RINGING)

    def hangup_calling(self) -> dict[str, Any]:
        """Outbound calls not answered yet (MicroSIP's ``/hangupcalling``)."""
        return self._hangup_each(
            lambda c: c.direction == CallDirection.OUT and c.state in UNANSWERED_OUT
        )

    def _hangup_each(self, which: Callable[[CallSnapshot], bool]) -> dict[str, Any]:
        """Hang up each call ``which`` picks; one that ended meanwhile does not stop
        the others."""
        ended = []
        for number in [c.call for c in self.m.calls() if which(c)]:
            try:
                self.m.hangup(number)
            except NotFoundError:
                continue
            ended.append(number)
        return {"hungup": ended}

    def hold(self, call: int | None = None, hold: bool | None = None) -> dict[str, Any]:
        return {"held": self.m.hold(call, hold)}

    def conference(self, calls: str = "") -> dict[str, Any]:
        return {"conference": self.m.conference(_numbers(calls))}

    def split(self, calls: str = "") -> dict[str, Any]:
        return {"conference": self.m.split(_numbers(calls))}

    def dtmf(
        self, digits: str, call: int | None = None, method: int | None = None
    ) -> dict[str, Any]:
        return {"method": self.m.send_dtmf(digits, call, method)}

    def record(self, call: int, wav: str | None = None) -> dict[str, Any]:
        return {"path": self.m.record(call, wav)}

    # -- audio ------------------------------------------------------------------

    def toggle_mute(self, device: str) -> dict[str, Any]:
        return self.m.toggle_mute(_device("toggle_mute", device))

    def volume_step(self, device: str, step: int) -> dict[str, Any]:
        return self.m.volume_step(_device("volume_step", device), step)

    # -- accounts -----------------------------------------------------------------

    def switch_account(self, account: int) -> dict[str, Any]:
        snap = self.m.switch_account(account)
        return {"account": account, "uri": snap.uri if snap else ""}

    def save_password(self, account: int, password: str) -> None:
        self.m.save_password(account, password)

    # -- MicroSIP's command line and WM_COPYDATA ---------------------------------

    def noop(self) -> None:
        """Nothing to do: what only MicroSIP's window had (``msip:minimize``)."""

    def reset(self) -> None:
        raise EngineError(
            "/reset (deleting the settings) is not supported yet", code="not_supported"
        )

    def commandline(self, line: str) -> list[dict[str, Any]]:
        # The grammar and its executor load on first use: an idle service does not
        # need them (~1 MB resident).
        from .actions import run_command_line

        return run_command_line(self.registry, line)

    def copydata(self, dwData: int, payload_b64: str) -> dict[str, Any]:
        try:
            payload = base64.b64decode(payload_b64, validate=True)
        except (binascii.Error, ValueError):
            raise CommandError("copydata: payload_b64 is not valid base64") from None
        from .copydata import decode_copydata
        from .grammar import parse_command_line

        request = decode_copydata(dwData, payload)
        if request.mode == "queued":
            actions = parse_command_line(request.text)  # a malformed line is refused now
            self.queue.put(request.text)
            # Not the text itself: it may carry /password:.
            return {"queued": True, "actions": [a.to_dict() for a in actions]}
        return {"queued": False, "results": self.commandline(request.text)}


@dataclasses.dataclass(frozen=True)
class Row:
    """One command of the table."""

    name: str
    func: CommandFunc
    help: str
    params: Mapping[str, ParamSpec] = dataclasses.field(default_factory=dict)


#: What each parameter name means, in every command that has it (``help`` shows it).
PARAM_HELP = {
    "account": "account number N of [AccountN] (0: the local account; default: the active one)",
    "call": "call number, as `calls` lists them (default where optional: the current call)",
    "calls": "call numbers separated by commas, e.g. 1,2",
    "code": "SIP status code to answer or end with, e.g. 486",
    "device": "mic or speaker",
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
    "password": "the account's SIP password (never logged nor echoed)",
    "payload_b64": "the COPYDATASTRUCT payload (UTF-16LE, NUL-terminated), base64",
    "post_dial": "DTMF groups sent after the answer, separated by commas (an empty group "
    "is one more pause), e.g. 45,,6",
    "reason": "SIP reason phrase to send with code",
    "speaker_muted": "true mutes the speaker, false unmutes it",
    "speaker_volume": "speaker volume 0-100 (saved as volumeOutput)",
    "step": "volume clicks of 10: positive louder, negative quieter (0-100, saved)",
    "target": "a number, a name or a SIP URI (sip:user@host)",
    "text": "the message text",
    "to_call": "the call whose party the other one is connected to",
    "wav": "path of a WAV file",
}


def command_table(m: CallManager, c: EngineCommands) -> list[Row]:
    """Every command, one row each, in ``help``'s order: data, not logic (``help``
    lists them, docs/control-protocol.md documents them). The rows are grouped by
    area so each group reads at a glance; a new command is one row in its group."""
    return [
        *_state_and_dial_rows(m, c),
        *_in_call_rows(m, c),
        *_audio_rows(m, c),
        *_settings_rows(m, c),
        *_microsip_rows(m, c),
    ]


def _state_and_dial_rows(m: CallManager, c: EngineCommands) -> list[Row]:
    """The engine's state, placing, answering and ending calls."""
    return [
        Row("status", m.status, "Engine, accounts, calls and capacity."),
        Row("calls", c.calls, "The calls and their state."),
        Row("accounts", c.accounts, "The accounts and their registration state."),
        Row(
            "dial",
            c.dial,
            "Call a number or SIP URI (account: default the active one).",
            {"target": Param(str, help="number or SIP URI"), "account": int | None},
        ),
        Row(
            "dial_number",
            c.dial_number,
            "Dial as MicroSIP's command line does: the active account's dialingPrefix "
            "and dialPlan, deferred until it is registered.",
            {"target": str, "post_dial": str | None},
        ),
        Row(
            "answer",
            c.answer,
            "Answer a call (default: the first ringing inbound call).",
            {"call": int | None, "code": int | None},
        ),
        Row(
            "hangup",
            m.hangup,
            "End a call: BYE when answered, CANCEL when calling, code when ringing.",
            {"call": int, "code": int | None, "reason": str | None},
        ),
        Row(
            "hangup_all",
            c.hangup_all,
            "Hang up every call except ringing inbound ones (MicroSIP /hangupall).",
        ),
        Row(
            "hangup_incoming",
            c.hangup_incoming,
            "Reject the ringing inbound calls (MicroSIP /hangupincoming).",
        ),
        Row(
            "hangup_calling",
            c.hangup_calling,
            "Hang up the outbound calls not answered yet (MicroSIP /hangupcalling).",
        ),
    ]


def _in_call_rows(m: CallManager, c: EngineCommands) -> list[Row]:
    """What is done to calls in progress: hold, transfer, conference."""
    return [
        Row(
            "hold",
            c.hold,
            "Hold (hold=true), resume (false) or toggle the call (default: current).",
            {"call": int | None, "hold": bool | None},
        ),
        Row(
            "transfer",
            m.transfer,
            "Blind transfer (REFER) to a number or SIP URI.",
            {"target": str, "call": int | None},
        ),
        Row(
            "transfer_attended",
            m.transfer_attended,
            "Attended transfer: connect call's party with to_call's (REFER/Replaces).",
            {"call": int, "to_call": int},
        ),
        Row(
            "conference",
            c.conference,
            "Merge calls on the local bridge (calls: '1,2'; default every answered one).",
            {"calls": str | None},
        ),
        Row(
            "split",
            c.split,
            "Take calls (default: all) out of the conference.",
            {"calls": str | None},
        ),
    ]


def _audio_rows(m: CallManager, c: EngineCommands) -> list[Row]:
    """Microphone and speaker, DTMF and SIP MESSAGE, playing into and recording calls."""
    return [
        Row(
            "audio",
            m.audio_levels,
            "Mute/unmute microphone or speaker, set volumes (0-100, saved).",
            {
                "mic_muted": bool | None,
                "speaker_muted": bool | None,
                "mic_volume": int | None,
                "speaker_volume": int | None,
            },
        ),
        Row(
            "toggle_mute",
            c.toggle_mute,
            "Mute the microphone or the speaker if it is not, else unmute it.",
            {"device": str},
        ),
        Row(
            "volume_step",
            c.volume_step,
            "Turn the microphone or speaker volume up or down by steps of 10 (saved).",
            {"device": str, "step": int},
        ),
        Row(
            "dtmf",
            c.dtmf,
            "Send DTMF (method: 0 auto, 1 in-band, 2 RFC 2833, 3 SIP INFO).",
            {"digits": str, "call": int | None, "method": int | None},
        ),
        Row(
            "message",
            m.send_message,
            "Send a SIP MESSAGE.",
            {"target": str, "text": str, "account": int | None},
        ),
        Row(
            "play",
            m.play,
            "Play a WAV file into a call.",
            {"call": int, "wav": str, "loop": bool | None},
        ),
        Row(
            "record",
            c.record,
            "Record a call (both directions mixed) to a WAV file "
            "(default: MicroSIP's file name under recordingPath).",
            {"call": int, "wav": str | None},
        ),
        Row(
            "stop_recording",
            m.stop_recording,
            "Stop recording a call; the WAV is complete afterwards.",
            {"call": int},
        ),
    ]


def _settings_rows(m: CallManager, c: EngineCommands) -> list[Row]:
    """MicroSIP's buttons and account settings, saved to the ini."""
    return [
        Row(
            "toggle",
            m.set_toggle,
            "Switch MicroSIP's AA (auto-answer), DND or FWD (forwarding); saved.",
            {"name": Param(str, help="AA, DND or FWD"), "on": bool},
        ),
        Row(
            "switch_account",
            c.switch_account,
            "Register [AccountN] instead of the active account (saves accountId).",
            {"account": int},
        ),
        Row(
            "save_password",
            c.save_password,
            "Store the password of [AccountN] in the ini; re-register it if active.",
            {"account": int, "password": str},
        ),
        Row(
            "password_override",
            m.override_password,
            "Register the active account with this password, kept in memory only.",
            {"password": str},
        ),
    ]


def _microsip_rows(m: CallManager, c: EngineCommands) -> list[Row]:
    """MicroSIP's command line, WM_COPYDATA and its window verbs."""
    return [
        Row(
            "commandline",
            c.commandline,
            "Run a MicroSIP command line, e.g. '5551234' or '/hangupall'.",
            {"line": str},
        ),
        Row(
            "copydata",
            c.copydata,
            "A WM_COPYDATA message: dwData 1 runs now and replies after, 2 queues.",
            {"dwData": int, "payload_b64": str},
        ),
        Row("noop", c.noop, "Do nothing (MicroSIP's window verbs, e.g. msip:minimize)."),
        Row("reset", c.reset, "Delete the settings (MicroSIP /reset): not supported yet."),
        Row("exit", m.request_exit, "Stop the engine (hang up, un-REGISTER)."),
    ]


def build_registry(m: CallManager) -> CommandRegistry:
    """Every engine command, bound to ``m``. ``close()`` the registry when the
    engine stops: it ends the WM_COPYDATA queue's worker."""
    registry = CommandRegistry(param_help=PARAM_HELP)
    commands = EngineCommands(m, registry)
    for row in command_table(m, commands):
        registry.register(row.name, row.func, help=row.help, params=row.params)
    registry.on_close(commands.close)
    return registry
