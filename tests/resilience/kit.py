"""Configuration texts shared by the fault tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from peers.kamailio import Kamailio


def registrar_ini(k: Kamailio, password: str = "alice-secret", **keys: object) -> str:
    """``[Account1]`` = alice at Kamailio ``k`` (the active account, no local one);
    ``keys`` are further ``[Account1]`` keys (``transport="tcp"``...)."""
    extra = "".join(f"{name}={value}\n" for name, value in keys.items())
    return f"""[Settings]
accountId=1
enableLocalAccount=0
sourcePort=0
audioCodecs=PCMU/8000/1
[Account1]
server={k.address}
domain={k.domain}
username=alice
password={password}
{extra}"""


def self_signed(directory: Path, openssl: str) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 (CN and IP subjectAltName), self-signed."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout",
         str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key
