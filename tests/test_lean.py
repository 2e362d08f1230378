"""The service's deferred imports: invisible to code that does use the module."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def test_deferred_asyncio_loads_on_first_use_and_works() -> None:
    out = run(
        """
        import sys
        from engine.cli.lean import defer_import
        defer_import("asyncio")
        import structlog  # imports asyncio at its top
        before = "_asyncio" in sys.modules or "ssl" in sys.modules
        import asyncio
        import asyncio.events  # a submodule import through the stand-in
        async def main():
            await asyncio.sleep(0)
            return 42
        print(before, asyncio.run(main()), asyncio.events.get_event_loop_policy() is not None)
        """
    )
    assert out == "False 42 True"


def test_an_already_imported_module_is_left_alone() -> None:
    out = run(
        """
        import asyncio, sys
        from engine.cli.lean import defer_import
        defer_import("asyncio")
        print(sys.modules["asyncio"] is asyncio)
        """
    )
    assert out == "True"
