"""SIPp 3.6.1 runs with a bound, pinned to 127.0.0.1, judged by its stats CSV.

Scenarios live in ``scenarios/*.xml`` as templates: ``${name}`` placeholders
are filled in here (SIPp does not expand ``-key`` values inside ``rtp_stream``
paths), the result and the audio file go into the run's own directory, and
SIPp runs there, so the audio path in the scenario stays short and relative
(SIPp limits it to 255 characters).

SIPp exits 0 when killed, even with zero calls, so a result always comes from
the ``-trace_stat`` CSV (flushed every second and at exit), never from the
exit code alone.
"""

from __future__ import annotations

import csv
import itertools
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from audio import wav_to_pcmu, write_tone_pcmu

from .process import (
    PeerError,
    PeerProcess,
    free_port,
    start_with_retry,
    tcp_port_listening,
    udp_port_bound,
    wait_until,
)

__all__ = [
    "SCENARIO_DIR",
    "Sipp",
    "SippFactory",
    "SippResult",
    "parse_target",
    "render_template",
]

SCENARIO_DIR = Path(__file__).with_name("scenarios")
SCENARIOS = (
    "uac_wait_bye",
    "uac_send_bye",
    "uac_answer_or_busy",
    "uac_policy",
    "uac_cancel",
    "uas_answer",
    "uas_ring",
    "uas_hold",
    "uac_info_dtmf",
    "uas_refer",
    "uac_mwi_notify",
)
DEFAULT_TONE_HZ = 1000.0
AUDIO_NAME = "audio.pcmu"
# SIPp exit codes after running calls: 0 all succeeded, 1 some failed,
# 97 stopped by an internal command, 99 normal exit without calls.
_RAN_EXIT_CODES = {0, 1, 97, 99}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

Transport = Literal["udp", "tcp"]


@dataclass(frozen=True)
class SippResult:
    """Outcome of one SIPp run, read from its CSV files."""

    successful: int
    failed: int
    returncode: int | None
    #: Last row of ``-trace_counts``: ``"<index>_<what>_<Sent|Recv|Retrans|Timeout|Unexp>"``.
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.successful + self.failed

    def _column(self, what: str, kind: str, occurrence: int | None) -> int:
        hits = [
            value for key, value in self.counts.items() if key.split("_", 1)[-1] == f"{what}_{kind}"
        ]
        if occurrence is None:
            return sum(hits)
        return hits[occurrence] if occurrence < len(hits) else 0

    def received(self, what: str, occurrence: int | None = None) -> int:
        """How often the scenario received ``what`` (a code like ``"486"`` or a
        method like ``"CANCEL"``). ``occurrence`` picks the n-th scenario line
        with that message (0 = the first), e.g. the 200 to the INVITE rather
        than the 200 to the BYE; None sums all of them."""
        return self._column(what, "Recv", occurrence)

    def sent(self, what: str, occurrence: int | None = None) -> int:
        return self._column(what, "Sent", occurrence)

    def unexpected(self) -> int:
        return sum(v for k, v in self.counts.items() if k.endswith("_Unexp"))


def parse_target(target: str) -> tuple[str | None, str, int]:
    """``sip:user@host:port``, ``user@host:port`` or ``host:port`` -> (user, host, port)."""
    rest = target.removeprefix("sip:").split(";", 1)[0]
    user, _, hostport = rest.rpartition("@")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"SIPp target needs host:port, got {target!r}")
    if host not in {"127.0.0.1", "localhost"}:
        raise ValueError(f"SIPp may only send to 127.0.0.1, not {host!r}")
    return (user or None), "127.0.0.1", int(port)


