"""The one command registry.

Every control channel -- the local socket, the ``microsip`` CLI, the WM_COPYDATA
shim -- is only a channel onto this registry: a command is registered once, with
its parameters and help text, and every channel gets it, validated the same way.

Parameters are flat JSON scalars: ``str``, ``int``, ``bool`` or ``float``. A
parameter spec is either the bare type (required), ``T | None`` (optional: when
absent it is not passed, so the function's own default applies) or a
:class:`Param` (to add help text). Unknown parameters are an error, never ignored.

A registry owns what its commands own (a worker thread): :meth:`CommandRegistry.close`
releases it when the engine stops.

Standard library only: the CLI may import this without pulling in the engine.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import threading
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .errors import EngineError

__all__ = ["CommandError", "CommandFunc", "CommandRegistry", "Param", "ParamSpec"]

CommandFunc = Callable[..., Any]
F = TypeVar("F", bound=CommandFunc)

#: The parameter types a command may declare, by the name shown in ``help``.
_TYPES: dict[type, str] = {str: "str", int: "int", bool: "bool", float: "float"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
#: Names handled by the channels themselves (the socket's event stream).
RESERVED = frozenset({"subscribe"})


class CommandError(EngineError):
    """A command call was refused before it ran: ``unknown_command`` or ``bad_params``."""

    code = "bad_params"


@dataclasses.dataclass(frozen=True)
class Param:
    """One declared parameter of a command."""

    type: type
    required: bool = True
    help: str = ""

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"parameter type must be one of str/int/bool/float, not {self.type!r}")

    @property
    def type_name(self) -> str:
        return _TYPES[self.type]


ParamSpec = type | Param | types.UnionType


def _as_param(spec: ParamSpec) -> Param:
    """Normalise ``str`` / ``int | None`` / ``Param(...)`` into a :class:`Param`."""
    if isinstance(spec, Param):
        return spec
    if isinstance(spec, type):
        return Param(spec)
    if typing.get_origin(spec) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(spec) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(spec)) == 2:
            return Param(args[0], required=False)
    raise ValueError(f"bad parameter spec {spec!r}: use str, int, bool, float, T | None or Param")


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    func: CommandFunc
    help: str
    params: Mapping[str, Param]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "help": self.help,
            "params": {
                name: {"type": p.type_name, "required": p.required, "help": p.help}
                for name, p in self.params.items()
            },
        }


def _check_signature(name: str, func: CommandFunc, params: Mapping[str, Param]) -> None:
    """Catch wiring mistakes at registration, not at the first call."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # some builtins have no signature: trust the spec
        return
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = {n: p for n, p in sig.parameters.items() if p.kind in kinds}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    for pname, param in params.items():
        fparam = accepted.get(pname)
        if fparam is None:
            if not var_kw:
                raise ValueError(f"command {name!r}: function does not accept {pname!r}")
        elif not param.required and fparam.default is inspect.Parameter.empty:
            raise ValueError(f"command {name!r}: optional {pname!r} needs a default")
    for pname, fparam in sig.parameters.items():
        needed = fparam.default is inspect.Parameter.empty and fparam.kind in (
            *kinds,
            inspect.Parameter.POSITIONAL_ONLY,
        )
        if needed and not (pname in params and params[pname].required):
            raise ValueError(f"command {name!r}: {pname!r} is required by the function")


def _check_value(command: str, pname: str, param: Param, value: Any) -> Any:
    ok: bool
    if param.type is bool:
        ok = isinstance(value, bool)
    elif param.type is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif param.type is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
    else:
        ok = isinstance(value, str)
    if not ok:
        got = "null" if value is None else type(value).__name__
        raise CommandError(
            f"{command}: parameter {pname!r} must be {param.type_name}, got {got}",
            code="bad_params",
        )
    return value


