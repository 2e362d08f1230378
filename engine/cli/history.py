"""``microsip-engine history [--json] [--limit N] [--db PATH] [--config INI]``.

Reads the call history database directly, so it works whether or not an engine is
running. The database is: ``--db``; else the one named by ``--config``'s
``[Engine] historyPath`` / ``dataDir``; else the one the running engine writes (it is
asked over its control socket, ``--control`` or the default); else, with no engine
answering, the one the configuration names (``$MICROSIP_INI``, the user file or the
embedded default; else ``$XDG_DATA_HOME/microsip-engine/history.sqlite3``), and a
note on stderr says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

_TYPES = {0: "out", 1: "in", 2: "missed"}


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``history`` sub-command (its handler is :func:`run`)."""
    parser = subparsers.add_parser(
        "history", help="print the call history (reads the database, no engine needed)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    parser.add_argument(
        "--limit", type=_positive, default=50, metavar="N", help="newest N calls (default 50)"
    )
    parser.add_argument("--db", help="history database (default: from the configuration)")
    parser.add_argument("--config", help="microsip.ini used to find the database")
    parser.add_argument("--control", help="control socket of the engine to ask for it")
    parser.set_defaults(func=run)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _database(args: argparse.Namespace) -> Path:
    from ..config import load_config
    from ..history import default_history_path

    if args.db:
        return Path(args.db)
    explicit = getattr(args, "config", None)
    if not explicit:
        running = _engine_history(getattr(args, "control", None))
        if running is not None:
            return running
    path = default_history_path(load_config(explicit).engine)
    if not explicit:
        print(
            f"no engine answers on its control socket: reading {path} "
            "(the history the configuration names)",
            file=sys.stderr,
        )
    return path


def _engine_history(control: str | None) -> Path | None:
    """The database the running engine writes, or None when no engine answers."""
    from ..control import ControlClient, ControlError

    try:
        with ControlClient(control, timeout=3.0) as client:
            where = client.request("status").get("history")
    except ControlError:
        return None
    return Path(where) if isinstance(where, str) and where else None


def run(args: argparse.Namespace) -> int:
    """Print the newest ``args.limit`` calls; 0 on success (also when there are none)."""
    import sqlite3  # here: the service builds this parser too and needs no SQLite yet

    from ..errors import EngineError
    from ..history import read_history

    try:
        path = _database(args)
    except EngineError as exc:
        print(f"microsip-engine: {exc.message}", file=sys.stderr)
        return 2
    try:
        rows = read_history(path, args.limit)
    except FileNotFoundError:
        rows = []
        if not args.json:
            print(f"no call history yet ({path})", file=sys.stderr)
    except sqlite3.Error as exc:
        print(f"microsip-engine: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows)
    return 0


def _when(unix: Any) -> str:
    if not isinstance(unix, int | float):
        return "-"
    return datetime.datetime.fromtimestamp(unix).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: Any) -> str:
    s = int(seconds or 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _print_table(rows: list[dict[str, Any]]) -> None:
    lines = [("TIME", "TYPE", "NUMBER", "NAME", "DURATION", "SIP")]
    for row in rows:
        code = row.get("sip_code") or ""
        status = f"{code} {row.get('sip_reason') or ''}".strip()
        lines.append(
            (
                _when(row.get("start_time") or row.get("time")),
                _TYPES.get(row.get("type") or 0, str(row.get("type"))),
                str(row.get("number", "")),
                str(row.get("name", "")),
                _duration(row.get("duration")),
                status,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        print("  ".join([*cells, line[-1]]).rstrip())
