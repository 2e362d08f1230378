"""Benchmarks: the engine beside a bare pjsua2 process measured in the same run.

Prints one JSON document. Figures (medians where repeated):

* idle RSS and idle CPU with one account registered to Kamailio: the engine
  (``microsip-engine serve``) vs ``scripts/bare_pjsua2.py``;
* dial → CONFIRMED on loopback against a SIPp UAS: ``CallManager.dial`` vs a bare
  ``makeCall``;
* the ``microsip /answer`` round trip against a running engine vs ``python -c pass``;
* the control socket's ``status`` round trip: one client alone vs 100 concurrent
  clients x 100 requests (p50/p99/max, throughput, engine CPU per request), and
  a new client's connect + ``status`` beside 64 idle connections and beside 128
  (every slot: one gives way) (``--status-only`` runs just these);
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
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from peers.kamailio import Kamailio  # noqa: E402
from peers.sipp import SippFactory  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The venv this bench runs in: .venv (PyPI wheel) or .venv-source (scripts/bench
#: runs it once per installed build).
BIN = Path(sys.executable).parent


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
            str(BIN / "microsip-engine"),
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
        ready = wait_line(proc, "event", "ready", 15)
        k.wait_registrations("alice", 1)
        figures: dict[str, Any] = idle_figures(proc.pid, idle)
        figures["build"] = ready.get("pjsua2")
        figures["max_calls"] = ready["max_calls"]
        figures.update(calls_cpu(proc.pid, control, tmp, min(ready["max_calls"], 16), idle))
        microsip = str(BIN / "microsip")
        figures["cli_answer_ms"] = time_command([microsip, "/answer"], runs, env)
        figures["python_pass_ms"] = time_command([sys.executable, "-c", "pass"], runs, env)
        return figures
    finally:
        proc.terminate()
        proc.wait(10)


def calls_cpu(pid: int, control: str, tmp: Path, calls: int, seconds: float) -> dict[str, Any]:
    """CPU per established PCMU call (SIPp streams RTP to it, the engine sends its
    null device's frames), beside the same engine idle: ``calls`` up at once."""
    from engine.control import ControlClient

    uas = SippFactory(tmp / "sipp-cpu").uas("uas_answer", calls=calls, bye_timeout_ms=60000)
    client = ControlClient(control, timeout=10.0)
    try:
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        idle = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        numbers = [client.request("dial", target=uas.uri("cpu"))["call"] for _ in range(calls)]
        deadline = time.monotonic() + 20
        while sum(c["state"] == "confirmed" for c in client.request("calls")) < calls:
            if time.monotonic() > deadline:
                raise RuntimeError("calls for the CPU figure were not all answered")
            time.sleep(0.05)
        time.sleep(1.0)  # past the answer's set-up work
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        busy = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        for number in numbers:
            client.request("hangup", call=number)
    finally:
        client.close()
        uas.stop()
    return {
        "calls_for_cpu": calls,
        "cpu_percent_per_call": round(100 * (busy - idle) / calls, 3),
    }


def time_command(argv: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 2)


def engine_dial_child(ini: str, target: str, dials: int) -> None:
    """Run in a child process: CallManager.dial → confirmed, ``dials`` times."""

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


STATUS_INI = """[Settings]
accountId=0
enableLocalAccount=1
audioCodecs=PCMU/8000/1
[Engine]
logFormat=json
nullAudio=1
"""


def percentiles(times: list[float]) -> dict[str, float]:
    """p50/p99/max of ``times`` (seconds) in milliseconds."""
    ordered = sorted(times)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50_ms": round(1000 * pick(0.50), 2),
        "p99_ms": round(1000 * pick(0.99), 2),
        "max_ms": round(1000 * ordered[-1], 2),
        "n": len(ordered),
    }


def status_client_child(path: str, threads: int, requests: int, start_at: float) -> None:
    """Run in a child process: ``threads`` clients, each ``requests`` sequential ``status``."""

    from engine.control import ControlClient

    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        mine: list[float] = []
        with ControlClient(path, timeout=30) as engine:
            try:
                engine.request("status")  # connected: the figure is the round trip alone
                time.sleep(max(0.0, start_at - time.time()))
                for _ in range(requests):
                    t0 = time.perf_counter()
                    engine.request("status")
                    mine.append(time.perf_counter() - t0)
            except Exception as exc:
                with lock:
                    errors.append(repr(exc))
        with lock:
            times.extend(mine)

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps({"times": times, "errors": errors[:5], "failed": len(errors)}), flush=True)


