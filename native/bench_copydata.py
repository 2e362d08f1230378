"""Round trip of a WM_COPYDATA dwData=1 message through the shim, under Wine.

Measures what an integration waits for: from ``SendMessage(WM_COPYDATA)`` in a
Windows program to its return, which for dwData=1 is after the shim forwarded
the command line to the engine over TCP and the engine ran it and replied.
``copydata-send.exe --repeat N`` times each message with QueryPerformanceCounter
inside Wine; the command is ``msip:minimize`` (accepted, changes nothing).

    .venv/bin/python native/bench_copydata.py [-n 500] [--json]

or from Python (``scripts/bench.py``)::

    sys.path.insert(0, "native"); import bench_copydata
    result = bench_copydata.measure(500)   # None when the toolchain or Wine is missing

Builds the shim with CMake (mingw-w64), boots a private Wine prefix and runs a
real ``microsip-engine serve --tcp-control``; all of it is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_TESTS = ROOT / "tests"
WARMUP = 20


def missing_tools() -> list[str]:
    """The tools the bench needs that are not on PATH (scripts/install-native-deps)."""
    tools = ("cmake", "x86_64-w64-mingw32-gcc-win32", "wine", "wineserver")
    return [tool for tool in tools if shutil.which(tool) is None]


def measure(messages: int = 500, *, text: str = "msip:minimize") -> dict[str, Any] | None:
    """Median (and spread) in milliseconds of ``messages`` dwData=1 round trips,
    after a warm-up; ``None`` when the native tools are missing."""
    if missing_tools():
        return None
    if str(_TESTS) not in sys.path:
        sys.path.insert(0, str(_TESTS))
    from enginekit import ServeProcess
    from wine import ShimInstall, WineSession, cmake_build

    with tempfile.TemporaryDirectory(prefix="bench-copydata-") as tmp_name:
        tmp = Path(tmp_name)
        programs = cmake_build(tmp / "build", windows=True, log=tmp / "build.log")
        with WineSession(tmp / "wine") as session:
            (tmp / "engine").mkdir()
            engine = ServeProcess(tmp / "engine", None, "--tcp-control", "127.0.0.1:0")
            try:
                shim = ShimInstall(session, programs, tmp / "MicroSIP")
                port = int(engine.ready["tcp_control"].rsplit(":", 1)[1])
                shim.configure(port, Path(engine.control).parent / "tcp-token")
                shim.start_resident()
                try:
                    total = messages + WARMUP
                    run = shim.send(
                        "--dw", "1", "--text", text, "--repeat", str(total), timeout=300
                    )
                    if run.returncode != 0:
                        raise RuntimeError(f"copydata-send failed: {run.stdout[-2000:]}")
                    samples = [
                        int(line.split()[3]) / 1000.0
                        for line in run.lines()
                        if line.startswith("reply 0 us ")
                    ]
                    if len(samples) != total:
                        raise RuntimeError(f"{total - len(samples)} messages were not run")
                finally:
                    shim.close()
            finally:
                engine.stop()
    timed = sorted(samples[WARMUP:])
    return {
        "messages": len(timed),
        "median_ms": statistics.median(timed),
        "p90_ms": timed[int(len(timed) * 0.9) - 1],
        "min_ms": timed[0],
        "max_ms": timed[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--messages", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.messages)
    if result is None:
        print(f"skipped: missing {', '.join(missing_tools())} (scripts/install-native-deps)")
        return 0
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"WM_COPYDATA dwData=1 round trip over {result['messages']} messages: "
            f"median {result['median_ms']:.3f} ms, p90 {result['p90_ms']:.3f} ms, "
            f"min {result['min_ms']:.3f} ms, max {result['max_ms']:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
