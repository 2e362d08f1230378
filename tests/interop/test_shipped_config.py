"""``interop/asterisk/microsip.ini`` is a working configuration for the interop
Asterisk: each of its accounts registers (on this run's ports and CA)."""

from __future__ import annotations

from pathlib import Path

import pytest
from asterisk import CONF, Asterisk
from engines import Serve

pytestmark = pytest.mark.asterisk


def test_shipped_microsip_ini_registers_every_account(asterisk: Asterisk, tmp_path: Path) -> None:
    """alice (UDP), bob (TCP) and carol (TLS, CA verified) as the file configures
    them, switched to in turn; Asterisk holds each one's contact."""
    text = (CONF / "microsip.ini").read_text()
    text = text.replace("127.0.0.1:5060", f"127.0.0.1:{asterisk.sip_port}")
    text = text.replace("127.0.0.1:5061", f"127.0.0.1:{asterisk.tls_port}")
    text = text.replace(
        "tlsCaFile=interop/asterisk/state/keys/ca.crt", f"tlsCaFile={asterisk.ca_file}"
    )
    text = text.replace("[Engine]\n", "[Engine]\nnullAudio=1\n")
    engine = Serve(tmp_path / "engine", text)
    try:
        for index, (user, transport) in enumerate(
            [("alice", "udp"), ("bob", "tcp"), ("carol", "tls")], start=1
        ):
            if index > 1:
                engine.request("switch_account", account=index)
            account = engine.wait_account(
                lambda a, i=index: a["account"] == i and a["state"] == "registered",
                15,
                f"account {index} registered",
            )
            assert account["transport"] == transport, account
            [contact] = asterisk.wait_contacts(user, present=True)
            assert transport == "udp" or contact.endswith(f"transport={transport.upper()}")
    finally:
        engine.stop()
