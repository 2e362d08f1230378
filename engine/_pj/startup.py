"""Endpoint start-up: what pjsua2 is told before and after ``libStart``.

The steps are the stack's (:meth:`~engine._pj.lifecycle.StackLoop.start_up`, which keeps
every object they create referenced so a failed start can still be torn down);
the settings they turn into pjsua2 configuration live here.
"""

from __future__ import annotations

import dataclasses

import pjsua2 as pj
import structlog

from ..state import Limits
from .endpoint import SipEndpoint
from .logwriter import StructlogWriter, log_config
from .probe import BuildFigures, probe_max_calls
from .resources import quiet_stdout
from .transports import Transports, set_codecs, tls_max_version

log = structlog.get_logger("engine.stack")


@dataclasses.dataclass(frozen=True)
class StackSettings:
    """What the endpoint needs, already validated (built from microsip.ini)."""

    sip_port: int = 5060
    port_fallback: bool = True
    bind_address: str = ""
    public_address: str = ""
    transports: tuple[str, ...] = ("udp", "tcp")
    rtp_port_min: int = 0
    rtp_port_max: int = 0
    user_agent: str = "microsip-engine"
    nameservers: tuple[str, ...] = ()
    stun_servers: tuple[str, ...] = ()
    codecs: tuple[str, ...] = ("PCMU/8000/1", "PCMA/8000/1")
    max_calls: int = 0
    pjsip_log_level: int = 3
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_verify_server: bool = True
    vad: bool = False
    echo_canceller: bool = True
    #: Real devices (PortAudio names, or unique parts of them); "" = null device only.
    audio_input_device: str = ""
    audio_output_device: str = ""


def init_library(
    ep: SipEndpoint, s: StackSettings, build: BuildFigures, writer: StructlogWriter
) -> None:
    """libCreate and libInit in poll mode (every callback on the calling thread),
    then the null sound device, which is mandatory on a build without sound."""
    with quiet_stdout():
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = s.max_calls or build.max_calls
        cfg.uaConfig.userAgent = s.user_agent
        for ns in s.nameservers:
            cfg.uaConfig.nameserver.append(ns)
        for stun in s.stun_servers:
            cfg.uaConfig.stunServer.append(stun)
        cfg.uaConfig.stunIgnoreFailure = True
        cfg.medConfig.sndAutoCloseTime = -1  # else the null clock stops ~1 s in
        cfg.medConfig.noVad = not s.vad
        if not s.echo_canceller:
            cfg.medConfig.ecTailLen = 0
        log_config(cfg.logConfig, s.pjsip_log_level, writer)
        ep.libInit(cfg)
    ep.audDevManager().setNullDev()


def set_codec_priorities(ep: SipEndpoint, s: StackSettings, build: BuildFigures) -> None:
    missing = set_codecs(ep, s.codecs)
    if missing:
        log.warning(
            "codecs_unavailable",
            codecs=missing,
            detail=f"audioCodecs names codecs this pjsua2 build ({build.name}) "
            "does not have; they are left out",
        )


def measure_limits(
    ep: SipEndpoint,
    s: StackSettings,
    build: BuildFigures,
    transports: Transports,
    writer: StructlogWriter,
) -> Limits:
    """What this engine can do, the call capacity probed (after libStart)."""
    writer.muted = True  # the probe ends on an expected PJ_ETOOMANY
    try:
        max_calls = probe_max_calls(
            ep, transports["udp"][0], s.max_calls or build.max_calls, build.max_calls
        )
    finally:
        writer.muted = False
    if s.max_calls:
        max_calls = min(max_calls, s.max_calls)
    codecs = tuple(str(c.codecId) for c in ep.codecEnum2() if c.priority > 0)
    # Asking the wheel's static OpenSSL touches ~2 MB of its code: only when TLS is
    # in use (status() measures it on demand otherwise). The source build links
    # the system's OpenSSL, already loaded: always.
    measure_tls = "tls" in transports or build.name != "pypi-wheel"
    return Limits(
        max_calls=max_calls,
        max_accounts=build.max_accounts,
        pjsip_version=str(ep.libVersion().full),
        tls="tls" in transports,
        tls_max=tls_max_version(ep) if measure_tls else "",
        codecs=codecs,
        build=build.name,
    )
