"""Tests for engine.ini (lossless microsip.ini) and engine.config (typed model)."""

from __future__ import annotations

import codecs
import dataclasses
import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import (
    AccountConfig,
    load_config,
    looks_encrypted,
    user_config_path,
)
from engine.errors import ConfigError, NotFoundError
from engine.ini import IniDocument

ENCODINGS = {
    "utf-16-le-bom": ("utf-16-le", codecs.BOM_UTF16_LE),
    "utf-8-bom": ("utf-8", codecs.BOM_UTF8),
    "utf-8": ("utf-8", b""),
}
NEWLINES = {"crlf": "\r\n", "lf": "\n"}

SAMPLE = """\
; MicroSIP settings, edited by hand
[Global]
version=3.22.16

[Settings]
accountId=2
enableLocalAccount=1
audioCodecs=opus/48000/2 PCMA/8000/1
autoAnswer=header
autoAnswerNumber=100; 2* | 3??
DTMFMethod=3
  callWaiting = 0
userAgent = "  Spaced Agent  "
weirdUnknownKey=keep me ; not a comment

[Account1]
label=Office
server=pbx.example.com
proxy=sip:p1.example.com sip:p2.example.com
domain=pbx.example.com
username=101
password=secret1
transport=tcp
hideCID=1
registerRefresh=5

[Account2]
domain=sip.example.org
username=alice
password='quoted pw'
authID=
transport=
SRTP=Mandatory
keepAlive=1

[Shortcuts]
0=Alice;101;0
[Unknown Section]
foo=bar
"""


def encode(text: str, variant: str, newline: str = "\r\n") -> bytes:
    encoding, bom = ENCODINGS[variant]
    return bom + text.replace("\n", newline).encode(encoding)


def split_lines(data: bytes, doc: IniDocument) -> list[bytes]:
    """The file's lines as exact byte strings (terminators included)."""
    bom = codecs.BOM_UTF16_LE if doc.encoding == "utf-16-le" else codecs.BOM_UTF8
    body = data[len(bom) :] if doc.has_bom else data
    text = body.decode(doc.encoding)
    return [m.encode(doc.encoding) for m in re.findall(r"[^\r\n]*(?:\r\n|\n|\r)|[^\r\n]+$", text)]


def write(tmp_path: Path, text: str, variant: str = "utf-8", name: str = "microsip.ini") -> Path:
    path = tmp_path / name
    path.write_bytes(encode(text, variant, "\r\n"))
    return path


# -- IniDocument: encodings and round trips -------------------------------------------


@pytest.mark.parametrize("newline", NEWLINES.values(), ids=NEWLINES.keys())
@pytest.mark.parametrize("variant", ENCODINGS)
def test_load_each_encoding_and_round_trip(tmp_path: Path, variant: str, newline: str) -> None:
    data = encode(SAMPLE, variant, newline)
    path = tmp_path / "m.ini"
    path.write_bytes(data)
    doc = IniDocument.load(path)
    assert doc.encoding == ENCODINGS[variant][0]
    assert doc.has_bom == bool(ENCODINGS[variant][1])
    assert doc.newline == newline
    assert doc.get("Account1", "password") == "secret1"
    assert doc.get("Settings", "userAgent") == "  Spaced Agent  "
    assert doc.to_bytes() == data
    doc.save()
    assert path.read_bytes() == data


def test_mixed_newlines_and_no_final_newline_round_trip() -> None:
    data = b"[A]\r\nx=1\ny=2\rz=3"
    doc = IniDocument.parse(data, "m.ini")
    assert [doc.get("A", k) for k in "xyz"] == ["1", "2", "3"]
    assert doc.to_bytes() == data


@pytest.mark.parametrize("variant", ENCODINGS)
def test_set_changes_only_that_line(variant: str) -> None:
    data = encode(SAMPLE, variant, "\r\n")
    doc = IniDocument.parse(data, "m.ini")
    before = split_lines(data, doc)
    doc.set("account1", "PASSWORD", "n€w pass")
    after_data = doc.to_bytes()
    after = split_lines(after_data, doc)
    assert after_data[:3] == data[:3]  # BOM kept
    assert len(after) == len(before)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(changed) == 1
    assert after[changed[0]] == "password=n€w pass\r\n".encode(doc.encoding)
    assert IniDocument.parse(after_data, "m.ini").get("Account1", "password") == "n€w pass"


