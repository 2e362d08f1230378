"""What the loaded pjsua2 build really does, on both builds the engine supports.

``./scripts/test`` runs the suite on the PyPI wheel; ``.ci/run`` runs it again on the
build of ``scripts/build-pjsua2`` (``PJSUA2_BUILD=source``). Each test states what
its build must show — the wheel's limits reported honestly, the source build's
figures reached (docs/pjsua2-builds.md has both columns) — and measures it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog.testing
from audio import dominant_frequency, read_wav, write_tone_wav
from buildkit import EXPECTED
from enginekit import BASE_INI, Engines, engines_fixture
from peers.baresip import BaresipFactory
from peers.process import free_port, require, tcp_port_listening, wait_until
from peers.sipp import SippFactory

from engine.errors import CapacityError, InvalidTargetError


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Engines]:
    yield from engines_fixture(tmp_path)


def test_the_engine_reports_the_builds_real_limits(engines: Engines) -> None:
    """Measured at start (calls by a loopback probe, TLS from OpenSSL's suites); a
    codec ``audioCodecs`` asks for is enabled only if the build has it."""
    manager, _ = engines.start(BASE_INI.replace("audioCodecs=", "audioCodecs=opus/48000/2 "))
    limits = manager.status()["limits"]
    assert limits["build"] == EXPECTED.build
    assert limits["max_calls"] == EXPECTED.max_calls
    assert limits["max_accounts"] == EXPECTED.max_accounts
    assert limits["pjsip_version"].startswith(EXPECTED.pjsip), limits
    assert limits["tls_max"] == EXPECTED.tls
    assert ("opus/48000/2" in limits["codecs"]) is EXPECTED.opus, limits["codecs"]


@pytest.mark.peers
def test_as_many_calls_as_the_build_allows_then_a_clear_refusal(
    engines: Engines, sipp_factory: SippFactory
) -> None:
    """Every call the build allows rings at SIPp at once; the next one is refused."""
    manager, events = engines.start()
    n = EXPECTED.max_calls
    uas = sipp_factory.uas("uas_ring", calls=n, ring_timeout_ms=60000)
    numbers = [manager.dial(uas.uri("ring")).call for _ in range(n)]
    for number in numbers:
        events.wait_for("call_state", timeout=30, call=number, state="early")
    with pytest.raises(CapacityError, match=f"allows {n} "):
        manager.dial(uas.uri("ring"))
    for number in numbers:
        manager.hangup(number)  # CANCEL
    for number in numbers:
        events.wait_for("call_state", timeout=30, call=number, state="disconnected")
    assert uas.wait(60).received("CANCEL") == n


def test_rtp_ports_held_by_others_do_not_shrink_the_measured_capacity(
    engines: Engines,
) -> None:
    """Other programs (other engines) holding the default RTP range 4000+ once made
    the start-up probe stop at its second call and report a capacity of 1."""
    held: list[socket.socket] = []
    try:
        for port in range(4000, 4300):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()  # already someone else's: just as good
                continue
            held.append(sock)
        manager, _ = engines.start()
    finally:
        for sock in held:
            sock.close()
    assert manager.status()["capacity"]["max_calls"] == EXPECTED.max_calls


def test_a_probe_cut_short_by_another_error_falls_back_to_the_builds_figure(
    engines: Engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only "too many calls" ends the count; any other error says nothing of the build,
    so the engine uses the build's own figure and says why in one warning."""
    from engine._pj import probe

    real = probe.pj.Call.makeCall
    made: list[int] = []

    def fail_second(call: object, uri: str, prm: object) -> None:
        if made:
            error = probe.pj.Error()
            error.status, error.reason = 120098, "Address already in use"
            raise error
        made.append(1)
        real(call, uri, prm)

    monkeypatch.setattr(probe.pj.Call, "makeCall", fail_second)
    with structlog.testing.capture_logs() as logs:
        manager, _ = engines.start()
    monkeypatch.undo()
    assert made, "the probe never placed a call"
    warnings = [e for e in logs if e.get("event") == "capacity_probe_error"]
    assert len(warnings) == 1, logs
    assert "Address already in use" in warnings[0]["error"]
    assert f"build's figure, {EXPECTED.max_calls}" in warnings[0]["detail"]
    assert manager.status()["capacity"]["max_calls"] == EXPECTED.max_calls


def test_tls_version_negotiated_with_openssl(
    engines: Engines, certificate: tuple[Path, Path]
) -> None:
    """An OpenSSL 3 server offering TLS 1.2 and 1.3: the build's best is negotiated."""
    cert, key = certificate
    port = free_port("tcp")
    server = subprocess.Popen(
        [require("openssl"), "s_server", "-brief", "-naccept", "1", "-accept",
         f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    negotiated = threading.Event()

    def read() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            lines.append(line.strip())
            if line.startswith("Protocol version"):
                negotiated.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: tcp_port_listening(port), 20, "openssl s_server to listen")
        ini = BASE_INI.replace("transport=", "transport=tls") + f"[Engine]\ntlsCaFile={cert}\n"
        manager, _ = engines.start(ini)
        manager.dial(f"sip:tls-probe@127.0.0.1:{port};transport=tls")
        assert negotiated.wait(20), f"no TLS handshake; openssl said {lines}"
        version = next(x for x in lines if x.startswith("Protocol version"))
        assert version == f"Protocol version: TLSv{EXPECTED.tls}", lines
    finally:
        server.kill()
        server.wait(10)
        reader.join(5)


@pytest.mark.peers
def test_opus_negotiated_with_baresip_when_audio_codecs_puts_it_first(
    engines: Engines, baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    # baresip's file source runs at the codec's format unless told (then it resamples).
    tone = write_tone_wav(tmp_path / "tone-660.wav", 660.0, 120.0)
    bob = baresip_factory(
        "bob",
        wav=tone,
        extra_config={"module": "opus.so", "ausrc_srate": "8000", "ausrc_channels": "1"},
    )
    bob.add_local_account("bob")
    ini = BASE_INI.replace("PCMU/8000/1 PCMA/8000/1", "opus/48000/2 PCMU/8000/1")
    manager, events = engines.start(ini)
    call = manager.dial(bob.uri("bob"))  # bob's local account answers by itself
    media = events.wait_for("media_state", call=call.call, status="active")
    # The wheel has no Opus: the next codec audioCodecs lists is negotiated instead.
    assert media["codec"] == ("opus/48000" if EXPECTED.opus else "PCMU/8000"), media
    recording = tmp_path / "opus.wav"
    manager.record(call.call, str(recording))
    time.sleep(2.0)  # two seconds of audio to measure, not a wait for an event
    manager.hangup(call.call)
    events.wait_for("recording_saved", call=call.call)
    rate, samples = read_wav(recording)
    assert abs(dominant_frequency(samples, rate, 0.5) - 660.0) < 10


PJSUA2_ONLY = """
import sys
import pjsua2 as pj
ep = pj.Endpoint()
ep.libCreate()
cfg = pj.EpConfig()
cfg.uaConfig.threadCnt = 0
cfg.uaConfig.mainThreadOnly = True
cfg.logConfig.level = 0
cfg.logConfig.consoleLevel = 0
ep.libInit(cfg)
ep.audDevManager().setNullDev()
tc = pj.TransportConfig()
tc.boundAddress = "127.0.0.1"
ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
ep.libStart()
acc = pj.Account()
acfg = pj.AccountConfig()
acfg.idUri = "sip:misuse@127.0.0.1"
acc.create(acfg)
call = pj.Call(acc)
misuses = {
    # Operations on a Call pjsua never started.
    "call": [
        lambda: call.hangup(pj.CallOpParam()),
        lambda: call.getInfo(),
        lambda: call.dialDtmf("1"),
    ],
    # An over-long URI (the wheel asserts near 850 characters).
    "uri": [lambda: ep.utilVerifySipUri("sip:" + "a" * 1000 + "@h")],
}[sys.argv[1]]
refused = 0
for misuse in misuses:
    try:
        misuse()
    except pj.Error:
        refused += 1
print("refused", refused, flush=True)
del call, misuse, misuses
acc.shutdown()
del acc
ep.libDestroy()
"""


def run_pjsua2_only(tmp_path: Path, which: str) -> subprocess.CompletedProcess[str]:
    """pjsua2 alone in a child process (an abort must not take the test run with it)."""
    script = tmp_path / "misuse.py"
    script.write_text(textwrap.dedent(PJSUA2_ONLY))
    return subprocess.run(
        [sys.executable, str(script), which],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip


def test_call_misuse_aborts_the_wheel_and_is_an_error_on_the_source_build(
    tmp_path: Path,
) -> None:
    """Why the engine never touches a Call pjsua has not started: on the wheel that
    aborts the interpreter; the source build has no C assert() and says no."""
    proc = run_pjsua2_only(tmp_path, "call")
    outcome = (proc.returncode, proc.stdout[-300:], proc.stderr[-300:])
    if EXPECTED.aborts_on_misuse:
        assert proc.returncode == -signal.SIGABRT, outcome
    else:
        assert proc.returncode == 0 and "refused 3" in proc.stdout, outcome


def test_an_over_long_uri_kills_both_builds_so_the_engine_refuses_it(
    tmp_path: Path, engines: Engines
) -> None:
    """pjproject (2.15.1 and 2.17) dies on a 1000-character URI in
    ``utilVerifySipUri`` — an abort on the wheel, a segfault with assertions compiled
    out — so over-long input never reaches pjsua2 from the engine, on either build."""
    proc = run_pjsua2_only(tmp_path, "uri")
    assert proc.returncode in (-signal.SIGABRT, -signal.SIGSEGV), (proc.returncode, proc.stdout)
    manager, _ = engines.start()
    long_uri = "sip:" + "a" * 1000 + "@127.0.0.1"
    with pytest.raises(InvalidTargetError, match="too long"):
        manager.dial(long_uri)
    with pytest.raises(InvalidTargetError, match="too long"):
        manager.send_message(long_uri, "hello")
    with pytest.raises(InvalidTargetError, match="too long"):
        manager.dial("sip:bob@127.0.0.1", headers={"X-Long": "x" * 2000})
    assert manager.calls() == []
