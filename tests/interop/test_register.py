"""REGISTER and un-REGISTER against Asterisk over UDP, TCP and TLS (issue 9).

The engine runs as users run it (``microsip-engine serve``); Asterisk's own view
(``pjsip show contacts``) is the judge. Over TLS the engine verifies Asterisk's
certificate against the CA ``interop/asterisk/start.sh`` generated.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from asterisk import Asterisk
from engines import Serve, account_ini

pytestmark = pytest.mark.asterisk


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_register_then_unregister_on_sigterm(
    asterisk: Asterisk, tmp_path: Path, transport: str
) -> None:
    """The engine registers alice over ``transport``; Asterisk holds her contact on that
    transport; on SIGTERM the engine un-REGISTERs and Asterisk removes the contact."""
    engine = Serve(tmp_path / "engine", account_ini(asterisk, "alice", transport=transport))
    try:
        account = engine.wait_registered()
        assert (account["code"], account["transport"]) == (200, transport), account
        [contact] = asterisk.wait_contacts("alice", present=True)
        local_port = engine.sip_port() if transport != "tls" else None
        if transport == "udp":
            assert f"@127.0.0.1:{local_port}" in contact and "transport" not in contact, contact
        else:
            assert contact.endswith(f";transport={transport.upper()}"), contact
        mark = asterisk.log_mark()
        engine.proc.send_signal(signal.SIGTERM)
        assert engine.proc.wait(10) == 0
    finally:
        engine.stop()
    asterisk.wait_contacts("alice", present=False)
    # Removed because the engine asked (REGISTER with Expires: 0), not only because a
    # TCP/TLS connection closed.
    removed = f"Removed contact '{contact}' from AOR 'alice' due to request"
    assert removed in asterisk.log_since(mark), asterisk.log_since(mark)


def test_tls_refuses_a_server_its_ca_did_not_sign(asterisk: Asterisk, tmp_path: Path) -> None:
    """With another CA as ``tlsCaFile`` the engine does not register over TLS: the
    server certificate really is verified."""
    other = tmp_path / "other-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=not the interop CA", "-keyout", str(tmp_path / "other.key"),
         "-out", str(other)],
        check=True, capture_output=True,
    )  # fmt: skip
    ini = account_ini(asterisk, "carol", transport="tls").replace(
        f"tlsCaFile={asterisk.ca_file}", f"tlsCaFile={other}"
    )
    engine = Serve(tmp_path / "engine", ini)
    try:
        account = engine.wait_account(
            lambda a: (
                a["state"] not in {"registering", "unregistered", "registered"} and a["code"] != 0
            ),
            20,
            "a failed registration",
        )
        assert account["state"] != "registered" and account["code"] >= 400, account
        assert asterisk.contacts("carol") == []
    finally:
        engine.stop()
