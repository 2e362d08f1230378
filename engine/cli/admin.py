"""``microsip-engine``: run the engine (``serve``) and administer it.

MicroSIP's own argument grammar belongs to the ``microsip`` command; everything
that MicroSIP never had (a service mode, state queries, the event stream) lives
here, so no option of ours can shadow a MicroSIP argument.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import EngineError

if TYPE_CHECKING:
    from ..assembly import Channels, Shutdown
    from ..config import Config
    from ..control.instance import InstanceLock
    from ..logs import LogFile
    from ..manager import CallManager


def _serve(args: argparse.Namespace) -> int:
    if args.supervise:
        return _supervised(args)
    from .lean import defer_import, release_free_memory

    defer_import("asyncio")  # structlog imports it; the service never uses it
    from ..assembly import Engine
    from ..manager import CallManager

    setup = _setup(args)
    if isinstance(setup, int):
        return setup
    config, log = setup.config, setup.log
    manager = CallManager(
        config, bind_address=args.bind, sip_port=args.sip_port, control=setup.channels.control
    )
    engine = Engine(manager, setup.channels, setup.chores.shutdown)
    try:
        limits = engine.start()
    except EngineError as exc:  # the parts already started are stopped
        log.error("start_failed", error=exc.message, code=exc.code)
        return 1
    reason = "error"  # what stops the engine if anything below raises
    try:
        release_free_memory()
        watchdog = _service_ready(manager, setup.channels.control)
        log.info(
            "ready",
            sip=manager.sip_addresses(),
            accounts=[f"{a.account}:{a.uri}" for a in manager.accounts()],
            control=setup.channels.control,
            tcp_control=f"{engine.tcp.host}:{engine.tcp.port}" if engine.tcp else None,
            max_calls=limits.max_calls,
            pjsua2=f"{limits.pjsip_version} ({limits.build})",
            tls_max=limits.tls_max or None,
            config=str(config.path) if config.path else "embedded default",
        )
        log.info("try_next", **_next_steps(args, manager))
        setup.chores.watch(manager)
        reason = engine.wait(setup.chores, every=TRIM_EVERY / 2)
        log.info("stopping", reason=reason)
        _service_stopping(watchdog)
    finally:
        engine.stop(reason)
    log.info("stopped")
    return 0


@dataclasses.dataclass
class _Setup:
    """What ``serve`` settles before the engine exists."""

    config: Config
    log: Any
    chores: _Chores
    channels: Channels
    instance: InstanceLock  # held for the life of the process


def _setup(args: argparse.Namespace) -> _Setup | int:
    """The configuration, logging, signal handlers, control socket and instance
    lock; an exit code when one of them fails (2: configuration, 1: in use)."""
    import structlog

    from ..assembly import Channels, Shutdown
    from ..config import load_config
    from ..control.instance import InstanceLock
    from ..control.locate import locate

    try:
        config = load_config(args.config)
    except EngineError as exc:
        print(f"microsip-engine: {exc.message}", file=sys.stderr)
        return 2
    try:
        log_file = _configure_logging(args, config.engine)
    except OSError as exc:
        print(f"microsip-engine: cannot open --log-file: {exc}", file=sys.stderr)
        return 2
    log = structlog.get_logger("engine")
    chores = _Chores(Shutdown(), log_file, log)
    for warning in config.warnings:
        log.warning("config_warning", detail=warning)
    try:
        control = locate(args.control, args.config).path
    except EngineError as exc:
        print(f"microsip-engine: {exc.message}", file=sys.stderr)
        return 2
    instance = InstanceLock(control)
    try:  # before the SIP stack exists: a second engine must not REGISTER at all
        instance.acquire()
    except EngineError as exc:
        log.error("start_failed", error=exc.message, code=exc.code)
        return 1
    channels = Channels(
        control,
        idle_timeout=float(config.engine.control_idle_timeout),
        tcp_address=args.tcp_control or config.engine.tcp_control,
        tcp_token=args.tcp_control_token or config.engine.tcp_control_token,
    )
    return _Setup(config, log, chores, channels, instance)


class _Chores:
    """What the main thread of ``serve`` does besides waiting: reopen the log file
    after SIGHUP (logrotate moved it), and give the heap back while no call is up.
    Installs the signal handlers: SIGTERM and SIGINT stop the engine."""

    def __init__(self, shutdown: Shutdown, log_file: LogFile | None, log: Any) -> None:
        self.shutdown = shutdown
        self.log_file = log_file
        self.log = log
        self.manager: CallManager | None = None
        self.trimmed = 0.0
        self.hangup = False
        if log_file is not None:
            signal.signal(signal.SIGHUP, self._on_hangup)
        signal.signal(signal.SIGTERM, lambda *_: shutdown.request("signal"))
        signal.signal(signal.SIGINT, lambda *_: shutdown.request("signal"))

    def watch(self, manager: CallManager) -> None:
        """The engine runs: from now on, trim while ``manager`` has no call."""
        self.manager = manager
        self.trimmed = time.monotonic()

    def _on_hangup(self, *_: object) -> None:
        self.hangup = True
        self.shutdown.nudge()

    def __call__(self) -> None:
        if self.hangup and self.log_file is not None:
            # Here, not in the handler: it could interrupt this thread mid-write.
            self.hangup = False
            self.log_file.request_reopen()
            self.log.info("log_reopened", path=self.log_file.path)
        if self.manager is not None:
            self.trimmed = _trim_when_idle(self.manager, self.trimmed)


#: Seconds between heap trims while no call is up.
TRIM_EVERY = 10.0


def _trim_when_idle(manager: Any, last: float) -> float:
    """Give the heap back to the OS now and then while no call is up.

    pjsip keeps an ended call's memory until its last transaction dies (a BYE's
    lingers 32 s, timer J), then frees it, but glibc keeps freed pages: after a
    busy spell RSS would stay at its peak. Returns when it last trimmed."""
    now = time.monotonic()
    if now - last < TRIM_EVERY:
        return last
    try:
        idle = not manager.calls()
    except EngineError:
        return now
    if idle:
        from .lean import release_free_memory

        release_free_memory()
    return now


def _service_ready(manager: Any, control: str) -> Any:
    """READY=1 to systemd or the supervisor, and the watchdog if one is asked for."""
    from ..sdnotify import service_ready

    return service_ready(manager.sip_thread_alive, f"ready, control socket {control}")


def _service_stopping(watchdog: Any) -> None:
    from ..sdnotify import service_stopping

    service_stopping(watchdog)


def _supervised(args: argparse.Namespace) -> int:
    """``serve --supervise``: this process only watches a ``serve`` child (same
    arguments, so the same control socket) and restarts it after a crash."""
    from ..logs import configure
    from ..supervisor import Supervisor

    configure(args.log_format or "console", args.log_level or "info")
    child = [sys.executable, "-m", "engine", *_without_supervise(args.argv)]
    return Supervisor(child, watchdog=args.watchdog_sec).run()


def _without_supervise(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--supervise" or arg.startswith("--watchdog-sec="):
            pass
        elif arg == "--watchdog-sec":
            skip = True
        else:
            out.append(arg)
    return out


def _configure_logging(args: argparse.Namespace, engine: Any) -> Any:
    """Options over ``[Engine]``; returns the ``--log-file`` (or None: stderr)."""
    from ..logs import LogFile, configure

    log_file = LogFile(args.log_file) if args.log_file else None
    configure(args.log_format or engine.log_format, args.log_level or engine.log_level, log_file)
    return log_file


def _next_steps(args: argparse.Namespace, manager: Any) -> dict[str, str]:
    """What a newcomer can type next, in another terminal, against this very engine:
    the options that found it, a dial that works even with no registrar (the engine
    calls itself: an outbound call and a ringing inbound one), and how to stop."""
    where = ""
    if args.control:
        where = f"--control {args.control} "
    elif args.config:
        where = f"--config {args.config} "
    udp = next((a for a in manager.sip_addresses() if a.startswith("udp:")), "")
    host, _, port = udp.removeprefix("udp:").rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    host = f"[{host}]" if ":" in host else host
    return {
        "status": f"microsip-engine status {where}".rstrip(),
        "dial": f"microsip {where}sip:echo@{host}:{port}",
        "answer": f"microsip {where}/answer",
        "hangup": f"microsip {where}/hangupall",
        "stop": f"microsip {where}/exit",
    }


def _client(args: argparse.Namespace) -> Any:
    """A client for the socket the rule finds (``engine/control/locate.py``)."""
    from ..control import ControlClient
    from ..control.locate import locate

    args.located = locate(args.control, args.config)
    return ControlClient(args.located.path, timeout=10.0)


def _fail(args: argparse.Namespace, exc: Exception) -> int:
    """One line on stderr; "not running" says where we looked and how to change it."""
    from ..control import EngineNotRunning

    located = getattr(args, "located", None)
    if isinstance(exc, EngineNotRunning) and located is not None:
        message = located.not_running()
    else:
        message = exc.message if isinstance(exc, EngineError) else str(exc)
    print(f"microsip-engine: {message}", file=sys.stderr)
    return 1


def _status(args: argparse.Namespace) -> int:
    try:
        status = _client(args).request("status")
    except EngineError as exc:
        return _fail(args, exc)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"engine {status['version']} (pjsip {status['pjsip']}), up {status['uptime']:.0f} s")
    print(f"sip:      {' '.join(status['sip'])}")
    print(f"control:  {status['control']}")
    cap = status["capacity"]
    print(f"calls:    {cap['calls']} of {cap['max_calls']}")
    for a in status["accounts"]:
        code = f" ({a['code']} {a['reason']})" if a["code"] else ""
        print(f"account {a['account']}: {a['uri']} {a['state']}{code}")
    for c in status["calls"]:
        print(
            f"call {c['call']}: {c['direction']} {c['remote_uri']} {c['state']}"
            f" {c.get('duration', 0):.0f} s"
        )
    for warning in status.get("config_warnings", []):
        print(f"warning:  {warning}")
    return 0


_KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false"}
_BOOLS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLS |= {"0": False, "false": False, "no": False, "off": False}


def _coerce(command: str, key: str, kind: str, text: str) -> Any:
    """A ``key=value`` argument as the type the command declares; a wrong one is
    refused naming the parameter and what it takes."""
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            return _BOOLS[text.lower()]
    except (ValueError, KeyError):
        raise ValueError(
            f"{command}: parameter {key!r} takes {_KINDS[kind]}, not {text!r}"
        ) from None
    return text


def _print_help(commands: list[dict[str, Any]]) -> None:
    """``cmd help`` for people: each command, its help, each parameter's type and help."""
    for i, command in enumerate(commands):
        if i:
            print()
        print(f"{command['name']}: {command['help']}")
        params = command["params"]
        width = max((len(name) for name in params), default=0)
        for name, spec in params.items():
            need = "" if spec["required"] else ", optional"
            print(f"  {name.ljust(width)}  ({spec['type']}{need}) {spec['help']}")