def test_set_keeps_key_spelling_and_indentation() -> None:
    doc = IniDocument.parse(b"[Settings]\n  callWaiting = 0   \nx=1\n", "m.ini")
    doc.set("SETTINGS", "CALLWAITING", "1")
    assert doc.to_bytes() == b"[Settings]\n  callWaiting = 1\nx=1\n"


def test_set_same_value_leaves_line_alone() -> None:
    data = b'[S]\nk = "v"   \n'
    doc = IniDocument.parse(data, "m.ini")
    doc.set("S", "k", "v")
    assert doc.to_bytes() == data


def test_new_key_goes_after_last_key_of_section() -> None:
    data = b"[A]\na=1\n\n; about B\n[B]\nb=2\n"
    doc = IniDocument.parse(data, "m.ini")
    doc.set("a", "new", "x")
    assert doc.to_bytes() == b"[A]\na=1\nnew=x\n\n; about B\n[B]\nb=2\n"


def test_new_key_in_empty_section_follows_header() -> None:
    doc = IniDocument.parse(b"[A]\n[B]\nb=2\n", "m.ini")
    doc.set("A", "k", "v")
    assert doc.to_bytes() == b"[A]\nk=v\n[B]\nb=2\n"


def test_new_section_appended_with_crlf_and_utf16() -> None:
    data = encode("[A]\na=1\n", "utf-16-le-bom", "\r\n")
    doc = IniDocument.parse(data, "m.ini")
    doc.set("Account3", "domain", "d")
    assert doc.to_bytes() == data + "\r\n[Account3]\r\ndomain=d\r\n".encode("utf-16-le")
    assert doc.sections() == ["A", "Account3"]


def test_append_keeps_missing_final_newline() -> None:
    doc = IniDocument.parse(b"[A]\na=1", "m.ini")
    doc.set("A", "b", "2")
    assert doc.to_bytes() == b"[A]\na=1\nb=2"


def test_unknown_content_preserved_byte_for_byte(tmp_path: Path) -> None:
    path = write(tmp_path, SAMPLE, "utf-16-le-bom")
    original = path.read_bytes()
    doc = IniDocument.load(path)
    doc.set("Settings", "accountId", "1")
    doc.save()
    new = path.read_bytes()
    assert new == original.replace(
        "accountId=2".encode("utf-16-le"), "accountId=1".encode("utf-16-le")
    )
    reloaded = IniDocument.load(path)
    assert reloaded.items("Unknown Section") == [("foo", "bar")]
    assert reloaded.get("Settings", "weirdUnknownKey") == "keep me ; not a comment"


def test_quotes_and_whitespace() -> None:
    doc = IniDocument.parse(
        b'[S]\na = "  x y  " \nb=\'q\'\nc="mismatched\'\nd="\ne=""\nf=  plain  \n', "m.ini"
    )
    assert doc.get("S", "a") == "  x y  "
    assert doc.get("S", "b") == "q"
    assert doc.get("S", "c") == "\"mismatched'"
    assert doc.get("S", "d") == '"'
    assert doc.get("S", "e") == ""
    assert doc.get("S", "f") == "plain"


@pytest.mark.parametrize("value", ["  lead", "trail  ", '"q"', "'", "''", "", "a=b;c#d"])
def test_set_quotes_when_needed(value: str) -> None:
    doc = IniDocument.parse(b"[S]\n", "m.ini")
    doc.set("S", "k", value)
    assert IniDocument.parse(doc.to_bytes(), "m.ini").get("S", "k") == value


def test_case_insensitive_names_and_duplicates() -> None:
    doc = IniDocument.parse(b"[Settings]\nDND=1\ndnd=0\n[other]\n[SETTINGS]\nAA=1\n", "m.ini")
    assert doc.has_section("settings") and doc.has_section("OTHER")
    assert not doc.has_section("Account1")
    assert doc.get("sEtTiNgS", "dNd") == "1"  # the first one wins, like Win32
    assert doc.get("settings", "aa") == "1"  # a repeated section is searched too
    assert doc.items("Settings") == [("DND", "1"), ("AA", "1")]
    assert doc.sections() == ["Settings", "other"]
    assert doc.get("Settings", "missing") is None
    assert doc.line_number("settings", "aa") == 6


