"""Call history in SQLite: MicroSIP 3.22's ``call_log`` table plus integrator columns.

MicroSIP 3.22 keeps its call log in SQLite as ``call_log(id, callId, number, name,
type, time, duration, info)`` and keeps 1000 rows. Its values, from its source:
``type`` is ``MSIP_CALL_OUT`` 0, ``MSIP_CALL_IN`` 1 or ``MSIP_CALL_MISS`` 2 (an
inbound call logged as missed becomes 1 once answered); ``time`` is the Unix time
the call started and ``duration`` the whole seconds it was connected; ``number`` is
the remote user part alone (what MicroSIP shows and redials: ``+4930123456``, not
``+4930123456@127.0.0.1``; the host only when the URI has no user); ``info`` is the
status text of a call that did not end with 200.

This table adds, for integrators: ``direction`` (``in``/``out``), ``account``,
``sip_code`` and ``sip_reason`` (the final SIP status), ``remote_uri``, and
``start_time``/``answer_time``/``end_time`` as Unix times with fractions
(``answer_time`` NULL when never answered). An existing MicroSIP database gains
the extra columns on first use; rows an older engine wrote with ``user@host``
numbers are rewritten to the user part (``PRAGMA user_version`` 1), the URI being
in ``remote_uri`` already.

The manager calls :meth:`CallHistory.handle` synchronously for every event *before*
publishing it: :meth:`~CallHistory.observe` writes a ``status='open'`` row when a
call starts (and notes its answer), and :meth:`~CallHistory.record_end` completes
that row (``status='ended'``) and commits before it returns, so once anyone has
seen a call start or end, its row is on disk even if the engine is killed right
after. A call in progress when the engine crashed is not lost: while rows are
open, a marker file ``<database>.open-<pid>`` exists, and the next engine that
finds the marker of a dead process marks that process's open rows
``status='interrupted'`` (their real start time kept, ``sip_reason``
``interrupted``). Without a marker nothing is read at start: SQLite still loads
with the first call. Nothing here ever raises into the caller: a
broken or locked database is logged (``history_open_failed``,
``history_write_failed``) and the engine keeps running.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ._lazy import LazyModule
from .config import EngineSettings
from .events import CallState, CallStateName, Event, IncomingCall
from .sipuri import host_port

if TYPE_CHECKING:
    import sqlite3
else:  # the SQLite library (~1 MB resident) loads with the first ended call
    sqlite3 = LazyModule("sqlite3")

__all__ = [
    "DEFAULT_MAX_ROWS",
    "TYPE_IN",
    "TYPE_MISSED",
    "TYPE_OUT",
    "CallHistory",
    "default_history_path",
    "read_history",
]

log = structlog.get_logger("engine.history")

#: MicroSIP keeps this many calls.
DEFAULT_MAX_ROWS = 1000
TYPE_OUT, TYPE_IN, TYPE_MISSED = 0, 1, 2
FILE_NAME = "history.sqlite3"

_CREATE = """
CREATE TABLE IF NOT EXISTS call_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    callId TEXT NOT NULL,
    number TEXT NOT NULL,
    name TEXT NOT NULL,
    type INTEGER,
    time INTEGER,
    duration INTEGER,
    info TEXT NOT NULL
)
"""
#: Integrator columns (added to a MicroSIP database that lacks them).
_EXTRA_COLUMNS: Mapping[str, str] = {
    "direction": "TEXT NOT NULL DEFAULT ''",
    "account": "INTEGER NOT NULL DEFAULT 0",
    "sip_code": "INTEGER NOT NULL DEFAULT 0",
    "sip_reason": "TEXT NOT NULL DEFAULT ''",
    "remote_uri": "TEXT NOT NULL DEFAULT ''",
    "start_time": "REAL",
    "answer_time": "REAL",
    "end_time": "REAL",
    # '' for rows written by MicroSIP or older engines, else open/ended/interrupted.
    "status": "TEXT NOT NULL DEFAULT ''",
    "engine_pid": "INTEGER NOT NULL DEFAULT 0",
}
_COLUMNS = (
    "callId",
    "number",
    "name",
    "type",
    "time",
    "duration",
    "info",
    *_EXTRA_COLUMNS,
)
_INSERT = f"INSERT INTO call_log ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_UPDATE = f"UPDATE call_log SET {', '.join(c + '=?' for c in _COLUMNS)} WHERE id=?"
_ANSWERED = "UPDATE call_log SET type=?, answer_time=? WHERE id=? AND status='open'"
_INTERRUPTED = (
    "UPDATE call_log SET status='interrupted', sip_reason='interrupted', info=? "
    "WHERE status='open' AND engine_pid=?"
)
OPEN, ENDED, INTERRUPTED = "open", "ended", "interrupted"
INTERRUPTED_INFO = "interrupted: the engine stopped during the call"
# Everything but the newest ``max_rows`` rows, in the same transaction as the insert.
_TRIM = (
    "DELETE FROM call_log WHERE id IN (SELECT id FROM call_log ORDER BY id DESC LIMIT -1 OFFSET ?)"
)


def default_history_path(
    engine: EngineSettings | None = None, env: Mapping[str, str] = os.environ
) -> Path:
    """``historyPath``, else ``<dataDir>/history.sqlite3``, else
    ``$XDG_DATA_HOME/microsip-engine/history.sqlite3`` (default ``~/.local/share``)."""
    if engine is not None and engine.history_path:
        return Path(engine.history_path).expanduser()
    if engine is not None and engine.data_dir:
        return Path(engine.data_dir).expanduser() / FILE_NAME
    base = env.get("XDG_DATA_HOME", "")
    if not base or not os.path.isabs(base):  # the XDG spec says to ignore relative paths
        home = env.get("HOME") or str(Path.home())
        base = os.path.join(home, ".local", "share")
    return Path(base) / "microsip-engine" / FILE_NAME


def _private_dirs(directory: Path) -> None:
    """Create ``directory`` and any missing parents with mode 0700 (a call log is
    personal data)."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """Open (creating) the database in WAL mode with the schema in place."""
    _private_dirs(path.parent)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # -wal/-shm inherit its mode
    db = sqlite3.connect(
        str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        # WAL + synchronous=NORMAL: a commit appends the transaction to the -wal file
        # with write() but skips fsync(). The bytes are then in the kernel's page
        # cache, which outlives the process: a SIGKILL right after commit loses
        # nothing (only a power cut or kernel crash can lose the last commits, and
        # even then the database stays consistent). FULL would fsync on every commit
        # and cost milliseconds on the pjsua2 thread.
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("history_not_wal", path=str(path), journal_mode=mode)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_CREATE)
        have = {row[1] for row in db.execute("PRAGMA table_info(call_log)")}
        for column, decl in _EXTRA_COLUMNS.items():
            if column not in have:
                db.execute(f"ALTER TABLE call_log ADD COLUMN {column} {decl}")
        _migrate_numbers(db)
    except BaseException:
        db.close()
        raise
    return db


#: ``PRAGMA user_version`` once engine-written numbers are user parts.
_NUMBERS_ARE_USERS = 1


def _migrate_numbers(db: sqlite3.Connection) -> None:
    """Version 0 -> 1: ``user@host`` numbers of engine rows (those with a
    ``remote_uri``; MicroSIP's own rows have none and stay as they are) become the
    user part, in one transaction."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= _NUMBERS_ARE_USERS:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "UPDATE call_log SET number = substr(number, 1, instr(number, '@') - 1) "
            "WHERE remote_uri != '' AND instr(number, '@') > 1"
        )
        db.execute(f"PRAGMA user_version = {_NUMBERS_ARE_USERS}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _number(uri: str, user: str) -> str:
    """MicroSIP's ``number``: the remote user part (the host when there is none)."""
    return user or host_port(uri)


@dataclass
class _Track:
    start: float
    answer: float | None = None
    rowid: int | None = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


class CallHistory:
    """The call history database. Safe to use from any thread (one connection, a lock).

    ``busy_timeout`` caps how long a write waits for another writer's lock
    (it runs on the pjsua2 thread).
    """

    name = "history"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        busy_timeout: float = 0.1,
    ) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self._tracks: dict[int, _Track] = {}
        self._recorded: collections.deque[int] = collections.deque(maxlen=256)
        self._pid = os.getpid()
        self._marker = self.path.with_name(f"{self.path.name}.open-{self._pid}")
        self._marked = False
        # The database opens with the first call; a place that cannot hold it is
        # reported now, at start.
        try:
            _private_dirs(self.path.parent)
            if not os.access(self.path.parent, os.W_OK):
                raise PermissionError(f"{self.path.parent} is not writable")
        except OSError as exc:
            log.error("history_open_failed", path=str(self.path), error=repr(exc))
        self.recover_interrupted()

    # -- the connection ---------------------------------------------------------

    def _connection(self) -> sqlite3.Connection | None:
        """The open connection, opening it if needed; None (logged) when it cannot be."""
        if self._db is None and self._closed:
            log.error("history_closed", detail="a call ended after the history was closed")
            return None
        if self._db is None:
            try:
                self._db = _connect(self.path, self.busy_timeout)
            except (sqlite3.Error, OSError) as exc:
                log.error("history_open_failed", path=str(self.path), error=repr(exc))
        return self._db

    def _drop_connection(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def close(self) -> None:
        with self._lock:
            if self._tracks and self._db is not None:  # calls that never reported an end
                self._mark_interrupted(self._db, self._pid)
            self._closed = True
            self._drop_connection()
            if self._marked:
                with contextlib.suppress(OSError):
                    self._marker.unlink()
                self._marked = False

    # -- crash recovery ----------------------------------------------------------

    def recover_interrupted(self) -> int:
        """Mark the open rows of engines that died ``interrupted``; how many were.

        Only markers of dead processes count, so engines sharing a database never
        touch each other's calls in progress. Never raises."""
        total = 0
        try:
            markers = list(self.path.parent.glob(f"{glob_escape(self.path.name)}.open-*"))
        except OSError:
            return 0
        for marker in markers:
            pid_text = marker.name.rpartition("-")[2]
            if not pid_text.isdigit() or int(pid_text) == self._pid or _alive(int(pid_text)):
                continue
            with self._lock:
                db = self._connection()
                if db is None:
                    return total
                try:
                    count = self._mark_interrupted(db, int(pid_text))
                except sqlite3.Error as exc:
                    log.error("history_recovery_failed", path=str(self.path), error=repr(exc))
                    continue
            total += count
            log.warning("history_calls_interrupted", calls=count, engine_pid=int(pid_text))
            with contextlib.suppress(OSError):
                marker.unlink()
        return total

    def _mark_interrupted(self, db: sqlite3.Connection, pid: int) -> int:
        db.execute("BEGIN IMMEDIATE")
        try:
            count = db.execute(_INTERRUPTED, (INTERRUPTED_INFO, pid)).rowcount
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return int(count)

    stop = close

    @property
    def journal_mode(self) -> str:
        with self._lock:
            db = self._connection()
            return "" if db is None else str(db.execute("PRAGMA journal_mode").fetchone()[0])

    # -- events -----------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """What the manager calls for every event before publishing it."""
        self.observe(event)
        if isinstance(event, CallState) and event.state is CallStateName.DISCONNECTED:
            self.record_end(event)

    on_event = handle  # usable as a bus handler too (without the before-publish promise)

    def observe(self, event: Event) -> None:
        """Write the open row of a call that starts; note its answer. Never raises."""
        try:
            if isinstance(event, IncomingCall | CallState) and event.call in self._recorded:
                return  # a late event of an ended call
            if isinstance(event, IncomingCall) and event.call not in self._tracks:
                self._start(event, "in")
            elif isinstance(event, CallState) and event.state is not CallStateName.DISCONNECTED:
                track = self._tracks.get(event.call) or self._start(event, event.direction)
                if event.state is CallStateName.CONFIRMED and track.answer is None:
                    track.answer = event.time
                    if track.rowid is not None:
                        kind = TYPE_OUT if event.direction == "out" else TYPE_IN
                        self._write(_ANSWERED, (kind, event.time, track.rowid), event.call)
        except Exception as exc:
            log.error("history_observe_failed", error=repr(exc))

    def _start(self, ev: IncomingCall | CallState, direction: str) -> _Track:
        """The call's row, ``open`` until it ends (committed before the event is out)."""
        track = self._tracks[ev.call] = _Track(ev.time)
        number = _number(ev.remote_uri, ev.remote_user)
        kind = TYPE_OUT if direction == "out" else TYPE_MISSED
        values = (
            *(ev.sip_call_id, number, ev.display_name or number, kind, int(ev.time), 0, ""),
            *(direction, ev.account, 0, "", ev.remote_uri, ev.time, None, None, OPEN, self._pid),
        )
        if not self._marked:  # before the row: a crash must always find the marker
            with contextlib.suppress(OSError):
                os.close(os.open(self._marker, os.O_CREAT | os.O_WRONLY, 0o600))
                self._marked = True
        track.rowid = self._write(_INSERT, values, ev.call)
        return track

    def record_end(self, event: CallState) -> int | None:
        """Insert the row of a disconnected call and commit; the row id, or None when
        nothing was written (already recorded, or a database error, logged)."""
        try:
            if event.state is not CallStateName.DISCONNECTED or event.call in self._recorded:
                return None
            self._recorded.append(event.call)
            track = self._tracks.pop(event.call, None)
            values = self._row_values(event, track)
            if track is not None and track.rowid is not None:
                done = self._write(_UPDATE, (*values, track.rowid), event.call, event)
                if done:  # else the open row was trimmed away meanwhile: insert it anew
                    return track.rowid
            return self._write(_INSERT, values, event.call, event)
        except Exception as exc:
            log.error("history_write_failed", call=event.call, error=repr(exc))
            return None

    def _row_values(self, ev: CallState, track: _Track | None) -> tuple[Any, ...]:
        end = ev.time
        answer = track.answer if track else None
        if answer is None and ev.duration > 0:
            answer = end - ev.duration
        start = track.start if track else (answer if answer is not None else end)
        inbound = TYPE_IN if answer is not None else TYPE_MISSED  # missed: never answered
        kind = TYPE_OUT if ev.direction == "out" else inbound
        number = _number(ev.remote_uri, ev.remote_user)
        info = "" if 200 <= ev.code < 300 else ev.reason
        return (
            ev.sip_call_id,
            number,
            ev.display_name or number,
            kind,
            int(start),
            int(ev.duration),
            info,
            ev.direction,
            ev.account,
            ev.code,
            ev.reason,
            ev.remote_uri,
            start,
            answer,
            end,
            ENDED,
            self._pid,
        )

    def _write(
        self, sql: str, values: tuple[Any, ...], call: int, ev: CallState | None = None
    ) -> int | None:
        """Run one INSERT (the new row id) or UPDATE (its row count) and commit."""
        with self._lock:
            db = self._connection()
            if db is None:
                log.error("history_write_failed", call=call, error="database unavailable")
                return None
            try:
                db.execute("BEGIN IMMEDIATE")
                cursor = db.execute(sql, values)
                rowid = cursor.lastrowid if sql is _INSERT else cursor.rowcount
                if self.max_rows > 0 and sql is _INSERT:
                    db.execute(_TRIM, (self.max_rows,))
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                if not isinstance(exc, sqlite3.OperationalError):
                    self._drop_connection()  # corrupt or replaced file: reopen next time
                log.error(
                    "history_write_failed",
                    call=call,
                    sip_call_id=ev.sip_call_id if ev else "",
                    path=str(self.path),
                    error=repr(exc),
                )
                return None
        return rowid

    # -- reading ----------------------------------------------------------------

    def rows(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` rows, newest first ([] when the database is unusable)."""
        with self._lock:
            db = self._connection()
            if db is None:
                return []
            try:
                return _select(db, limit)
            except sqlite3.Error as exc:
                log.error("history_read_failed", path=str(self.path), error=repr(exc))
                return []


def _select(db: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    cursor = db.execute("SELECT * FROM call_log ORDER BY id DESC LIMIT ?", (limit,))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def read_history(path: str | os.PathLike[str], limit: int = 100) -> list[dict[str, Any]]:
    """Rows from a history database without creating or changing it (for the CLI).

    Raises ``FileNotFoundError`` when there is no database and ``sqlite3.Error`` when
    it cannot be read.
    """
    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(str(target))
    db = sqlite3.connect(target.resolve().as_uri() + "?mode=ro", uri=True, timeout=2.0)
    try:
        return _select(db, limit)
    finally:
        db.close()
