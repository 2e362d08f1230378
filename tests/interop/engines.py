"""Engines pointed at the interop Asterisk: their microsip.ini, and the engine as
users run it (``microsip-engine serve`` child processes, driven over the control
socket and the ``microsip`` CLI)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asterisk import USERS, Asterisk
from audio import read_wav
from enginekit import EventLog, ServeProcess


def account_ini(
    asterisk: Asterisk,
    user: str,
    *,
    transport: str = "udp",
    password: str | None = None,
    settings: str = "",
    account: str = "",
    engine: str = "",
) -> str:
    """A microsip.ini with one account for ``user`` on the session's Asterisk."""
    port = asterisk.tls_port if transport == "tls" else asterisk.sip_port
    host = f"127.0.0.1:{port}"
    return f"""[Settings]
accountId=1
sourcePort=0
audioCodecs=PCMU/8000/1 PCMA/8000/1
{settings}
[Engine]
nullAudio=1
tlsCaFile={asterisk.ca_file}
{engine}
[Account1]
label={user}
server={host}
domain={host}
username={user}
password={USERS[user] if password is None else password}
transport={transport}
registerRefresh=60
{account}
"""


class _StreamLog(EventLog):
    """An :class:`EventLog` filled from the control socket's event stream (dicts)."""

    def add(self, event: dict[str, Any]) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()


class Serve(ServeProcess):
    """``microsip-engine serve`` with its event stream collected in the background
    (``wait``/``wait_for``/``of`` as on :class:`EventLog`)."""

    def __init__(self, tmp: Path, ini: str, *extra: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__(tmp, ini, *extra)
        self.log = _StreamLog()
        self.wait, self.wait_for, self.of = self.log.wait, self.log.wait_for, self.log.of
        self._client = self.client()
        self._stream = self._client.events()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                self.log.add(event)
        except Exception:  # the engine stopped: the stream ends
            return

    def mark(self) -> set[int]:
        """Events so far, for :meth:`wait_new`."""
        with self.log._cond:
            return {id(e) for e in self.log.events}

    def wait_new(
        self, mark: set[int], kind: str, timeout: float = 15.0, **fields: Any
    ) -> dict[str, Any]:
        """The first ``kind`` event with ``fields`` that came after ``mark``."""
        return self.log.wait(
            lambda e: (
                id(e) not in mark
                and e.get("event") == kind
                and all(e.get(k) == v for k, v in fields.items())
            ),
            timeout,
            f"a new {kind} {fields}",
        )

    def request(self, cmd: str, /, **params: Any) -> Any:
        client = self.client()
        try:
            return client.request(cmd, **params)
        finally:
            client.close()

    def microsip(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """MicroSIP's command line (``microsip 100``, ``microsip /answer``) for this engine."""
        return subprocess.run(
            [sys.executable, "-m", "engine.cli.microsip", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def account(self) -> dict[str, Any]:
        """The registering account (the active one) as ``status`` reports it."""
        accounts: list[dict[str, Any]] = self.request("status")["accounts"]
        return accounts[0] if accounts else {"state": "none", "code": 0}

    def wait_account(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 15.0,
        what: str = "the account",
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            account = self.account()
            if predicate(account):
                return account
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}: {account}")
            time.sleep(0.1)

    def wait_registered(self, timeout: float = 15.0) -> dict[str, Any]:
        return self.wait_account(lambda a: a["state"] == "registered", timeout, "registration")

    def dial(self, target: str) -> int:
        """Dial ``target`` (a number on Asterisk) and wait until it is answered."""
        call: int = self.request("dial", target=target)["call"]
        self.wait_for("call_state", call=call, state="confirmed")
        self.wait_for("media_state", call=call, status="active")
        return call

    def record_for(self, call: int, seconds: float) -> tuple[int, Any]:
        """Record ``call`` for ``seconds`` (both directions mixed); rate and samples."""
        path = self.tmp / f"call{call}-{len(self.log.events)}.wav"
        self.request("record", call=call, wav=str(path))
        time.sleep(seconds)  # the length of the recording, not a wait for an event
        self.request("stop_recording", call=call)
        self.wait(
            lambda e: e.get("event") == "recording_saved" and e.get("path") == str(path),
            10,
            "the recording to be saved",
        )
        return read_wav(path)

    def stop(self) -> int | None:
        code = super().stop()
        self._stream.close()
        self._client.close()
        return code


def history(engine: Serve) -> list[dict[str, Any]]:
    """The engine's call history as ``microsip-engine history --json`` prints it."""
    import json

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "history",
            "--json",
            "--config",
            str(engine.tmp / "serve.ini"),
        ],
        env=engine.env,
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows
