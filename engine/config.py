"""Typed configuration read from a MicroSIP-compatible microsip.ini.

The engine is a drop-in for MicroSIP, so its configuration *is* a microsip.ini:
``[Settings]`` (3.22 also ``[Global]``), ``[Account0]`` (local "call by IP"),
``[Account1]``..``[AccountN]``, with MicroSIP's key names and defaults. Engine-only
options live in an ``[Engine]`` section that MicroSIP ignores. Values are checked
when the file is loaded, so a wrong value fails at start-up with the file, line
and key instead of misbehaving during a call. Writing back (a password, the
active account) edits single lines and leaves the rest of the file byte-identical.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .configpath import user_config_path
from .errors import ConfigError, NotFoundError
from .ini import IniDocument

__all__ = [
    "AccountConfig",
    "Config",
    "EngineSettings",
    "Settings",
    "load_config",
    "looks_encrypted",
    "user_config_path",
]

_T = TypeVar("_T")

#: MicroSIP's label for the local account when [Account0] has none.
LOCAL_ACCOUNT_LABEL = "Local (call by IP address)"
#: Highest pjsip log level allowed: level 5 and up print SRTP keys and credentials.
MAX_PJSIP_LOG_LEVEL = 4


@dataclass(frozen=True)
class _Ini:
    """How one dataclass field is stored in the INI file."""

    key: str
    lo: int | None = None
    hi: int | None = None
    #: Allowed values (compared case-insensitively) -> normalised value.
    choices: Mapping[str, str] | None = None
    #: For tuple fields: regex separating the items.
    split: str = r"\s+"


def _ini(default: _T, key: str, *, repr: bool = True, **kw: Any) -> _T:
    """A dataclass field backed by INI ``key`` (see ``_Ini`` for the options)."""
    meta = {"ini": _Ini(key, **kw)}
    result: _T = field(default=default, repr=repr, metadata=meta)
    return result


def _one_of(*values: str) -> dict[str, str]:
    return {v: v for v in values}


@dataclass(frozen=True)
class AccountConfig:
    """One ``[AccountN]`` section; ``section`` is where it was read from.

    An account stored directly in ``[Settings]`` (MicroSIP before 3.x) has
    ``section == "Settings"`` and index 1. ``password`` never appears in repr.
    """

    index: int
    section: str = ""
    label: str = _ini("", "label")
    server: str = _ini("", "server")
    proxy: tuple[str, ...] = _ini((), "proxy")
    domain: str = _ini("", "domain")
    username: str = _ini("", "username")
    password: str = _ini("", "password", repr=False)
    #: Digest user name; MicroSIP uses ``username`` when it is empty.
    auth_id: str = _ini("", "authID")
    display_name: str = _ini("", "displayName")
    dialing_prefix: str = _ini("", "dialingPrefix")
    dial_plan: str = _ini("", "dialPlan")
    #: "" (show), "hard" (anonymous From; MicroSIP writes 1), or another value (Privacy: id).
    hide_cid: str = _ini("", "hideCID")
    voicemail_number: str = _ini("", "voicemailNumber")
    srtp: str = _ini("", "SRTP", choices=_one_of("", "optional", "mandatory"))
    #: "udp", "tcp", "tls", or "both" (MicroSIP's empty value: UDP and TCP).
    transport: str = _ini(
        "udp", "transport", choices={"udp": "udp", "tcp": "tcp", "tls": "tls", "": "both"}
    )
    public_addr: str = _ini("", "publicAddr")
    register_refresh: int = _ini(300, "registerRefresh")
    keep_alive: int = _ini(15, "keepAlive")
    publish: bool = _ini(False, "publish")
    ice: bool = _ini(False, "ICE")
    allow_rewrite: bool = _ini(False, "allowRewrite")
    disable_session_timer: bool = _ini(False, "disableSessionTimer")


@dataclass(frozen=True)
class Settings:
    """``[Settings]`` (and 3.22 ``[Global]``) with MicroSIP's defaults.

    ``account_id`` is the *effective* active account after MicroSIP's rules (see
    ``_resolve_account_id``), not necessarily the number written in the file.
    """

    account_id: int = _ini(0, "accountId", lo=0)
    enable_local_account: bool = _ini(False, "enableLocalAccount")
    source_port: int = _ini(0, "sourcePort", lo=0, hi=65535)
    rtp_port_min: int = _ini(0, "rtpPortMin", lo=0, hi=65535)
    rtp_port_max: int = _ini(0, "rtpPortMax", lo=0, hi=65535)
    rport: bool = _ini(True, "rport")
    stun: str = _ini("", "STUN")
    enable_stun: bool = _ini(False, "enableSTUN")
    dns_srv: bool = _ini(False, "dnsSrv")
    dns_srv_ns: str = _ini("", "dnsSrvNs")
    #: Empty: the engine chooses its own User-Agent.
    user_agent: str = _ini("", "userAgent")
    audio_codecs: tuple[str, ...] = _ini(("PCMA/8000/1", "PCMU/8000/1"), "audioCodecs")
    audio_input_device: str = _ini("", "audioInputDevice")
    audio_output_device: str = _ini("", "audioOutputDevice")
    audio_ring_device: str = _ini("", "audioRingDevice")
    ringing_sound: str = _ini("", "ringingSound")
    volume_input: int = _ini(100, "volumeInput", lo=0, hi=100)
    volume_output: int = _ini(100, "volumeOutput", lo=0, hi=100)
    volume_ring: int = _ini(100, "volumeRing", lo=0, hi=100)
    ec: bool = _ini(True, "EC")
    vad: bool = _ini(False, "VAD")
    mic_amplification: bool = _ini(False, "micAmplification")
    auto_answer: str = _ini("button", "autoAnswer", choices=_one_of("", "button", "header", "all"))
    aa: bool = _ini(False, "AA")
    auto_answer_delay: int = _ini(0, "autoAnswerDelay", lo=0)
    auto_answer_number: tuple[str, ...] = _ini((), "autoAnswerNumber", split=r"[;|]")
    deny_incoming: str = _ini(
        "button",
        "denyIncoming",
        choices=_one_of("", "button", "user", "domain", "userdomain", "remotedomain", "all"),
    )
    dnd: bool = _ini(False, "DND")
    forwarding: str = _ini("", "forwarding", choices=_one_of("", "button", "all"))
    fwd: bool = _ini(False, "FWD")
    forwarding_number: str = _ini("", "forwardingNumber")
    forwarding_delay: int = _ini(0, "forwardingDelay", lo=0)
    call_waiting: bool = _ini(True, "callWaiting")
    #: 0 = no limit.
    max_concurrent_calls: int = _ini(0, "maxConcurrentCalls", lo=0)
    auto_hang_up_time: int = _ini(0, "autoHangUpTime", lo=0)
    single_mode: bool = _ini(True, "singleMode")
    #: 0 auto (RFC 2833, else in-band), 1 in-band, 2 RFC 2833, 3 SIP INFO.
    dtmf_method: int = _ini(0, "DTMFMethod", lo=0, hi=3)
    local_dtmf: bool = _ini(True, "localDTMF")
    recording_path: str = _ini("", "recordingPath")
    recording_format: str = _ini("", "recordingFormat")
    auto_recording: bool = _ini(False, "autoRecording")
    disable_messaging: bool = _ini(False, "disableMessaging")
    enable_log: bool = _ini(False, "enableLog")
    cmd_outgoing_call: str = _ini("", "cmdOutgoingCall")
    cmd_incoming_call: str = _ini("", "cmdIncomingCall")
    cmd_call_ring: str = _ini("", "cmdCallRing")
    cmd_call_answer: str = _ini("", "cmdCallAnswer")
    cmd_call_answer_video: str = _ini("", "cmdCallAnswerVideo")
    cmd_call_busy: str = _ini("", "cmdCallBusy")
    cmd_call_start: str = _ini("", "cmdCallStart")
    cmd_call_end: str = _ini("", "cmdCallEnd")


@dataclass(frozen=True)
class EngineSettings:
    """``[Engine]``: options of this engine only (MicroSIP ignores the section)."""

    #: Path of the local control socket; "" = the engine's default location.
    control_socket: str = _ini("", "controlSocket")
    #: Token file of the TCP control listener; "" = next to the control socket.
    tcp_control_token: str = _ini("", "tcpControlToken")
    #: "host:port" for a TCP control listener; "" = none.
    tcp_control: str = _ini("", "tcpControl")
    #: Seconds a control connection (Unix or TCP) may wait between requests before
    #: the engine closes it; event streams never time out (docs/control-protocol.md).
    control_idle_timeout: int = _ini(30, "controlIdleTimeout", lo=1)
    log_format: str = _ini("console", "logFormat", choices=_one_of("console", "json"))
    log_level: str = _ini("info", "logLevel", choices=_one_of("debug", "info", "warning", "error"))
    #: pjsip's own log level, capped at 4 (level 5 prints SRTP keys).
    pjsip_log_level: int = _ini(3, "pjsipLogLevel", lo=0)
    #: Local IP address for SIP and RTP sockets; "" = all interfaces.
    bind_address: str = _ini("", "bindAddress")
    #: Directory for engine state (history, sockets); "" = the default.
    data_dir: str = _ini("", "dataDir")
    #: Call history database; "" = inside ``data_dir``.
    history_path: str = _ini("", "historyPath")
    #: Seconds a cmd* hook may run before its process group is killed (MicroSIP: 10).
    hook_timeout: int = _ini(10, "hookTimeout", lo=1)
    #: Rows kept in the call history (MicroSIP keeps 1000).
    history_rows: int = _ini(1000, "historyRows", lo=1)
    #: Simultaneous calls; 0 = as many as the pjsua2 build allows.
    max_calls: int = _ini(0, "maxCalls", lo=0)
    #: Seconds without RTP from the far end of an answered, unheld call before it is
    #: ended with BYE (the far end died or lost its network); 0 = never.
    media_timeout: int = _ini(30, "mediaTimeout", lo=0)
    #: Ignore ``audioInputDevice``/``audioOutputDevice``: the null device only (servers).
    null_audio: bool = _ini(False, "nullAudio")
    #: Take hex-looking passwords as plaintext instead of MicroSIP ciphertext.
    plain_hex_passwords: bool = _ini(False, "plainHexPasswords")
    #: TLS: CA bundle for verifying servers ("" = the system's), our certificate and
    #: key (needed to accept TLS connections), and whether to verify (default yes).
    tls_ca_file: str = _ini("", "tlsCaFile")
    tls_cert_file: str = _ini("", "tlsCertFile")
    tls_key_file: str = _ini("", "tlsKeyFile")
    tls_verify_server: bool = _ini(True, "tlsVerifyServer")


# -- typed reading --------------------------------------------------------------------

_INT = re.compile(r"[+-]?[0-9]+")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class _Reader:
    """Typed reads from INI sections (first match wins), with errors at file:line."""

    def __init__(self, doc: IniDocument, *sections: str) -> None:
        self.doc = doc
        self.sections = sections

    def raw(self, key: str) -> tuple[str, str, int | None] | None:
        """(value, section it was found in, line) or None when the key is absent."""
        for section in self.sections:
            value = self.doc.get(section, key)
            if value is not None:
                return value, section, self.doc.line_number(section, key)
        return None

    def error(self, key: str, problem: str) -> ConfigError:
        found = self.raw(key)
        section, line = (found[1], found[2]) if found else (self.sections[0], None)
        return ConfigError(f"[{section}] {key}: {problem}", path=self.doc.path, line=line, key=key)

    def integer(self, key: str, default: int, spec: _Ini) -> int:
        found = self.raw(key)
        text = found[0] if found else ""
        if not text:
            return default
        if not _INT.fullmatch(text):
            raise self.error(key, f"{text!r} is not a whole number")
        value = int(text)
        if (spec.lo is not None and value < spec.lo) or (spec.hi is not None and value > spec.hi):
            bounds = f"between {spec.lo} and {spec.hi}" if spec.hi is not None else f">= {spec.lo}"
            raise self.error(key, f"{value} is out of range (must be {bounds})")
        return value

    def flag(self, key: str, default: bool) -> bool:
        found = self.raw(key)
        text = found[0].casefold() if found else ""
        if not text:
            return default
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        if _INT.fullmatch(text):
            return int(text) != 0  # MicroSIP reads most flags with _wtoi
        raise self.error(key, f"{text!r} is not 0 or 1")

    def read(self, key: str, default: object, spec: _Ini) -> object:
        """The value of ``key`` converted to the type of ``default``."""
        if isinstance(default, bool):
            return self.flag(key, default)
        if isinstance(default, int):
            return self.integer(key, default, spec)
        found = self.raw(key)
        if isinstance(default, tuple):
            if not found or not found[0]:
                return default
            return tuple(p.strip() for p in re.split(spec.split, found[0]) if p.strip())
        if found is None:
            return default
        if spec.choices is None:
            return found[0]
        value = spec.choices.get(found[0].casefold())
        if value is None:
            allowed = ", ".join(repr(c) for c in spec.choices)
            raise self.error(key, f"{found[0]!r} is not one of {allowed}")
        return value


def _read_fields(cls: type[Any], reader: _Reader) -> dict[str, Any]:
    """Keyword arguments for dataclass ``cls`` from every field that has INI metadata."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("ini")
        if isinstance(spec, _Ini):
            values[f.name] = reader.read(spec.key, f.default, spec)
    return values


