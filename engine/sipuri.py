"""Small, pure helpers for SIP name-addr / URI text (no pjsua2)."""

from __future__ import annotations

import re

_NAME_ADDR = re.compile(r'^\s*(?:"(?P<qname>(?:[^"\\]|\\.)*)"|(?P<name>[^<]*?))\s*<(?P<uri>[^>]*)>')
_USER = re.compile(r"^(?:sips?|tel):(?P<user>[^@;?]*)(?:@|$)", re.IGNORECASE)


def split_name_addr(value: str) -> tuple[str, str]:
    """``"Bob" <sip:bob@h>`` → ("Bob", "sip:bob@h"); a bare URI has an empty name."""
    m = _NAME_ADDR.match(value)
    if not m:
        return "", value.strip().split(";", 1)[0] if value.strip().startswith(
            "<"
        ) else value.strip()
    name = m.group("qname") if m.group("qname") is not None else (m.group("name") or "")
    return name.strip(), m.group("uri").strip()


def user_part(uri_or_name_addr: str) -> str:
    """The user part of a URI (``sip:bob@host`` → ``bob``), or the host for ``sip:host``."""
    _, uri = split_name_addr(uri_or_name_addr)
    m = _USER.match(uri)
    if m is None:
        return uri
    user = m.group("user")
    if "@" not in uri and uri.lower().startswith(("sip:", "sips:")):
        return user.split(":", 1)[0]
    return user


def header_value(message: str, name: str, compact: str | None = None) -> str | None:
    """First value of header ``name`` in a raw SIP message (case-insensitive)."""
    names = {name.lower()} | ({compact.lower()} if compact else set())
    head = message.split("\r\n\r\n", 1)[0]
    for line in head.split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in names:
            return value.strip()
    return None


_HOSTPORT = re.compile(r"^(?:sips?|tel):(?:[^@;?>]*@)?(?P<host>[^;?>]*)", re.IGNORECASE)


def host_port(uri: str) -> str:
    """The host[:port] of a URI (``sip:bob@pbx:5060;x`` → ``pbx:5060``), else ""."""
    m = _HOSTPORT.match(uri)
    return m.group("host") if m else ""
