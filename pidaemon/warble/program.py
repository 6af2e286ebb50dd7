"""compile_program() and Program.run(): the Python API of Warble.

    program = compile_program('FOR(i=0;i<3;i++){PRINT(i)}')
    result = program.run(user="ada")
    result.status, result.output     # 'ok', ['0', '1', '2']

Compiling parses, infers types and builds a code object once; each run gets
fresh state (variables, precision, budgets). `run` executes in the calling
process with all in-process checks; use `Runner` to add a child process with
memory and CPU limits and a hard kill.
"""
from __future__ import annotations

import logging
import time
import types
from dataclasses import dataclass, field
from typing import Iterable

from . import syntax as S
from .builtin import Builtin
from .compiler import Compiled, Compiler, Position
from .effects import RecordingEffects, lights_builtin, playsound_builtin
from .errors import ErrorInfo, WarbleError, did_you_mean
from .arith import FLOAT_TOO_LARGE
from .inference import TypeInfo
from .library import CORE_NAMES, EFFECT_NAMES, SIGNATURES, SILENT_CALLS
from .lexer import KEYWORDS
from .limits import Limits
from .parser import parse
from .result import Result
from .runtime import Run
from .store import MemoryStore

log = logging.getLogger(__name__)

# Fields of Limits that shape the compiled code; a run with other values recompiles.
COMPILE_FIELDS = ("max_program_length", "max_depth", "max_number_digits")


def check_builtins(builtins: Iterable[Builtin]) -> dict[str, Builtin]:
    """Extra built-ins by name; ValueError if one would shadow the language or another."""
    extras: dict[str, Builtin] = {}
    for b in builtins:
        if not isinstance(b, Builtin):
            raise TypeError(f"expected a Builtin, got {type(b).__name__}")
        if b.name in CORE_NAMES or b.name in KEYWORDS or b.name == "ELSEIF":
            raise ValueError(f"built-in {b.name} would shadow Warble's own {b.name}")
        if b.name in extras:
            raise ValueError(f"built-in {b.name} is defined twice")
        extras[b.name] = b
    return extras


def compile_program(source: str, *, limits: Limits | None = None,
                    builtins: Iterable[Builtin] = (), repl_vars: Iterable[str] | None = None,
                    precision: bool = False) -> "Program":
    """Parse and compile; raises WarbleError (message, line, column) if the program is invalid.

    `builtins` adds built-ins (LIGHTS and PLAYSOUND replace the default ones);
    a name of Warble's own library raises ValueError. `repl_vars` and
    `precision` are for the REPL, which carries variables between lines; with
    `repl_vars` a value on its own at the top level is printed (see `parse`).
    """
    limits = limits or Limits()
    extras = check_builtins(builtins)
    functions = {name: (sig.min_args, sig.max_args) for name, sig in SIGNATURES.items()}
    for name, b in extras.items():
        functions[name] = (b.min_args, b.max_args)
    extra_names = frozenset(extras) | EFFECT_NAMES
    silent = None
    if repl_vars is not None:
        silent = SILENT_CALLS | {name for name, b in extras.items() if b.effect}
    try:
        tree = parse(source, limits, functions, silent)
        uses_precision = precision or any(
            isinstance(n, S.Call) and n.name == "SETPRECISION" for n in S.walk(tree.body))
        repl = frozenset(repl_vars) if repl_vars is not None else None
        info = TypeInfo(tree, limits.max_int_bits, extra_names, repl or ())
        compiled = Compiler(info, extra_names, uses_precision, repl).compile(tree)
    except RecursionError:
        raise WarbleError("program too deeply nested", 1, 1) from None
    except (SyntaxError, MemoryError, OverflowError):
        # limits of Python's own compiler (e.g. blocks nested too deep)
        raise WarbleError("program too complex", 1, 1) from None
    return Program(source, limits, extras, compiled, repl is not None)


@dataclass
class Program:
    source: str
    limits: Limits
    extras: dict[str, Builtin]
    compiled: Compiled
    repl: bool = False
    _variants: dict = field(default_factory=dict, repr=False)

    @property
    def builtins(self) -> list[Builtin]:
        return list(self.extras.values())

    def for_limits(self, limits: Limits) -> "Program":
        """The same program compiled for other size limits (cached)."""
        key = tuple(getattr(limits, f) for f in COMPILE_FIELDS)
        if key == tuple(getattr(self.limits, f) for f in COMPILE_FIELDS):
            return self
        if key not in self._variants:
            self._variants[key] = compile_program(self.source, limits=limits, builtins=self.builtins)
        return self._variants[key]

    def environment_builtins(self, effects, limits: Limits) -> dict[str, Builtin]:
        """Extra built-ins plus the default LIGHTS/PLAYSOUND bound to `effects`."""
        extras = dict(self.extras)
        if "LIGHTS" not in extras:
            extras["LIGHTS"] = lights_builtin(limits.light_count, effects.lights)
        if "PLAYSOUND" not in extras:
            extras["PLAYSOUND"] = playsound_builtin(limits.sounds, effects.play)
        return extras

    def run(self, *, user: str = "anonymous", store=None, effects=None, limits: Limits | None = None,
            seed: int | None = None, variables: dict | None = None, state: dict | None = None) -> Result:
        """Run in this process and return a Result; never raises for anything the program does.

        `store` defaults to a fresh MemoryStore, `effects` to RecordingEffects.
        """
        limits = limits or self.limits
        program = self.for_limits(limits)
        if effects is None:
            effects = RecordingEffects()
        if store is None:
            store = MemoryStore(limits.max_saved_keys, limits.max_saved_value_length)
        rt = Run(limits=limits, user=user, store=store, effects=effects,
                 extras=program.environment_builtins(effects, limits), seed=seed,
                 decimal_texts=program.compiled.decimal_texts)
        if state:
            restore_state(rt, state)
        result = execute(program, rt, variables)
        if state is not None:
            state.clear()
            state.update(save_state(rt))
        return result