def _cmd(args: argparse.Namespace) -> int:
    """Any engine command from the shell: ``microsip-engine cmd dial target=sip:…``."""
    try:
        client = _client(args)
    except EngineError as exc:
        return _fail(args, exc)
    if args.name == "help" and len(args.params) == 1 and "=" not in args.params[0]:
        args.params = [f"command={args.params[0]}"]  # `cmd help dial`
    try:
        (described,) = client.request("help", command=args.name)["commands"]
        kinds = {name: spec["type"] for name, spec in described["params"].items()}
        params: dict[str, Any] = {}
        for item in args.params:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r}: parameters are key=value")
            if key not in kinds:
                raise ValueError(f"{args.name} has no parameter {key!r} (has: {', '.join(kinds)})")
            params[key] = _coerce(args.name, key, kinds[key], value)
        result = client.call(args.name, params)
    except (ValueError, EngineError) as exc:
        return _fail(args, exc)
    finally:
        client.close()
    if args.name == "help" and not args.json:
        _print_help(result["commands"])
    else:
        print(json.dumps(result, indent=2))
    return 0


def _events(args: argparse.Namespace) -> int:
    names = args.only.split(",") if args.only else None
    try:
        with _client(args).events(names) as stream:
            for event in stream:
                print(json.dumps(event), flush=True)
    except KeyboardInterrupt:
        return 0
    except EngineError as exc:
        return _fail(args, exc)
    return 0


