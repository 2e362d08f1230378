"""``microsip-engine``: run the engine (``serve``) and administer it.

MicroSIP's own argument grammar belongs to the ``microsip`` command; everything
that MicroSIP never had (a service mode, state queries, the event stream) lives
here, so no option of ours can shadow a MicroSIP argument.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from .. import __version__
from ..errors import EngineError


def _serve(args: argparse.Namespace) -> int:
    import structlog

    from ..config import load_config
    from ..logs import configure
    from ..manager import CallManager

    try:
        config = load_config(args.config)
    except EngineError as exc:
        print(f"microsip-engine: {exc.message}", file=sys.stderr)
        return 2
    configure(
        args.log_format or config.engine.log_format, args.log_level or config.engine.log_level
    )
    log = structlog.get_logger("engine")
    for warning in config.warnings:
        log.warning("config_warning", detail=warning)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    manager = CallManager(
        config, bind_address=args.bind, sip_port=args.sip_port, control=args.control or ""
    )
    try:
        limits = manager.start()
    except EngineError as exc:
        log.error("start_failed", error=exc.message)
        return 1
    log.info(
        "ready",
        sip=manager.sip_addresses(),
        accounts=[f"{a.account}:{a.uri}" for a in manager.accounts()],
        control=manager.control or None,
        max_calls=limits.max_calls,
        config=str(config.path) if config.path else "embedded default",
    )
    while not stop.wait(0.5):
        if not manager.running:
            break
    log.info("stopping")
    manager.stop("signal")
    log.info("stopped")
    return 0


def _version(_args: argparse.Namespace) -> int:
    print(f"microsip-engine {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microsip-engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the engine in the foreground")
    serve.add_argument("--config", help="microsip.ini (default: $MICROSIP_INI, user dir, embedded)")
    serve.add_argument("--bind", help="address to bind SIP and RTP to (default: all)")
    serve.add_argument("--sip-port", type=int, help="SIP port (0 = any free port)")
    serve.add_argument("--control", help="control socket path")
    serve.add_argument("--log-format", choices=["console", "json"])
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_serve)
    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