def save_state(rt: Run) -> dict:
    return {"variables": rt.variables or {}, "ctx": rt.ctx, "digits": rt.digits}


def restore_state(rt: Run, state: dict) -> None:
    if state.get("ctx") is not None:
        rt.ctx = state["ctx"]
        rt.digits = state["digits"]


def execute(program: Program, rt: Run, variables: dict | None = None) -> Result:
    """Run the compiled function on `rt`; map every failure to a Result."""
    compiled = program.compiled
    rt.code, rt.loop_locals = compiled.code, compiled.loop_locals
    fn = types.FunctionType(compiled.code, rt.namespace(compiled.used_core, compiled.used_extra))
    status, error = "ok", None
    try:
        fn(variables or {})
    except BaseException as exc:  # noqa: BLE001 - everything the program does ends in a Result
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) and not isinstance(exc, WarbleError):
            raise
        frame, pos = _failing_frame(exc, compiled)
        if frame is not None:
            _refund_loops(frame, compiled)
            if program.repl:
                rt.variables = {k[2:]: v for k, v in frame.f_locals.items() if k.startswith("v_")}
        status, error = _describe(exc, pos, compiled.defined)
    elapsed = time.monotonic() - rt.start
    return Result(status, list(rt.output), error, rt.steps(), elapsed)


def _failing_frame(exc: BaseException, compiled: Compiled):
    tb = exc.__traceback__
    frame, pos = None, None
    while tb is not None:
        if tb.tb_frame.f_code is compiled.code:
            frame = tb.tb_frame
            lineno = tb.tb_lineno
            if lineno is not None and 0 < lineno < len(compiled.positions):
                pos = compiled.positions[lineno]
        tb = tb.tb_next
    return frame, pos


def _refund_loops(frame, compiled: Compiled) -> None:
    """Give back the unused rest of the chunks of loops that were running."""
    local = frame.f_locals
    for it_name, target in compiled.loop_locals:
        it = local.get(it_name)
        if it is not None and target in local:
            it.refund_after(local[target])


def _describe(exc: BaseException, pos: Position | None,
              defined: frozenset = frozenset()) -> tuple[str, ErrorInfo]:
    line, col = (pos.line, pos.col) if pos is not None else (None, None)
    kind, detail = (pos.kind, pos.detail) if pos is not None else ("", "")
    if isinstance(exc, WarbleError):
        exc.at(line, col)
        return exc.status, exc.info()
    if isinstance(exc, MemoryError):
        return "memory_limit", ErrorInfo("out of memory", line, col)
    message = _message(exc, kind, detail, defined)
    if message is None:
        log.error("Warble internal error", exc_info=exc)
        message = "internal error in Warble (not your program's fault)"
    return "error", ErrorInfo(message, line, col)


def _message(exc: BaseException, kind: str, detail: str, defined: frozenset) -> str | None:
    if isinstance(exc, (UnboundLocalError, NameError)):
        if kind == "var":
            # a name that is never given a value with = is probably a misspelling of one that is
            hint = "" if detail in defined else did_you_mean(detail, defined)
            return f"variable {detail} is not set{hint}"
        return "a variable is not set"
    if isinstance(exc, ZeroDivisionError):
        return "modulo by zero" if detail == "%" else "division by zero"
    if isinstance(exc, OverflowError):
        return FLOAT_TOO_LARGE
    if isinstance(exc, TypeError):
        if kind == "compare" or (kind == "call" and detail in ("MIN", "MAX")):
            return "cannot compare a string with a number"
        if kind == "call":
            return f"{detail} needs numbers, not strings"
        if kind == "op":
            return f"cannot use {detail} with a string"
        return "a string cannot be used here"
    if isinstance(exc, ValueError):
        if kind == "call":
            return f"{detail}: the argument is outside the function's domain"
        return "invalid value"
    if isinstance(exc, RecursionError):
        return "program too complex"
    return None
