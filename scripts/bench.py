"""Benchmarks: the engine beside a bare pjsua2 process measured in the same run.

Prints one JSON document. Figures (medians where repeated):

* idle RSS and idle CPU with one account registered to Kamailio: the engine
  (``microsip-engine serve``) vs ``scripts/bare_pjsua2.py``;
* dial → CONFIRMED on loopback against a SIPp UAS: ``CallManager.dial`` vs a bare
  ``makeCall``;
* the ``microsip /answer`` round trip against a running engine vs ``python -c pass``;
* the highest rate of INVITEs (each with SDP, from distinct callers, all refused
  with DND on: the costliest kind) the engine answers without loss, 3 s at each
  rate from 50/s doubling until a run loses one (``tests/sip_safety``), with the
  rate SIPp achieved (it may fall short of the rate asked of it);
* when mingw-w64 and Wine are present, ``SendMessage(WM_COPYDATA)`` → reply for
  ``dwData=1`` through the ``MicroSIP.exe`` shim (median over many messages).

Run: ``./scripts/bench`` (it uses the peers from ``tests/peers``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from peers.kamailio import Kamailio  # noqa: E402
from peers.sipp import SippFactory  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def idle_figures(pid: int, seconds: float) -> dict[str, float]:
    time.sleep(1.0)  # let start-up settle
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    return {"rss_mb": round(rss_mb(pid), 2), "cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 3)}


def wait_line(proc: subprocess.Popen[str], key: str, value: str, timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process ended before {key}={value}")
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get(key) == value:
            return dict(entry)
    raise RuntimeError(f"timeout waiting for {key}={value}")


def bare(k: Kamailio, target: str, idle: float, dials: int) -> dict[str, Any]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "bare_pjsua2.py"),
            k.address,
            "bob",
            "bob-secret",
            str(idle + 1.5),
            target,
            str(dials),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = wait_line(proc, "phase", "ready", 10)
        assert ready["registered"], "bare pjsua2 did not register"
        figures = idle_figures(proc.pid, idle)
        wait_line(proc, "phase", "idle_done", idle + 10)
        done = wait_line(proc, "phase", "dial_done", 60)
        figures["dial_ms"] = round(1000 * statistics.median(done["times"]), 3)
        return figures
    finally:
        proc.wait(10)


def engine_ini(k: Kamailio, tmp: Path) -> Path:
    ini = tmp / "bench.ini"
    ini.write_text(
        f"[Settings]\naccountId=1\nenableLocalAccount=0\naudioCodecs=PCMU/8000/1\n"
        f"[Account1]\nserver={k.address}\ndomain={k.domain}\nusername=alice\n"
        f"password=alice-secret\n[Engine]\nlogFormat=json\n"
    )
    return ini


def engine_idle_and_cli(k: Kamailio, tmp: Path, idle: float, runs: int) -> dict[str, Any]:
    control = str(tmp / "ctl" / "control.sock")
    env = dict(os.environ, MICROSIP_CONTROL=control)
    proc = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "microsip-engine"),
            "serve",
            "--config",
            str(engine_ini(k, tmp)),
            "--bind",
            "127.0.0.1",
            "--sip-port",
            "0",
            "--control",
            control,
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        wait_line(proc, "event", "ready", 15)
        k.wait_registrations("alice", 1)
        figures: dict[str, Any] = idle_figures(proc.pid, idle)
        microsip = str(ROOT / ".venv" / "bin" / "microsip")
        figures["cli_answer_ms"] = time_command([microsip, "/answer"], runs, env)
        figures["python_pass_ms"] = time_command([sys.executable, "-c", "pass"], runs, env)
        return figures
    finally:
        proc.terminate()
        proc.wait(10)


def time_command(argv: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 2)


def engine_dial_child(ini: str, target: str, dials: int) -> None:
    """Run in a child process: CallManager.dial → confirmed, ``dials`` times."""
    import threading

    from engine.config import load_config
    from engine.events import CallState, Event
    from engine.manager import CallManager

    confirmed: dict[int, float] = {}
    ended: set[int] = set()
    cond = threading.Condition()

    def on_event(event: Event) -> None:
        if isinstance(event, CallState):
            with cond:
                if event.state == "confirmed":
                    confirmed[event.call] = time.perf_counter()
                elif event.state == "disconnected":
                    ended.add(event.call)
                cond.notify_all()

    manager = CallManager(load_config(ini), bind_address="127.0.0.1", sip_port=0)
    manager.subscribe(on_event)
    manager.start()
    times = []
    for _ in range(dials):
        t0 = time.perf_counter()
        call = manager.dial(target).call
        with cond:
            cond.wait_for(lambda c=call: c in confirmed or c in ended, 5)
        if call in confirmed:
            times.append(confirmed[call] - t0)
        manager.hangup(call)
        with cond:
            cond.wait_for(lambda c=call: c in ended, 5)
        time.sleep(0.05)
    manager.stop()
    print(json.dumps({"times": times}), flush=True)


def engine_dial(k: Kamailio, tmp: Path, target: str, dials: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--engine-dial", str(engine_ini(k, tmp)), target, str(dials)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    times = json.loads(out.stdout.strip().splitlines()[-1])["times"]
    return round(1000 * statistics.median(times), 3)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine-dial", nargs=3, metavar=("INI", "TARGET", "N"))
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--dials", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--copydata", type=int, default=500, help="WM_COPYDATA messages")
    parser.add_argument("--invite-seconds", type=float, default=3.0, help="0 skips the INVITE rate")
    parser.add_argument("--invite-max", type=int, default=6400, help="highest INVITE rate tried")
    args = parser.parse_args()
    if args.engine_dial:
        engine_dial_child(args.engine_dial[0], args.engine_dial[1], int(args.engine_dial[2]))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-") as tmpdir:
        tmp = Path(tmpdir)
        k = Kamailio(tmp / "kamailio").start()
        sipp = SippFactory(tmp / "sipp")
        try:
            uas = sipp.uas("uas_answer", calls=2 * args.dials, timeout_s=120)
            target = uas.uri("bench")
            bare_fig = bare(k, target, args.idle, args.dials)
            eng = engine_idle_and_cli(k, tmp, args.idle, args.runs)
            eng["dial_ms"] = engine_dial(k, tmp, target, args.dials)
        finally:
            sipp.stop_all()
            k.stop()
    report: dict[str, Any] = {
        "bare_pjsua2": bare_fig,
        "engine": eng,
        "ratios": {
            "idle_rss": round(eng["rss_mb"] / bare_fig["rss_mb"], 3),
            "dial_to_confirmed": round(eng["dial_ms"] / bare_fig["dial_ms"], 3),
            "cli_answer_vs_python_pass": round(eng["cli_answer_ms"] / eng["python_pass_ms"], 3),
        },
        "targets": {
            "idle_rss": "<= 1.25 x bare",
            "dial_to_confirmed": "<= 1.5 x bare",
            "engine idle cpu_percent": "<= 2 % of one core",
            "cli_answer_ms": "median < 50 ms",
        },
    }
    report["inbound_invites"] = invite_rate(args.invite_seconds, args.invite_max)
    report["wm_copydata_dwdata1"] = copydata_round_trip(args.copydata)
    print(json.dumps(report, indent=2))
    return 0


def invite_rate(seconds: float, highest: int) -> dict[str, Any] | str:
    """The highest INVITE rate answered without loss: every INVITE a final response,
    no failed SIPp call, the engine alive (a fresh engine per rate)."""
    if seconds <= 0:
        return "skipped (--invite-seconds 0)"
    from enginekit import ServeProcess
    from sip_safety.flood import Burst, run_burst
    from sip_safety.wire import ini

    runs: list[dict[str, Any]] = []
    best = clean = 0
    rate = 50
    with tempfile.TemporaryDirectory(prefix="bench-invites-") as tmpdir:
        while rate <= highest:
            where = Path(tmpdir) / str(rate)
            where.mkdir()
            engine = ServeProcess(where, ini(denyIncoming="button", DND=1))
            factory = SippFactory(where / "sipp")
            burst = Burst(rate, seconds, caller="c[call_number]")
            started = time.monotonic()
            try:
                result = run_burst(factory, engine, burst)
            except Exception as exc:  # SIPp gave up: this rate lost INVITEs
                result = None
                error = str(exc).splitlines()[0][:200]
            finally:
                factory.stop_all()
                died = engine.proc.poll() is not None
                engine.stop()
            took = time.monotonic() - started
            # SIPp may not reach the rate asked of it: what it achieved, first INVITE
            # to last final answer (a lower bound of the rate it sent at).
            run: dict[str, Any] = {
                "rate": rate,
                "invites": burst.calls,
                "achieved_per_s": round(burst.calls / took),
                "engine_died": died,
            }
            if result is None:
                run["error"] = error
            else:
                run |= {
                    "answered": result.successful,
                    "failed": result.failed,
                    "invite_retransmissions": result.counts.get("0_INVITE_Retrans", 0),
                }
            runs.append(run)
            lossless = result is not None and not died and result.successful == burst.calls
            if not lossless or result is None or result.failed:
                break
            best_before, best = best, rate
            if clean == best_before and not run["invite_retransmissions"]:
                clean = rate
            rate *= 2
    return {
        "highest_lossless_rate_per_s": best,
        "highest_rate_without_retransmission_per_s": clean,
        "seconds_per_rate": seconds,
        "runs": runs,
    }


def copydata_round_trip(messages: int) -> dict[str, Any] | str:
    """SendMessage(WM_COPYDATA, dwData=1) → reply through the shim under Wine."""
    if messages <= 0:
        return "skipped (--copydata 0)"
    sys.path.insert(0, str(ROOT / "native"))
    import bench_copydata

    result = bench_copydata.measure(messages)
    if result is None:
        return "skipped: mingw-w64 or Wine missing (scripts/install-native-deps)"
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


if __name__ == "__main__":
    sys.exit(main())
