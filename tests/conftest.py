"""Shared fixtures. Real SIP peers come from ``tests/peers`` (its module
docstrings record how each peer behaves); audio helpers from ``tests/audio.py``.

Peer fixtures skip when a peer binary is missing, or fail when ``CI=true``.
When a test fails, the log tails of the peers it used are attached to the report.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path

import pytest
import structlog
from audio import write_tone_wav
from peers import BaresipFactory, Kamailio, SippFactory, require

_PEER_LOGS = pytest.StashKey[list[Callable[[], str]]]()


def _attach_logs(request: pytest.FixtureRequest, name: str, tail: Callable[[], str]) -> None:
    request.node.stash.setdefault(_PEER_LOGS, []).append(lambda: f"[{name}]\n{tail()}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when in {"setup", "call"}:
        for tail in item.stash.get(_PEER_LOGS, []):
            report.sections.append(("peer logs", tail()))
    return report


@pytest.fixture
def kamailio(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kamailio]:
    """A fresh Kamailio registrar/proxy (users alice, bob, carol, dave with
    password ``<name>-secret``) on an OS-chosen UDP+TCP port."""
    instance = Kamailio(
        tmp_path / "kamailio", kamailio=require("kamailio"), kamcmd=require("kamcmd")
    )
    _attach_logs(request, "kamailio", instance.log_tail)
    try:
        yield instance.start()
    finally:
        instance.stop()


@pytest.fixture
def sipp_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SippFactory]:
    """Start SIPp clients/servers: ``sipp_factory.uac(target, ...)``, ``.uas(...)``."""
    factory = SippFactory(tmp_path / "sipp", binary=require("sipp"))
    _attach_logs(
        request, "sipp", lambda: "\n".join(run.log_tail(20) for run in factory.runs) or "(none)"
    )
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def baresip_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaresipFactory]:
    """Start baresip far ends: ``baresip_factory("bob", wav=..., max_calls=...)``."""
    factory = BaresipFactory(tmp_path / "baresip", binary=require("baresip"))
    _attach_logs(
        request,
        "baresip",
        lambda: "\n".join(b.log_tail(30) for b in factory.instances) or "(none)",
    )
    try:
        yield factory
    finally:
        factory.stop_all()


ToneWav = Callable[..., Path]


@pytest.fixture
def tone_wav(tmp_path: Path) -> ToneWav:
    """``tone_wav(freq_hz_or_list, seconds=30.0, rate=8000, amplitude=0.5) -> Path``:
    a 16-bit mono WAV in the test's tmp dir (cached per arguments)."""
    made: dict[tuple[object, ...], Path] = {}

    def make(
        freq_hz: float | Sequence[float],
        seconds: float = 30.0,
        rate: int = 8000,
        amplitude: float = 0.5,
    ) -> Path:
        freqs = (freq_hz,) if isinstance(freq_hz, int | float) else tuple(freq_hz)
        key = (freqs, seconds, rate, amplitude)
        if key not in made:
            label = "+".join(f"{f:g}" for f in freqs)
            path = tmp_path / "tones" / f"tone-{label}Hz-{seconds:g}s-{rate}.wav"
            path.parent.mkdir(exist_ok=True)
            made[key] = write_tone_wav(path, freqs, seconds, rate, amplitude)
        return made[key]

    return make


@pytest.fixture(autouse=True)
def private_user_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engines started by a test keep their history, recordings, saved configuration
    and control socket inside the test's tmp dir, never in the user's home."""
    base = tmp_path_factory.mktemp("xdg")
    for name in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        path = base / name.lower()
        path.mkdir()
        monkeypatch.setenv(name, str(path))
    monkeypatch.delenv("MICROSIP_INI", raising=False)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (CN and IP subjectAltName), for TLS tests."""
    openssl = require("openssl")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def unconfigured_structlog() -> Iterator[None]:
    """structlog as in a fresh process, for a test that captures info lines: any
    in-process CallManager before it left the process filtering below warning
    (``engine.logs.library_default``), and ``capture_logs`` keeps that filter."""
    before = structlog.get_config()
    structlog.reset_defaults()
    try:
        yield
    finally:
        structlog.configure(**before)