def looks_encrypted(password: str) -> bool:
    """True if ``password`` looks like MicroSIP's RC2 ciphertext (hex, 8-byte blocks).

    MicroSIP's key is not published, so such a value cannot be decrypted here.
    """
    return (
        len(password) >= 16
        and len(password) % 16 == 0
        and bool(re.fullmatch(r"[0-9A-Fa-f]+", password))
    )


def _read_account(doc: IniDocument, index: int, section: str) -> AccountConfig:
    """Read one account, applying MicroSIP's normalisations and clamps."""
    values = _read_fields(AccountConfig, _Reader(doc, section))
    if not values["auth_id"]:
        values["auth_id"] = values["username"]
    if index == 0 and not values["label"]:
        values["label"] = LOCAL_ACCOUNT_LABEL
    hide = values["hide_cid"]
    values["hide_cid"] = {"0": "", "1": "hard"}.get(hide, hide)
    refresh = values["register_refresh"]
    values["register_refresh"] = 300 if refresh <= 0 else max(refresh, 10)
    keep = values["keep_alive"]
    values["keep_alive"] = 15 if keep <= 0 else max(keep, 2)
    return AccountConfig(index=index, section=section, **values)


def _read_accounts(doc: IniDocument, warn: list[str] | None = None) -> dict[int, AccountConfig]:
    """Account1..N, stopping at the first one that does not exist, as MicroSIP's
    ``while (AccountLoad(i)) i++`` does: an account exists only if its section exists
    and its domain is set.

    A legacy account kept in [Settings] stands in for a missing [Account1]; it is
    only read, never migrated on disk.
    """
    accounts: dict[int, AccountConfig] = {}
    index = 1
    while True:
        section = f"Account{index}"
        if index == 1 and not doc.has_section(section) and doc.get("Settings", "domain"):
            section = "Settings"
        elif not doc.has_section(section):
            return accounts
        account = _read_account(doc, index, section)
        if not account.domain:
            if warn is not None:  # MicroSIP skips it without a word; we say so
                line = doc.line_number(section, "domain")
                warn.append(
                    f"{doc.path}{f':{line}' if line else ''}: [{section}] has no domain "
                    "(key 'domain'), so it is ignored, as MicroSIP ignores it and every "
                    "account after it; set domain= to use it"
                )
            return accounts
        accounts[index] = account
        index += 1