def status_under_load(
    pid: int, path: str, clients: int, requests: int, procs: int
) -> dict[str, Any]:
    """``clients`` concurrent connections (threads spread over ``procs`` processes, so
    the clients' own GIL does not inflate the figure), each ``requests`` ``status``;
    with the throughput and the engine's CPU time per request (its one interpreter
    runs every connection's thread: latency ~ clients x CPU per request)."""
    start_at = time.time() + 2.5
    start = str(start_at)  # every client connected before the first request
    shares = [clients // procs + (i < clients % procs) for i in range(procs)]
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--status-child", path, str(share), str(requests), start],
            stdout=subprocess.PIPE,
            text=True,
        )
        for share in shares
    ]
    time.sleep(max(0.0, start_at - time.time()))
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    times: list[float] = []
    errors: list[str] = []
    failed = 0
    for child in children:
        out, _ = child.communicate(timeout=600)
        result = json.loads(out.strip().splitlines()[-1])
        times += result["times"]
        errors += result["errors"]
        failed += result["failed"]
    cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - wall0
    figures: dict[str, Any] = percentiles(times)
    figures["requests_per_s"] = round(len(times) / wall)
    figures["engine_cpu_us_per_request"] = round(1e6 * cpu / max(1, len(times)))
    if failed:
        figures.update(failed_clients=failed, first_error=errors[0])
    return figures


def new_client_with_idle(path: str, idle: int, tries: int) -> dict[str, Any]:
    """Connect + ``status`` of a new client while ``idle`` connections that never
    send anything are open (refilled before every try)."""
    import socket

    from engine.control import ControlClient, ControlError

    idlers: list[socket.socket] = []
    times: list[float] = []
    failures: list[str] = []
    try:
        for _ in range(tries):
            idlers = [s for s in idlers if not _closed_by_peer(s)]
            while len(idlers) < idle:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(path)
                idlers.append(sock)
            time.sleep(0.2)  # the engine has admitted them all
            t0 = time.perf_counter()
            try:
                with ControlClient(path, timeout=10) as engine:
                    engine.request("status")
                times.append(time.perf_counter() - t0)
            except ControlError as exc:
                failures.append(f"{exc.code}: {exc.message}")
    finally:
        for sock in idlers:
            sock.close()
    figures: dict[str, Any] = percentiles(times) if times else {}
    figures.update(idle_connections=idle, tries=tries, failed=len(failures))
    if failures:
        figures["first_failure"] = failures[0]
    return figures


def _closed_by_peer(sock: Any) -> bool:
    import select

    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)  # an idle connection only becomes readable when the engine ends it


def control_status_figures(
    tmp: Path, clients: int, requests: int, pythonpath: str | None = None
) -> dict[str, Any]:
    """The ``status`` round trip idle vs under load, and a new client beside 64 idlers.

    ``pythonpath`` runs the engine from another source tree (e.g. an older commit
    exported with ``git archive``) to compare two versions in one run.
    """
    control = str(tmp / "ctl-status" / "control.sock")
    ini = tmp / "status.ini"
    ini.write_text(STATUS_INI)
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "engine", "serve", "--config", str(ini)),
            *("--bind", "127.0.0.1", "--sip-port", "0", "--control", control),
            *("--log-format", "json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=pythonpath or None,
    )
    try:
        wait_line(proc, "event", "ready", 15)
        drain = threading.Thread(target=proc.stdout.read, daemon=True)  # type: ignore[union-attr]
        drain.start()  # a full log pipe would stall the engine (busy refusals are logged)
        from engine.control import ControlClient

        alone: list[float] = []
        with ControlClient(control) as engine:
            for _ in range(max(200, requests)):
                t0 = time.perf_counter()
                engine.request("status")
                alone.append(time.perf_counter() - t0)
        return {
            "status_alone": percentiles(alone),
            f"status_{clients}x{requests}": status_under_load(
                proc.pid, control, clients, requests, 4
            ),
            "new_client_beside_64_idle": new_client_with_idle(control, 64, 20),
            "new_client_beside_128_idle": new_client_with_idle(control, 128, 20),
        }
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine-dial", nargs=3, metavar=("INI", "TARGET", "N"))
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--dials", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--copydata", type=int, default=500, help="WM_COPYDATA messages")
    parser.add_argument("--status-clients", type=int, default=100)
    parser.add_argument("--status-requests", type=int, default=100)
    parser.add_argument("--status-only", action="store_true", help="only the control figures")
    parser.add_argument("--engine-src", help="run the status figures' engine from this tree")
    parser.add_argument("--status-child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--invite-seconds", type=float, default=3.0, help="0 skips the INVITE rate")
    parser.add_argument("--invite-max", type=int, default=6400, help="highest INVITE rate tried")
    args = parser.parse_args()
    if args.engine_dial:
        engine_dial_child(args.engine_dial[0], args.engine_dial[1], int(args.engine_dial[2]))
        return 0
    if args.status_child:
        path, threads, requests, start_at = args.status_child
        status_client_child(path, int(threads), int(requests), float(start_at))
        return 0
    if args.status_only:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmpdir:
            figures = control_status_figures(
                Path(tmpdir), args.status_clients, args.status_requests, args.engine_src
            )
        print(json.dumps({"control_status": figures}, indent=2))
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
    with tempfile.TemporaryDirectory(prefix="bench-") as tmpdir:
        report["control_status"] = control_status_figures(
            Path(tmpdir), args.status_clients, args.status_requests
        )
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
