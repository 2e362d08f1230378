"""DTMF read by Asterisk for every ``DTMFMethod`` (issue 9).

Extension 6XX is Asterisk's DTMF reader: it answers, reads digits with ``Read()``
until 3 s pass without one, and writes what it heard to ``spool/dtmf/6XX.txt``
in its state directory. alice's endpoint takes RFC 4733 (and SIP INFO); bob's
hears DTMF only in-band (``dtmf_mode=inband``: Asterisk detects the tones in the
audio). Each case dials its own 6XX so that its result file is its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from asterisk import Asterisk
from engines import Serve, account_ini

pytestmark = pytest.mark.asterisk

DIGITS = "1234"


def engine_for(asterisk: Asterisk, tmp_path: Path, user: str, method: int) -> Serve:
    engine = Serve(
        tmp_path / "engine", account_ini(asterisk, user, settings=f"DTMFMethod={method}")
    )
    engine.wait_registered()
    return engine


@pytest.mark.parametrize(
    ("user", "method", "exten", "sent_as"),
    [
        ("alice", 0, "610", "rfc2833"),
        ("bob", 1, "611", "inband"),
        ("alice", 2, "612", "rfc2833"),
        ("alice", 3, "613", "info"),
    ],
)
def test_asterisk_reads_the_digits(
    asterisk: Asterisk, tmp_path: Path, user: str, method: int, exten: str, sent_as: str
) -> None:
    """With ``DTMFMethod=method`` the ``dtmf`` command's digits reach Asterisk's
    ``Read()``, which writes exactly them; the engine reports the method it used."""
    engine = engine_for(asterisk, tmp_path, user, method)
    try:
        call = engine.dial(exten)
        assert engine.request("dtmf", digits=DIGITS, call=call) == {"method": sent_as}
        assert asterisk.dtmf_heard(exten) == DIGITS
        engine.wait_for("call_state", timeout=15, call=call, state="disconnected")
    finally:
        engine.stop()


def test_post_dial_digits_from_the_command_line(asterisk: Asterisk, tmp_path: Path) -> None:
    """``microsip 614,1234``: MicroSIP's post-dial form dials 614 and, once answered,
    sends 1234 — Asterisk reads 1234."""
    engine = engine_for(asterisk, tmp_path, "alice", 0)
    try:
        done = engine.microsip("614," + DIGITS)
        assert done.returncode == 0, done.stderr
        assert asterisk.dtmf_heard("614") == DIGITS
    finally:
        engine.stop()


def test_auto_falls_back_to_in_band_for_an_in_band_only_endpoint(
    asterisk: Asterisk, tmp_path: Path
) -> None:
    """bob's endpoint offers no telephone-event: ``DTMFMethod=0`` (auto) must then
    send the digits in-band, and Asterisk reads them (MicroSIP's "auto")."""
    engine = engine_for(asterisk, tmp_path, "bob", 0)
    try:
        call = engine.dial("615")
        assert engine.request("dtmf", digits=DIGITS, call=call) == {"method": "inband"}
        assert asterisk.dtmf_heard("615") == DIGITS
    finally:
        engine.stop()