def _read_settings(doc: IniDocument) -> Settings:
    reader = _Reader(doc, "Settings", "Global")
    settings = Settings(**_read_fields(Settings, reader))
    lo, hi = settings.rtp_port_min, settings.rtp_port_max
    if lo and hi and lo > hi:
        raise reader.error("rtpPortMin", f"{lo} is above rtpPortMax={hi}")
    return settings


def _read_engine(doc: IniDocument) -> EngineSettings:
    reader = _Reader(doc, "Engine")
    engine = EngineSettings(**_read_fields(EngineSettings, reader))
    host, sep, port = engine.tcp_control.rpartition(":")
    if engine.tcp_control and not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise reader.error("tcpControl", f"{engine.tcp_control!r} is not host:port")
    level = min(engine.pjsip_log_level, MAX_PJSIP_LOG_LEVEL)
    return dataclasses.replace(engine, pjsip_log_level=level)


def _resolve_account_id(
    doc: IniDocument, settings: Settings, accounts: Mapping[int, AccountConfig], warn: list[str]
) -> int:
    """MicroSIP's rules: missing -> 1 if Account1 exists; 0 without the local account
    -> 1; a number with no usable account -> 0 (local account only)."""
    found = _Reader(doc, "Settings", "Global").raw("accountId")
    if found is None or not found[0]:
        return 1 if 1 in accounts else 0
    wanted = settings.account_id
    if wanted == 0 and not settings.enable_local_account:
        wanted = 1
    if wanted > 0 and wanted not in accounts:
        if settings.account_id > 0:
            warn.append(
                f"{doc.path}:{found[2]}: accountId={wanted} but [Account{wanted}] is missing "
                "or has no domain (or an earlier account is missing); no account registers"
            )
        return 0
    return wanted


