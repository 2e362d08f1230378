"""Configuration texts shared by the fault tests."""

from __future__ import annotations

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