def test_remove() -> None:
    doc = IniDocument.parse(b"[S]\na=1\nb=2\nA=3\n", "m.ini")
    assert doc.remove("s", "a") is True
    assert doc.to_bytes() == b"[S]\nb=2\n"
    assert doc.remove("S", "a") is False
    last = IniDocument.parse(b"[S]\na=1\nb=2", "m.ini")
    last.remove("S", "b")
    assert last.to_bytes() == b"[S]\na=1"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[Settings]\nx=1\n[Broken\n", 3, "closing ']'"),
        ("[Settings]\nx=1\njust some junk\n", 3, "not a [Section] header"),
        ("; comment\nkey=value\n[Settings]\n", 2, "before any [Section]"),
        ("[Settings]\n=value\n", 2, "empty key"),
        ("[Settings]\n[]\n", 2, "empty name"),
        ("[Settings] trailing\n", 1, "unexpected text"),
    ],
)
def test_broken_lines_name_file_and_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, text, "utf-16-le-bom", name="broken.ini")
    with pytest.raises(ConfigError) as info:
        IniDocument.load(path)
    message = str(info.value)
    assert f"broken.ini:{line}:" in message
    assert words in message
    assert info.value.line == line


def test_junk_line_content_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        IniDocument.parse(b"[A]\npassword hunter2\n", "m.ini")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"[Settings]\r\nname=caf\xe9\r\n", 2),  # Latin-1 byte in UTF-8
        (codecs.BOM_UTF8 + b"[S]\nx=1\ny=\xff\xfe\n", 3),
        (codecs.BOM_UTF16_LE + "[S]\r\nx=".encode("utf-16-le") + b"\x00\xd8" + b"a\x00", 2),
        (codecs.BOM_UTF16_LE + "[S]\r\n".encode("utf-16-le") + b"x", 2),  # odd length
        ("[S]\r\nx=1\r\n".encode("utf-16-le"), 1),  # UTF-16 without BOM
    ],
    ids=["utf8-latin1", "utf8-bom-ff", "utf16-lone-surrogate", "utf16-odd", "utf16-no-bom"],
)
def test_invalid_bytes_name_file_and_line(data: bytes, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        IniDocument.parse(data, "/etc/x/bad.ini")
    assert f"/etc/x/bad.ini:{line}:" in str(info.value)


def test_utf16_big_endian_rejected() -> None:
    with pytest.raises(ConfigError, match="big-endian"):
        IniDocument.parse(codecs.BOM_UTF16_BE + "[S]".encode("utf-16-be"), "m.ini")


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("S", "k", "a\nb"),
        ("S", "k", "a\rb"),
        ("S", "k", "a\x00"),
        ("S", "a=b", "v"),
        ("S", ";k", "v"),
        ("S", " k", "v"),
        ("S]", "k", "v"),
        ("", "k", "v"),
    ],
)
def test_set_rejects_what_cannot_be_stored(section: str, key: str, value: str) -> None:
    doc = IniDocument.parse(b"[S]\nk=1\n", "m.ini")
    with pytest.raises(ConfigError):
        doc.set(section, key, value)
    assert doc.to_bytes() == b"[S]\nk=1\n"


@pytest.mark.parametrize(
    ("value", "words"),
    [("pa\x00ss", "a NUL character"), ("pa\nss", "line breaks"), ("pa\rss", "line breaks")],
)
def test_set_names_the_character_it_refuses(value: str, words: str) -> None:
    doc = IniDocument.parse(b"[Account1]\npassword=1\n", "m.ini")
    with pytest.raises(
        ConfigError, match=f"\\[Account1\\] password: a value cannot contain {words}"
    ):
        doc.set("Account1", "password", value)


