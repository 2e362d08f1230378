"""Secret redaction in log lines (the processor every log line goes through)."""

from __future__ import annotations

import pytest

from engine.logs import redact, redact_text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('Authorization: Digest username="alice", response="0123abcd"', "0123abcd"),
        ('Proxy-Authorization: Digest response="feedbeef"', "feedbeef"),
        (
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
            "WVNfX19",
        ),
        ("/account:2 /password:hunter2", "hunter2"),
        ('/password:"two words" /account:1', "two words"),
        ("password=s3cret", "s3cret"),
        ("dial sip:bob:topsecret@pbx.example.com", "topsecret"),
        ("<sip:bob@h>;auth_pass=bob-secret;answermode=auto", "bob-secret"),
    ],
)
def test_secrets_are_removed_from_text(text: str, secret: str) -> None:
    cleaned = redact_text(text)
    assert secret not in cleaned and "<redacted>" in cleaned


def test_ordinary_sip_text_is_kept() -> None:
    text = "INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\nFrom: <sip:alice@h>;tag=1\r\n"
    assert redact_text(text) == text


def test_secret_named_fields_are_masked_and_strings_scrubbed() -> None:
    event = {"event": "x", "password": "p", "token_file": "/t", "msg": "password=abc", "n": 1}
    out = redact(None, "info", event)
    assert out["password"] == out["token_file"] == "<redacted>"
    assert out["msg"] == "password=<redacted>" and out["n"] == 1


class _Writes:
    """A stream that keeps every write() call apart."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_each_log_line_is_one_write(fmt: str) -> None:
    """The supervisor and its engine append to one file: with unbuffered streams
    (PYTHONUNBUFFERED) a line written in two calls can be split by the other's line."""
    import structlog

    from engine.logs import configure

    before = structlog.get_config()
    stream = _Writes()
    configure(fmt, "info", stream)  # type: ignore[arg-type]
    try:
        structlog.get_logger("test").info("one_line", detail="x")
        structlog.get_logger("test").info("another_line")
    finally:
        structlog.configure(**before)
    assert len(stream.calls) == 2, stream.calls
    assert all(c.endswith("\n") and c.count("\n") == 1 for c in stream.calls), stream.calls
