"""``microsip``: MicroSIP.exe's command line, verbatim, against the engine.

Behaves like MicroSIP's second instance: the arguments (program name excluded)
are forwarded to the running engine, which runs them exactly as MicroSIP would.
``/exit`` stops the engine; ``/answer`` and ``/hangupall`` with no engine running
do nothing; anything else with no engine running starts one in the background
(with the ini the socket was found by, see ``engine/control/locate.py``) and then
runs the command, so ``microsip 5551234`` works.

Only leading ``--config INI`` / ``--control PATH`` (and ``--help``, ``--version``) are
ours; everything after them belongs to MicroSIP's grammar. The
module imports only the standard library, the pure grammar and the control client
(no pjsua2, no numpy) so that it starts fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..control.client import ControlClient, ControlError, EngineNotRunning, RemoteError
from ..control.locate import Located, locate
from ..errors import EngineError
from ..grammar import join_argv, launcher_action, parse_command_line

START_TIMEOUT = 15.0
#: How long ``/exit`` waits for the engine to finish stopping (hang-ups, un-REGISTER).
EXIT_TIMEOUT = 10.0


USAGE = """\
usage: microsip [--config INI] [--control PATH] <MicroSIP command line>
       microsip --help | -h | --version

MicroSIP.exe's arguments, forwarded to the running engine (started in the
background with the ini's settings when none runs):

  microsip 5551234                  dial a number (or a name, or sip:user@host)
  microsip 123,456                  dial, then DTMF 456 one second after the answer
  microsip 101 Hello there          send a SIP MESSAGE instead
  microsip /answer                  /hangupall /hangupincoming /hangupcalling
  microsip /dtmf:12#                /transfer:200   /account:2   /password:x
  microsip msip:micmute             msip:hold msip:transfer_200 msip:speakup ...
  microsip /exit                    hang up, un-REGISTER, stop the engine

The engine is found at --control, else $MICROSIP_CONTROL, else [Engine]
controlSocket of the ini (--config, else $MICROSIP_INI, else
~/.config/microsip-engine/microsip.ini), else the default socket.
Exit status: 0 done, 1 refused by the engine, 2 malformed command line.
State, events and history: microsip-engine status | events | history.
"""


def _fail(message: str, code: int = 1) -> int:
    print(f"microsip: {message}", file=sys.stderr)
    return code


def _running(path: str) -> ControlClient | None:
    client = ControlClient(path, timeout=30.0)
    try:
        client.request("help", command="status")
    except EngineNotRunning:
        client.close()
        return None
    return client


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    path = Path(base) / "microsip-engine"
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_engine(where: Located) -> ControlClient:
    """Start ``microsip-engine serve`` in the background, with the ini the socket was
    found by (so the engine that answers is the one that ini describes), and wait
    for its socket."""
    path = where.path
    # Supervised: back by itself after a crash, on the same socket.
    argv = [sys.executable, "-m", "engine", "serve", "--supervise", "--control", path]
    if where.config is not None:
        argv += ["--config", where.config]
    log_path = _state_dir() / "engine.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-5:]
            raise EngineError(
                f"the engine did not start (exit {proc.returncode}); see {log_path}:\n"
                + "\n".join(tail),
                code="start_failed",
            )
        client = _running(path)
        if client is not None:
            return client
        time.sleep(0.05)
    raise EngineError(f"the engine did not answer within {START_TIMEOUT:.0f} s; see {log_path}")


def stop_engine(client: ControlClient) -> int:
    """Send ``exit`` and return once the engine has stopped (it closes its control
    socket after hanging up and un-REGISTERing), so ``microsip /exit; microsip 123``
    starts a fresh engine instead of handing the call to one that is going away."""
    with client.events(["engine_stopping"], idle_timeout=EXIT_TIMEOUT) as stream:
        client.request("exit")
        try:
            for _event in stream:  # ends when the engine closes the connection
                pass
        except ControlError as exc:
            if exc.code == "timeout":
                return _fail(f"the engine did not stop within {EXIT_TIMEOUT:.0f} s")
            if exc.code != "disconnected":
                raise
    return 0


def _options(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Our own ``--config INI`` / ``--control PATH`` (also ``=``), leading only: what
    follows is MicroSIP's command line, untouched."""
    found: dict[str, str] = {}
    while argv:
        name, sep, value = argv[0].partition("=")
        if name not in ("--config", "--control") or name in found:
            break
        if not sep:
            if len(argv) < 2:
                raise EngineError(f"{name} needs a value", code="grammar_error")
            value, argv = argv[1], argv[1:]
        found[name] = value
        argv = argv[1:]
    return found, argv


def run(argv: Sequence[str]) -> int:
    first = argv[0] if argv else ""
    if first in ("--help", "-h"):  # never a dial target: nobody calls "--help"
        print(USAGE, end="")
        return 0
    if first == "--version":
        print(f"microsip (microsip-engine {__version__})")
        return 0
    try:
        options, rest = _options(list(argv))
        line = join_argv(rest)
        what = launcher_action(line)
        where = locate(options.get("--control"), options.get("--config"))
        path = where.path
        if what != "reset":
            parse_command_line(line)  # a malformed line fails here, engine or not
        client = _running(path)
        if what == "exit":
            return 0 if client is None else stop_engine(client)
        if what == "reset":
            return _fail("/reset is not supported: the engine never deletes microsip.ini", 2)
        if client is None:
            if what in ("noop_if_not_running",):
                return 0
            client = start_engine(where)
            if what == "minimized":
                return 0
        elif what == "minimized":
            return 0
        client.request("commandline", line=line)
        return 0
    except RemoteError as exc:
        return _fail(exc.message)
    except (ControlError, EngineError) as exc:
        return _fail(exc.message, 2 if exc.code == "grammar_error" else 1)


def main(argv: Sequence[str] | None = None) -> int:
    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