class CommandRegistry:
    """Named commands with validated parameters; thread-safe to call."""

    def __init__(
        self, *, help_command: bool = True, param_help: Mapping[str, str] | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._commands: dict[str, Command] = {}
        self._closers: list[Callable[[], None]] = []
        #: Help for parameters registered without any, by name: a ``call`` or an
        #: ``account`` means the same in every command, so it is described once.
        self._param_help = dict(param_help or {})
        if help_command:
            self.register(
                "help",
                self._help,
                help="List the commands with their parameters, or describe one.",
                params={"command": Param(str, required=False, help="a command name")},
            )

    def register(
        self,
        name: str,
        func: CommandFunc,
        *,
        help: str,
        params: Mapping[str, ParamSpec] | None = None,
    ) -> None:
        """Add a command. ``params`` maps each parameter name to its spec."""
        if not _NAME.match(name):
            raise ValueError(f"bad command name {name!r}: use lower_case letters")
        if name in RESERVED:
            raise ValueError(f"command name {name!r} is reserved for the control channels")
        spec = {pname: _as_param(s) for pname, s in (params or {}).items()}
        spec = {
            pname: p if p.help else dataclasses.replace(p, help=self._param_help.get(pname, ""))
            for pname, p in spec.items()
        }
        _check_signature(name, func, spec)
        with self._lock:
            if name in self._commands:
                raise ValueError(f"command {name!r} is already registered")
            self._commands[name] = Command(name, func, help, spec)

    def command(
        self, name: str, *, help: str, params: Mapping[str, ParamSpec] | None = None
    ) -> Callable[[F], F]:
        """Decorator form of :meth:`register`."""

        def decorate(func: F) -> F:
            self.register(name, func, help=help, params=params)
            return func

        return decorate

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._commands)

    def describe(self, name: str | None = None) -> list[dict[str, Any]]:
        """JSON-ready description of every command (or of one) for ``help``."""
        if name is not None:
            return [self._get(name).describe()]
        with self._lock:
            commands = sorted(self._commands.values(), key=lambda c: c.name)
        return [c.describe() for c in commands]

    def validate(self, name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check ``params`` against the command's spec; returns the keyword arguments."""
        command = self._get(name)
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise CommandError(f"{name}: params must be an object", code="bad_params")
        out: dict[str, Any] = {}
        for pname, value in params.items():
            param = command.params.get(pname) if isinstance(pname, str) else None
            if param is None:
                accepted = ", ".join(command.params) or "none"
                raise CommandError(
                    f"{name}: unknown parameter {pname!r} (accepted: {accepted})",
                    code="bad_params",
                )
            out[pname] = _check_value(name, pname, param, value)
        missing = [p for p, spec in command.params.items() if spec.required and p not in out]
        if missing:
            raise CommandError(
                f"{name}: missing required parameter {missing[0]!r}", code="bad_params"
            )
        return out

    def call(self, name: str, params: Mapping[str, Any] | None = None) -> Any:
        """Validate and run a command; its own exceptions propagate unchanged."""
        kwargs = self.validate(name, params)
        return self._get(name).func(**kwargs)

    def on_close(self, closer: Callable[[], None]) -> None:
        """Have :meth:`close` call ``closer``: what a command owns (a worker thread)
        lives as long as the registry does."""
        with self._lock:
            self._closers.append(closer)

    def close(self) -> None:
        """Release what the commands own, newest first; a second call does nothing.
        Commands may still be called afterwards: those that needed it raise."""
        with self._lock:
            closers, self._closers = self._closers[::-1], []
        for closer in closers:
            closer()

    def __enter__(self) -> CommandRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, name: str) -> Command:
        with self._lock:
            command = self._commands.get(name) if isinstance(name, str) else None
        if command is None:
            raise CommandError(f"unknown command {name!r} (try 'help')", code="unknown_command")
        return command

    def _help(self, command: str | None = None) -> dict[str, Any]:
        return {"commands": self.describe(command)}