def render_template(text: str, values: Mapping[str, object]) -> str:
    """Replace ``${name}`` (only the braced form: SIPp itself uses ``[$var]``)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"scenario placeholder ${{{name}}} has no value")
        return str(values[name])

    return _PLACEHOLDER.sub(replace, text)


def _last_csv_row(path: Path) -> dict[str, str]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except FileNotFoundError:
        return {}
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return dict(zip(header, last, strict=False))


def _as_int(value: str | None) -> int:
    return int(value) if value and value.strip().isdigit() else 0


class Sipp:
    """One SIPp process. Get it from :class:`SippFactory`."""

    def __init__(
        self,
        *,
        role: Literal["uac", "uas"],
        scenario: str,
        workdir: Path,
        transport: Transport,
        timeout_s: float,
        binary: str = "sipp",
    ) -> None:
        self.role = role
        self.binary = binary
        self.scenario = scenario
        self.workdir = workdir
        self.transport = transport
        self.timeout_s = timeout_s
        self.port = 0
        self.media_port = 0
        self.process: PeerProcess | None = None
        self._result: SippResult | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>`` where SIPp sends from / listens on."""
        return f"127.0.0.1:{self.port}"

    def uri(self, user: str = "sipp") -> str:
        suffix = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{user}@{self.address}{suffix}"

    @property
    def stats_path(self) -> Path:
        return self.workdir / "stats.csv"

    def _scenario_file(self, suffix: str) -> Path | None:
        if self.process is None:
            return None
        return self.workdir / f"{self.scenario}_{self.process.pid}_{suffix}"

    def start(self, argv: Sequence[str], target: str | None) -> None:
        def attempt(n: int) -> None:
            self.port = free_port("both")
            self.media_port = free_port("udp", span=3)  # audio p, video p+2
            full = [self.binary, *([target] if target else []), *argv]
            full += ["-p", str(self.port), "-mp", str(self.media_port)]
            self.process = PeerProcess(f"sipp-{n}", full, self.workdir, cwd=self.workdir)
            for suffix in ("errors.log", "messages.log"):
                log = self._scenario_file(suffix)
                assert log is not None
                self.process.extra_logs.append(log)
            try:
                self.ready()
            except PeerError:
                self.process.terminate()
                raise

        start_with_retry(attempt)

    def ready(self, timeout: float = 5.0) -> Sipp:
        """Wait until SIPp has bound its SIP port (from /proc/net, no probe:
        an OPTIONS would be answered and use up ``-m``)."""
        assert self.process is not None

        def bound() -> bool:
            if self.transport == "tcp" and self.role == "uas":
                return tcp_port_listening(self.port)
            if self.transport == "tcp":
                return True  # a TCP UAC binds when it connects
            return udp_port_bound(self.port)

        code = self.process.poll()
        if code in _RAN_EXIT_CODES and self.role == "uac":
            return self  # a quick UAC may already be done
        wait_until(bound, timeout, f"SIPp to bind {self.address}", process=self.process)
        return self

    def result(self) -> SippResult:
        """Parse the CSVs now (the process may still be running)."""
        assert self.process is not None
        stats = _last_csv_row(self.stats_path)
        counts_file = self._scenario_file("counts.csv")
        counts = _last_csv_row(counts_file) if counts_file else {}
        return SippResult(
            successful=_as_int(stats.get("SuccessfulCall(C)")),
            failed=_as_int(stats.get("FailedCall(C)")),
            returncode=self.process.returncode,
            counts={
                k: _as_int(v)
                for k, v in counts.items()
                if k not in {"CurrentTime", "ElapsedTime"} and k
            },
        )

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to finish its ``-m`` calls (or its own ``-timeout``).

        Fails with the log tail when it does not exit in ``timeout`` seconds
        (default: SIPp's own timeout + 5 s).
        """
        assert self.process is not None
        if self._result is None:
            limit = self.timeout_s + 5 if timeout is None else timeout
            if not self.process.wait_quietly(limit):
                self.process.terminate()  # SIGTERM: SIPp still writes its CSVs
                raise PeerError(
                    f"{self!r} did not finish within {limit:.1f}s; so far: {self.result()}\n"
                    + self.log_tail()
                )
            self._result = self.result()
        return self._result

    def stop(self) -> SippResult:
        """Stop SIPp (SIGTERM: it writes its CSVs and exits 0 whatever the
        calls did) and return the result read from the CSVs. Never raises."""
        if self.process is None:
            return SippResult(0, 0, None)
        if self._result is None:
            self.process.terminate()
            self._result = self.result()
        return self._result

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process else "(sipp not started)"

    def __repr__(self) -> str:
        return f"<Sipp {self.role} {self.scenario} {self.address}>"


class SippFactory:
    """Creates SIPp runs in numbered directories under ``workdir``; stops them all."""

    def __init__(self, workdir: Path, *, binary: str = "sipp") -> None:
        self.workdir = workdir
        self.binary = binary
        self._counter = itertools.count(1)
        self._runs: list[Sipp] = []
        self._default_audio: Path | None = None

    def _audio(self, wav: Path | None, dest: Path) -> None:
        if wav is None:
            if self._default_audio is None:
                self.workdir.mkdir(parents=True, exist_ok=True)
                self._default_audio = write_tone_pcmu(
                    self.workdir / f"tone-{DEFAULT_TONE_HZ:g}.pcmu", DEFAULT_TONE_HZ, 60.0
                )
            shutil.copyfile(self._default_audio, dest)
        elif wav.suffix.lower() == ".wav":
            wav_to_pcmu(wav, dest)
        else:  # raw mu-law already
            shutil.copyfile(wav, dest)

    def _prepare(
        self, scenario: str | Path, wav: Path | None, params: Mapping[str, object]
    ) -> tuple[Path, str]:
        template = scenario if isinstance(scenario, Path) else SCENARIO_DIR / f"{scenario}.xml"
        if not template.exists():
            raise ValueError(f"no SIPp scenario {scenario!r} (have {', '.join(SCENARIOS)})")
        stem = template.stem
        run_dir = self.workdir / f"{next(self._counter)}-{stem}"
        run_dir.mkdir(parents=True)
        self._audio(wav, run_dir / AUDIO_NAME)
        text = render_template(template.read_text(), {"audio": AUDIO_NAME, **params})
        (run_dir / f"{stem}.xml").write_text(text)
        return run_dir, stem

    def _run(
        self,
        role: Literal["uac", "uas"],
        scenario: str | Path,
        target: str | None,
        service: str | None,
        *,
        calls: int,
        rate: float,
        concurrent: int | None,
        wav: Path | None,
        transport: Transport,
        timeout_s: float,
        params: Mapping[str, object],
        extra_args: Sequence[str],
    ) -> Sipp:
        run_dir, stem = self._prepare(scenario, wav, params)
        sipp = Sipp(
            role=role,
            scenario=stem,
            workdir=run_dir,
            transport=transport,
            timeout_s=timeout_s,
            binary=self.binary,
        )
        argv = ["-sf", f"{stem}.xml", "-m", str(calls)]
        if service:
            argv += ["-s", service]
        if role == "uac":
            argv += ["-r", f"{rate:g}", "-rp", "1000"]
        argv += ["-l", str(concurrent or max(calls, 1))]
        argv += ["-i", "127.0.0.1", "-mi", "127.0.0.1", "-t", "t1" if transport == "tcp" else "u1"]
        argv += ["-nostdin", "-aa", "-timeout", f"{timeout_s:g}s", "-timeout_error"]
        argv += ["-trace_stat", "-stf", "stats.csv", "-fd", "1", "-trace_err", "-trace_counts"]
        argv += ["-trace_msg"]  # every SIP message, for the failure report
        argv += list(extra_args)
        self._runs.append(sipp)
        sipp.start(argv, target)
        return sipp

    def uac(
        self,
        target: str,
        scenario: str | Path = "uac_wait_bye",
        *,
        calls: int = 1,
        rate: float = 10.0,
        concurrent: int | None = None,
        service: str | None = None,
        wav: Path | None = None,
        transport: Transport = "udp",
        hold_ms: int = 2000,
        bye_timeout_ms: int = 10000,
        timeout_s: float = 20.0,
        params: Mapping[str, object] | None = None,
        extra_args: Sequence[str] = (),
    ) -> Sipp:
        """Start a SIPp client calling ``target`` (``sip:user@127.0.0.1:port`` or
        ``127.0.0.1:port`` plus ``service``, the Request-URI user).

        ``rate`` is calls per second; ``concurrent`` caps simultaneous calls
        (default: all ``calls`` at once). ``wav`` is the audio streamed as PCMU
        (8 kHz WAV, converted; or raw mu-law); default a 1 kHz tone.
        ``hold_ms`` (uac_send_bye, uac_answer_or_busy): how long to talk before
        BYE; ``bye_timeout_ms`` (uac_wait_bye): how long to wait for the far
        end's BYE. ``params`` fills further ``${name}`` placeholders.
        """
        user, host, port = parse_target(target)
        values = {"hold_ms": hold_ms, "bye_timeout_ms": bye_timeout_ms, **(params or {})}
        return self._run(
            "uac",
            scenario,
            f"{host}:{port}",
            service or user or "test",
            calls=calls,
            rate=rate,
            concurrent=concurrent,
            wav=wav,
            transport=transport,
            timeout_s=timeout_s,
            params=values,
            extra_args=extra_args,
        )

    def uas(
        self,
        scenario: str | Path = "uas_answer",
        *,
        calls: int = 1,
        wav: Path | None = None,
        transport: Transport = "udp",
        bye_timeout_ms: int = 10000,
        ring_timeout_ms: int = 10000,
        timeout_s: float = 20.0,
        params: Mapping[str, object] | None = None,
        extra_args: Sequence[str] = (),
    ) -> Sipp:
        """Start a SIPp server (ready: its port is bound) for ``calls`` calls.

        Reach it at :attr:`Sipp.address` / :meth:`Sipp.uri`, directly or via
        ``Kamailio.add_contact(user, sipp.uri(user))``.
        """
        values = {
            "bye_timeout_ms": bye_timeout_ms,
            "ring_timeout_ms": ring_timeout_ms,
            **(params or {}),
        }
        return self._run(
            "uas",
            scenario,
            None,
            None,
            calls=calls,
            rate=0,
            concurrent=None,
            wav=wav,
            transport=transport,
            timeout_s=timeout_s,
            params=values,
            extra_args=extra_args,
        )

    @property
    def runs(self) -> list[Sipp]:
        return list(self._runs)

    def stop_all(self) -> None:
        for run in self._runs:
            run.stop()