def test_doc_repr_hides_content() -> None:
    doc = IniDocument.parse(b"[A]\npassword=hunter2\n", "m.ini")
    assert "hunter2" not in repr(doc)


# -- atomic save ----------------------------------------------------------------------


def test_save_crash_leaves_original_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, SAMPLE, "utf-16-le-bom")
    original = path.read_bytes()
    doc = IniDocument.load(path)
    doc.set("Account1", "password", "changed")

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(ConfigError, match="No space left"):
        doc.save()
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["microsip.ini"]


def test_save_keeps_mode_fsyncs_and_follows_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = write(tmp_path, "[S]\nk=1\n")
    real.chmod(0o640)
    link = tmp_path / "link.ini"
    link.symlink_to(real)
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    doc = IniDocument.load(link)
    doc.set("S", "k", "2")
    doc.save()
    assert link.is_symlink()
    assert real.read_bytes() == b"[S]\r\nk=2\r\n"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert len(synced) >= 2  # the file and its directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.ini", "microsip.ini"]


def test_save_new_file_is_private(tmp_path: Path) -> None:
    doc = IniDocument.parse(b"[S]\n", "m.ini")
    target = tmp_path / "new.ini"
    doc.save(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert doc.path == str(target)


# -- hypothesis: random edits round-trip ----------------------------------------------

_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_.]{0,8}", fullmatch=True)
_values = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]),
    max_size=20,
)
_base_sections = st.dictionaries(
    _names, st.dictionaries(_names, _values, max_size=4), min_size=1, max_size=4
)


def _render(sections: dict[str, dict[str, str]]) -> str:
    out = ["; generated"]
    for name, items in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k}={v!s}" for k, v in items.items())
    return "\n".join(out) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=_base_sections,
    variant=st.sampled_from(sorted(ENCODINGS)),
    newline=st.sampled_from(["\r\n", "\n"]),
    data=st.data(),
)
def test_random_edit_round_trips(
    base: dict[str, dict[str, str]], variant: str, newline: str, data: st.DataObject
) -> None:
    original = encode(_render(base), variant, newline)
    doc = IniDocument.parse(original, "h.ini")
    assert doc.to_bytes() == original
    existing = [(s, k) for s, items in base.items() for k in items]
    pick_existing = st.sampled_from(existing).map(lambda sk: (sk[0].upper(), sk[1].lower()))
    section, key = data.draw(
        st.one_of(pick_existing, st.tuples(_names, _names))
        if existing
        else st.tuples(_names, _names)
    )
    value = data.draw(_values)
    before_get = {(s, k): doc.get(s, k) for s, k in existing}
    existed = doc.get(section, key) is not None
    doc.set(section, key, value)
    edited = doc.to_bytes()
    again = IniDocument.parse(edited, "h.ini")
    assert again.get(section, key) == value
    for (s, k), v in before_get.items():
        if (s.casefold(), k.casefold()) != (section.casefold(), key.casefold()):
            assert again.get(s, k) == v
    old_lines, new_lines = split_lines(original, doc), split_lines(edited, doc)
    if existed:  # changed in place: same lines except (at most) the edited one
        assert len(new_lines) == len(old_lines)
        assert sum(a != b for a, b in zip(old_lines, new_lines, strict=True)) <= 1
    else:  # appended: every original line kept, in order, plus 1-3 new lines
        rest = iter(new_lines)
        assert all(line in rest for line in old_lines)
        assert 1 <= len(new_lines) - len(old_lines) <= 3


# -- typed configuration --------------------------------------------------------------


def test_sample_typed_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SAMPLE, "utf-16-le-bom"), env={})
    s = config.settings
    assert s.account_id == 2
    assert s.enable_local_account is True
    assert s.audio_codecs == ("opus/48000/2", "PCMA/8000/1")
    assert s.auto_answer == "header"
    assert s.auto_answer_number == ("100", "2*", "3??")
    assert s.dtmf_method == 3
    assert s.call_waiting is False
    assert s.user_agent == "  Spaced Agent  "
    assert s.single_mode is True and s.local_dtmf is True and s.volume_output == 100
    assert s.deny_incoming == "button"
    a1, a2 = config.accounts[1], config.accounts[2]
    assert a1.proxy == ("sip:p1.example.com", "sip:p2.example.com")
    assert a1.transport == "tcp" and a1.hide_cid == "hard"
    assert a1.register_refresh == 10  # MicroSIP's minimum
    assert a1.auth_id == "101"  # defaults to username
    assert a2.transport == "both" and a2.srtp == "mandatory"
    assert a2.password == "quoted pw" and a2.keep_alive == 2
    assert a2.register_refresh == 300
    assert config.active_account() is a2
    assert config.local_account.label == "Local (call by IP address)"
    assert config.local_account.transport == "udp"
    assert config.warnings == ()