def _check_passwords(
    doc: IniDocument, accounts: Mapping[int, AccountConfig], active: int, warn: list[str]
) -> None:
    """Refuse MicroSIP ciphertext for the active account; warn about the others."""
    for account in accounts.values():
        if not looks_encrypted(account.password):
            continue
        line = doc.line_number(account.section, "password")
        what = (
            f"[{account.section}] password looks MicroSIP-encrypted (hex), and MicroSIP's "
            "key is not published so the engine cannot decrypt it"
        )
        if account.index != active:
            warn.append(f"{doc.path}:{line}: {what}; write it in plaintext to use this account")
            continue
        raise ConfigError(
            f"{what}. Write the password in plaintext (password=...) in [{account.section}]: "
            "MicroSIP accepts plaintext and the engine needs it. If this hex string really "
            "is the password, set plainHexPasswords=1 in [Engine].",
            path=doc.path,
            line=line,
            key="password",
        )


# -- the configuration ----------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """A loaded configuration: typed views plus the document they came from.

    ``path`` is None for the embedded default. ``accounts`` holds Account1..N that
    exist (section present and domain set); ``local_account`` is [Account0].
    """

    path: Path | None
    document: IniDocument = field(compare=False)
    settings: Settings
    engine: EngineSettings
    accounts: dict[int, AccountConfig]
    local_account: AccountConfig
    warnings: tuple[str, ...] = ()

    def active_account(self) -> AccountConfig | None:
        """The account that registers, or None when only the local account is used."""
        if self.settings.account_id <= 0:
            return None
        return self.accounts.get(self.settings.account_id)

    def with_values(
        self, updates: Mapping[tuple[str, str], str], *, env: Mapping[str, str] = os.environ
    ) -> Config:
        """Set ``(section, key) -> value`` in the file and return the reloaded Config.

        The edits are applied to the file as it is on disk now (so changes made by
        someone else since we loaded it are kept), validated, then saved atomically;
        a value that would make the configuration invalid raises ConfigError and the
        file is not touched. With the embedded default, a new UTF-8 file is created
        at ``user_config_path(env)``.
        """
        if self.path is not None:
            target = self.path
            doc = IniDocument.load(target)
        else:
            target = user_config_path(env)
            if target.exists():
                raise ConfigError(
                    "a configuration file was created here after the engine started; "
                    "reload the configuration and retry",
                    path=str(target),
                )
            doc = self.document.copy()
        for (section, key), value in updates.items():
            doc.set(section, key, value)
        doc.path = str(target)
        _build(doc, target)  # validate before the file is touched
        if self.path is None:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        doc.save(target)
        return _build(IniDocument.load(target), target)

    def save_password(
        self, index: int, password: str, *, env: Mapping[str, str] = os.environ
    ) -> Config:
        """Store ``password`` in plaintext for account ``index`` (0 = local account)."""
        account = self.local_account if index == 0 else self.accounts.get(index)
        if account is None:
            raise NotFoundError(f"no account {index}: [Account{index}] is missing or has no domain")
        return self.with_values({(account.section, "password"): password}, env=env)

    def set_account_id(self, index: int, *, env: Mapping[str, str] = os.environ) -> Config:
        """Make account ``index`` the registered one (0 = local account only)."""
        if index < 0 or (index > 0 and index not in self.accounts):
            raise NotFoundError(f"no account {index}: [Account{index}] is missing or has no domain")
        return self.with_values({("Settings", "accountId"): str(index)}, env=env)


def _build(doc: IniDocument, path: Path | None) -> Config:
    """Type and validate every section of ``doc``."""
    warn: list[str] = []
    engine = _read_engine(doc)
    settings = _read_settings(doc)
    accounts = _read_accounts(doc, warn)
    local = _read_account(doc, 0, "Account0")
    active = _resolve_account_id(doc, settings, accounts, warn)
    settings = dataclasses.replace(settings, account_id=active)
    if not engine.plain_hex_passwords:
        _check_passwords(doc, accounts, active, warn)
    warn += key_warnings(doc, accounts)
    return Config(
        path=path,
        document=doc,
        settings=settings,
        engine=engine,
        accounts=accounts,
        local_account=local,
        warnings=tuple(warn),
    )


def _load_embedded() -> Config:
    # Beside this module (package data). Not importlib.resources: it imports
    # tempfile, hashlib and OpenSSL, 1.5 MB of resident memory for one small file.
    resource = Path(__file__).with_name("default.ini")
    return _build(IniDocument.parse(resource.read_bytes(), str(resource)), None)


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] = os.environ
) -> Config:
    """Load the configuration, looking in this order:

    1. ``path`` if given (it must exist);
    2. ``$MICROSIP_INI`` if set (it must exist);
    3. ``user_config_path(env)`` if it exists;
    4. the embedded ``default.ini``, so the engine can start with no file at all.
    """
    explicit = os.fspath(path) if path is not None else env.get("MICROSIP_INI", "")
    if explicit:
        target = Path(explicit)
        if not target.is_file():
            source = "" if path is not None else " (from MICROSIP_INI)"
            raise ConfigError(f"configuration file not found{source}", path=explicit)
    else:
        target = user_config_path(env)
        if not target.is_file():
            return _load_embedded()
    return _build(IniDocument.load(target), target)


# -- warnings for what a typo would otherwise leave silent ---------------------------

#: MicroSIP keys the engine does not model but must not call typos
#: (docs/microsip.md#ini-settings).
_MICROSIP_ONLY_KEYS = {
    k.casefold(): k
    for k in (
        *("AA", "DND", "FWD", "audioRingDevice", "volumeRing", "EC", "VAD"),
        *("micAmplification", "ringingSound", "enableLog", "singleMode", "localDTMF"),
        *("rport", "dnsSrv", "dnsSrvNs", "STUN", "enableSTUN", "enableMediaButtons"),
        *("accountId", "enableLocalAccount"),
    )
}


def _ini_keys(*classes: type[Any]) -> dict[str, str]:
    """The INI keys the dataclasses read: casefolded -> as spelt in the docs."""
    return {
        f.metadata["ini"].key.casefold(): f.metadata["ini"].key
        for cls in classes
        for f in dataclasses.fields(cls)
        if isinstance(f.metadata.get("ini"), _Ini)
    }


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance with adjacent transpositions (``pasword``, ``passwrod``)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, prev2[j - 2] + 1)
            row.append(cost)
        prev2, prev = prev, row
    return prev[-1]


def _closest(key: str, known: dict[str, str]) -> str | None:
    """The known key within a small edit distance of ``key`` (case-insensitive)."""
    folded = key.casefold()
    if folded in known or len(folded) < 4:
        return None
    limit = 1 if len(folded) <= 5 else 2
    best = min(known, key=lambda k: _edit_distance(folded, k))
    return known[best] if _edit_distance(folded, best) <= limit else None


def key_warnings(doc: IniDocument, accounts: Mapping[int, AccountConfig]) -> list[str]:
    """Unknown keys stay (MicroSIP keeps them), but one that is a near miss of a key
    the engine reads is a typo whose only symptom would be, say, a 403: name both.
    An account with a registrar and no password gets the same treatment."""
    account_keys = _ini_keys(AccountConfig)
    out: list[str] = []
    for section in doc.sections():
        if re.fullmatch(r"Account\d+", section):
            known = account_keys
        elif section in ("Settings", "Global"):
            known = {**_ini_keys(Settings), **account_keys, **_MICROSIP_ONLY_KEYS}
        elif section == "Engine":
            known = _ini_keys(EngineSettings)
        else:
            continue
        for key, _value in doc.items(section):
            guess = _closest(key, known)
            if guess is not None:
                line = doc.line_number(section, key)
                out.append(f"[{section}] {key}: unknown key (line {line}); did you mean {guess}?")
    for index, acc in sorted(accounts.items()):
        if acc.server and not acc.password:
            out.append(
                f"[Account{index}] has server={acc.server} but no password: the registrar "
                "will refuse it (add the password, in plaintext)"
            )
    return out