def _token(args: argparse.Namespace) -> int:
    """Where the TCP control token is (``token``) or the token itself (``--show``),
    for the Windows shim's ``tokenFile``: found as the engine finds it, and created
    as the engine would create it when there is none yet."""
    from ..config import load_config
    from ..control.locate import locate
    from ..control.paths import ensure_private_dir
    from ..control.tcp import default_token_path, load_or_create_token
    from ..logs import configure

    configure(level="warning")  # stdout carries the answer alone
    try:
        where = locate(args.control, args.config)
        configured = load_config(where.config).engine.tcp_control_token
        path = configured or default_token_path(where.path)
        if not args.show:
            print(path)
            return 0
        if not configured:
            ensure_private_dir(path)  # the control socket's private directory
        print(load_or_create_token(path))
    except EngineError as exc:
        print(f"microsip-engine: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _version(_args: argparse.Namespace) -> int:
    print(f"microsip-engine {__version__}")
    return 0


def _locating_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--control", help="control socket (default: $MICROSIP_CONTROL, the ini's controlSocket)"
    )
    parser.add_argument(
        "--config", help="microsip.ini whose [Engine] controlSocket to use (default: as serve)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microsip-engine", description=__doc__)
    parser.add_argument("--version", action="version", version=f"microsip-engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the engine in the foreground")
    serve.add_argument("--config", help="microsip.ini (default: $MICROSIP_INI, user dir, embedded)")
    serve.add_argument("--bind", help="address to bind SIP and RTP to (default: all)")
    serve.add_argument("--sip-port", type=int, help="SIP port (0 = any free port)")
    serve.add_argument("--control", help="control socket path")
    serve.add_argument("--tcp-control", metavar="HOST:PORT", help="also serve control on TCP")
    serve.add_argument("--tcp-control-token", metavar="FILE", help="TCP control token file")
    serve.add_argument("--log-format", choices=["console", "json"])
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--log-file", metavar="PATH", help="log to PATH (reopened on SIGHUP, for logrotate)"
    )
    serve.add_argument(
        "--supervise",
        action="store_true",
        help="run the engine in a child process and restart it after a crash",
    )
    serve.add_argument(
        "--watchdog-sec",
        type=float,
        default=30.0,
        metavar="S",
        help="with --supervise: restart an engine whose SIP thread is stuck this long (0 = off)",
    )
    serve.set_defaults(func=_serve)
    status = sub.add_parser("status", help="accounts, calls and capacity of the running engine")
    status.add_argument("--json", action="store_true", help="print JSON")
    _locating_options(status)
    status.set_defaults(func=_status)
    events = sub.add_parser("events", help="stream the engine's events as JSON lines")
    events.add_argument("--only", help="comma-separated event names")
    _locating_options(events)
    events.set_defaults(func=_events)
    cmd = sub.add_parser(
        "cmd", help="run any engine command (see `cmd help`), parameters as key=value"
    )
    cmd.add_argument("name", help="command name, e.g. dial, hold, toggle, help")
    cmd.add_argument("params", nargs="*", help="key=value parameters")
    cmd.add_argument("--json", action="store_true", help="`help` as JSON (other results are)")
    _locating_options(cmd)
    cmd.set_defaults(func=_cmd)
    token = sub.add_parser(
        "token", help="the TCP control token file (--show: the token) for the Windows shim"
    )
    token.add_argument("--show", action="store_true", help="print the token itself")
    _locating_options(token)
    token.set_defaults(func=_token)
    from . import history

    history.add_parser(sub)
    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for --supervise's child
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