def test_password_not_in_repr(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SAMPLE), env={})
    assert "secret1" not in repr(config)
    assert "secret1" not in repr(config.accounts[1])
    assert config.accounts[1].password == "secret1"


def test_contiguous_accounts(tmp_path: Path) -> None:
    text = (
        "[Settings]\naccountId=1\n"
        "[Account1]\ndomain=a\n[Account2]\ndomain=b\n[Account4]\ndomain=d\n"
    )
    assert sorted(load_config(write(tmp_path, text), env={}).accounts) == [1, 2]
    text2 = "[Account1]\ndomain=a\n[Account2]\ndomain=\n[Account3]\ndomain=c\n"
    assert sorted(load_config(write(tmp_path, text2), env={}).accounts) == [1]


def test_account_id_rules(tmp_path: Path) -> None:
    missing = load_config(write(tmp_path, "[Account1]\ndomain=a\n"), env={})
    assert missing.settings.account_id == 1
    local_disabled = load_config(
        write(tmp_path, "[Settings]\naccountId=0\n[Account1]\ndomain=a\n"), env={}
    )
    assert local_disabled.settings.account_id == 1  # MicroSIP: 0 needs the local account
    local = load_config(
        write(tmp_path, "[Settings]\naccountId=0\nenableLocalAccount=1\n[Account1]\ndomain=a\n"),
        env={},
    )
    assert local.settings.account_id == 0 and local.active_account() is None
    dangling = load_config(write(tmp_path, "[Settings]\naccountId=5\n"), env={})
    assert dangling.settings.account_id == 0
    assert any("accountId=5" in w and "microsip.ini:2" in w for w in dangling.warnings)


def test_legacy_settings_account(tmp_path: Path) -> None:
    text = "[Settings]\nserver=old.example\ndomain=old.example\nusername=u\npassword=p\n"
    path = write(tmp_path, text)
    before = path.read_bytes()
    config = load_config(path, env={})
    assert config.accounts[1].domain == "old.example"
    assert config.accounts[1].section == "Settings"
    assert config.active_account() == config.accounts[1]
    assert path.read_bytes() == before  # no migration on load
    saved = config.save_password(1, "newpw")
    assert saved.accounts[1].password == "newpw"
    assert not saved.document.has_section("Account1")


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("[Settings]\nsourcePort=50x60\n", "sourcePort", 2),
        ("[Settings]\nx=1\nDTMFMethod=7\n", "DTMFMethod", 3),
        ("[Settings]\nrtpPortMin=20000\nrtpPortMax=10000\n", "rtpPortMin", 2),
        ("[Settings]\nautoAnswer=sometimes\n", "autoAnswer", 2),
        ("[Settings]\ncallWaiting=maybe\n", "callWaiting", 2),
        ("[Settings]\ndenyIncoming=nobody\n", "denyIncoming", 2),
        ("[Global]\nvolumeInput=300\n", "volumeInput", 2),
        ("[Account1]\ndomain=a\ntransport=sctp\n", "transport", 3),
        ("[Account1]\ndomain=a\nSRTP=always\n", "SRTP", 3),
        ("[Account1]\ndomain=a\nregisterRefresh=soon\n", "registerRefresh", 3),
        ("[Engine]\nlogFormat=xml\n", "logFormat", 2),
        ("[Engine]\ntcpControl=7000\n", "tcpControl", 2),
        ("[Engine]\ncontrolIdleTimeout=0\n", "controlIdleTimeout", 2),
    ],
)
def test_invalid_typed_values_name_key(tmp_path: Path, text: str, key: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert info.value.key == key
    assert key in str(info.value)
    assert f"microsip.ini:{line}:" in str(info.value)


def test_global_fallback_and_settings_precedence(tmp_path: Path) -> None:
    text = "[Global]\nDND=1\nAA=1\n[Settings]\nAA=0\n"
    s = load_config(write(tmp_path, text), env={}).settings
    assert s.dnd is True and s.aa is False


def test_engine_section(tmp_path: Path) -> None:
    text = "[Engine]\npjsipLogLevel=6\nlogFormat=JSON\ntcpControl=127.0.0.1:7000\nmaxCalls=4\n"
    engine = load_config(write(tmp_path, text), env={}).engine
    assert engine.pjsip_log_level == 4  # capped: level 5 prints SRTP keys
    assert engine.log_format == "json"
    assert engine.tcp_control == "127.0.0.1:7000"
    assert engine.max_calls == 4
    assert engine.bind_address == ""
    assert engine.control_idle_timeout == 30  # seconds, docs/control-protocol.md


ENCRYPTED = "9F2C4A11D0E3B5A69F2C4A11D0E3B5A6"
TWO_ACCOUNTS = "[Account1]\ndomain=a\n[Account2]\ndomain=b\n"


def test_looks_encrypted() -> None:
    assert looks_encrypted(ENCRYPTED)
    assert looks_encrypted(ENCRYPTED.lower()[:16])
    assert not looks_encrypted("9F2C4A11D0E3B5A")  # 15
    assert not looks_encrypted("9F2C4A11D0E3B5A6F")  # 17
    assert not looks_encrypted("secretsecretsecr")


def test_encrypted_password_on_active_account_is_an_error(tmp_path: Path) -> None:
    text = f"[Settings]\naccountId=2\n{TWO_ACCOUNTS}password={ENCRYPTED}\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    message = str(info.value)
    assert "[Account2]" in message and "plaintext" in message
    assert "plainHexPasswords" in message
    assert "microsip.ini:7:" in message
    assert ENCRYPTED not in message


def test_encrypted_password_on_inactive_account_warns(tmp_path: Path) -> None:
    text = f"[Settings]\naccountId=1\n{TWO_ACCOUNTS}password={ENCRYPTED}\n"
    config = load_config(write(tmp_path, text), env={})
    assert len(config.warnings) == 1
    assert "[Account2]" in config.warnings[0] and "plaintext" in config.warnings[0]
    assert ENCRYPTED not in config.warnings[0]


def test_plain_hex_escape_hatch(tmp_path: Path) -> None:
    text = f"[Account1]\ndomain=a\npassword={ENCRYPTED}\n[Engine]\nplainHexPasswords=1\n"
    config = load_config(write(tmp_path, text), env={})
    active = config.active_account()
    assert active is not None and active.password == ENCRYPTED
    assert config.warnings == ()


# -- resolution and writing back ------------------------------------------------------


def test_embedded_default_loads(tmp_path: Path) -> None:
    config = load_config(env={"HOME": str(tmp_path)})
    assert config.path is None
    s = config.settings
    assert s.account_id == 0 and s.enable_local_account is True
    assert s.source_port == 0 and s.auto_answer == "" and s.deny_incoming == "button"
    assert s.audio_codecs == ("PCMU/8000/1", "PCMA/8000/1", "G722/16000/1")
    assert s.call_waiting is True and s.dtmf_method == 0
    assert config.local_account.transport == "both"
    assert config.engine.log_format == "console"
    assert config.accounts == {} and config.active_account() is None
    assert config.document.encoding == "utf-8"


def test_user_config_path(tmp_path: Path) -> None:
    assert user_config_path({"XDG_CONFIG_HOME": "/x/cfg", "HOME": "/h"}) == Path(
        "/x/cfg/microsip-engine/microsip.ini"
    )
    assert user_config_path({"XDG_CONFIG_HOME": "rel", "HOME": "/h"}) == Path(
        "/h/.config/microsip-engine/microsip.ini"
    )
    assert user_config_path({"HOME": "/h"}) == Path("/h/.config/microsip-engine/microsip.ini")


def test_resolution_order(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    env: dict[str, str] = {"XDG_CONFIG_HOME": str(xdg), "HOME": str(tmp_path)}
    assert load_config(env=env).path is None
    user = user_config_path(env)
    user.parent.mkdir(parents=True)
    user.write_text("[Settings]\nsourcePort=1111\n")
    assert load_config(env=env).settings.source_port == 1111
    env_file = tmp_path / "env.ini"
    env_file.write_text("[Settings]\nsourcePort=2222\n")
    env["MICROSIP_INI"] = str(env_file)
    assert load_config(env=env).settings.source_port == 2222
    explicit = tmp_path / "explicit.ini"
    explicit.write_text("[Settings]\nsourcePort=3333\n")
    config = load_config(explicit, env=env)
    assert config.settings.source_port == 3333 and config.path == explicit


def test_missing_explicit_or_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.ini"):
        load_config(tmp_path / "nope.ini", env={})
    with pytest.raises(ConfigError, match="MICROSIP_INI"):
        load_config(env={"MICROSIP_INI": str(tmp_path / "gone.ini"), "HOME": str(tmp_path)})


def test_with_values_edits_one_line_utf16(tmp_path: Path) -> None:
    path = write(tmp_path, SAMPLE, "utf-16-le-bom")
    original = path.read_bytes()
    config = load_config(path, env={})
    updated = config.save_password(1, "fresh")
    assert updated.accounts[1].password == "fresh"
    assert updated.path == path
    assert path.read_bytes() == original.replace(
        "password=secret1".encode("utf-16-le"), "password=fresh".encode("utf-16-le")
    )
    assert config.accounts[1].password == "secret1"  # the old Config is unchanged


def test_with_values_keeps_concurrent_edits(tmp_path: Path) -> None:
    path = write(tmp_path, "[Settings]\naccountId=1\n[Account1]\ndomain=a\n[Account2]\ndomain=b\n")
    config = load_config(path, env={})
    path.write_bytes(path.read_bytes() + b"; added by MicroSIP\r\n")
    updated = config.set_account_id(2)
    assert updated.active_account() == updated.accounts[2]
    assert path.read_bytes().endswith(b"; added by MicroSIP\r\n")
    assert b"accountId=2\r\n" in path.read_bytes()


def test_with_values_rejects_invalid_without_writing(tmp_path: Path) -> None:
    path = write(tmp_path, SAMPLE)
    before = path.read_bytes()
    config = load_config(path, env={})
    with pytest.raises(ConfigError, match="DTMFMethod"):
        config.with_values({("Settings", "DTMFMethod"): "9"})
    with pytest.raises(ConfigError, match="plaintext"):
        config.save_password(2, ENCRYPTED)
    assert path.read_bytes() == before


def test_set_account_id_unknown(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SAMPLE), env={})
    with pytest.raises(NotFoundError):
        config.set_account_id(7)
    with pytest.raises(NotFoundError):
        config.save_password(9, "x")


def test_with_values_from_default_creates_user_file(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "HOME": str(tmp_path)}
    default = load_config(env=env)
    updated = default.with_values(
        {("Account1", "domain"): "pbx.example", ("Account1", "password"): "pw"}, env=env
    )
    target = user_config_path(env)
    assert updated.path == target and target.is_file()
    assert stat.S_IMODE(target.parent.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert updated.accounts[1].domain == "pbx.example"
    data = target.read_bytes()
    assert not data.startswith(codecs.BOM_UTF8)
    data.decode("utf-8")
    # The embedded default's text is kept; the new section is appended.
    assert data.startswith(default.document.to_bytes())
    assert load_config(env=env).path == target
    with pytest.raises(ConfigError, match="created here"):
        default.with_values({("Settings", "DND"): "1"}, env=env)


def test_config_is_frozen_and_account_defaults(tmp_path: Path) -> None:
    config = load_config(env={"HOME": str(tmp_path)})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.path = tmp_path  # type: ignore[misc]
    account = AccountConfig(index=3)
    assert account.transport == "udp" and account.register_refresh == 300
    assert account.keep_alive == 15 and account.srtp == ""
