"""`pidaemon warble run|check|repl`: Warble on the command line.

`add_commands(subparsers)` adds the `warble` command to the core CLI's
argparse subparsers; every handler returns the exit status: 0 when the
program ran (or parsed) fine, 1 when it failed or hit a limit, 3 when the
sandbox could not be started.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from .builtin import Builtin
from .effects import RecordingEffects
from .errors import ErrorInfo, WarbleError
from .lexer import QUOTES
from .library import SIGNATURES
from .limits import Limits
from .program import compile_program
from .result import Result
from .store import MemoryStore, SqliteStore


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "warble", help="run, check and learn Warble programs",
        description="Warble: the cluster's tweet-sized language (see docs/warble.md).")
    commands = parser.add_subparsers(dest="warble_command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser("run", help="run a program and print its output",
                              description="Run a Warble program (in a sandboxed child process).")
    run.add_argument("source", help="the program text, or - to read it from standard input")
    run.add_argument("--user", default="anonymous", help="user name for SAVE/LOAD (default: anonymous)")
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.add_argument("--store", metavar="PATH", help="SQLite file that keeps SAVEd values between runs")
    run.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                     help="override a limit, e.g. --limit time_limit=5 (repeatable)")
    run.add_argument("--show-effects", action="store_true", help="print LIGHTS/PLAYSOUND calls on stderr")
    run.add_argument("--in-process", action="store_true",
                     help="run without the sandbox child process (in-process checks only)")
    run.add_argument("--plugin", action="append", default=[], metavar="NAME",
                     help="add the Warble built-ins of an installed pidaemon plugin (repeatable)")
    run.set_defaults(func=cmd_run)

    check = commands.add_parser("check", help="only parse and compile a program",
                                description="Check that a Warble program is valid, without running it.")
    check.add_argument("source", help="the program text, or - to read it from standard input")
    check.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE")
    check.add_argument("--plugin", action="append", default=[], metavar="NAME",
                       help="also know the Warble built-ins of an installed pidaemon plugin (repeatable)")
    check.set_defaults(func=cmd_check)

    repl = commands.add_parser("repl", help="an interactive prompt for learning Warble",
                               description="Type Warble statements; variables are kept between lines.")
    repl.add_argument("--user", default="repl")
    repl.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE")
    repl.set_defaults(func=cmd_repl)


# ---- helpers ---------------------------------------------------------------------
def _source(arg: str) -> str:
    """The program; from standard input, the newline that ends the last line is not part of it
    (`echo 'PRINT(1)' | pidaemon warble run -` must not spend one of the 280 characters on it)."""
    if arg != "-":
        return arg
    text = sys.stdin.read()
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def _limits(pairs: list[str]) -> Limits:
    """Limits from NAME=VALUE pairs (values read as YAML); ValueError if one is wrong."""
    values = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--limit needs NAME=VALUE, got {pair!r}")
        import yaml   # only with --limit
        try:
            values[name.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"--limit {pair}: {exc}") from None
    return Limits.from_mapping(values)


def format_error(source: str, error: ErrorInfo, label: str = "error") -> str:
    """The error message and, when the position is known, the line with a caret under it."""
    if error.line is None:
        return f"{label}: {error.message}"
    text = f"{label}: line {error.line}, column {error.column}: {error.message}"
    lines = source.split("\n")
    if 1 <= error.line <= len(lines):
        line = lines[error.line - 1].replace("\t", " ")
        caret = " " * max(error.column - 1, 0) + "^"
        text += f"\n  {line}\n  {caret}"
    return text


def _report(source: str, result: Result, err: TextIO) -> None:
    if result.error is not None:
        label = "error" if result.status == "error" else result.status
        print(format_error(source, result.error, label), file=err)


def _effect_lines(effects: RecordingEffects, start: int = 0) -> list[str]:
    return [f"[{name} {' '.join(str(a) for a in args)}]"
            for name, args in effects.events[start:] if name != "SLEEP"]


def plugin_builtins(names: list[str]) -> list[Builtin]:
    """The Warble built-ins that installed pidaemon plugins add (`pidaemon_warble_builtins`).

    Each plugin is created with its default settings on a node that has no bus
    (it is not started); a plugin that cannot be loaded raises ValueError.
    """
    if not names:
        return []
    import atexit
    import shutil
    import tempfile

    from ..config import ConfigError, config_from_mapping
    from ..daemon import Daemon, DaemonError
    from ..plugins import PluginCatalog
    from pidaemon_plugins.warble.hookspecs import WarbleHooks

    catalog = PluginCatalog()
    state_dir = tempfile.mkdtemp(prefix="pidaemon-warble-")
    atexit.register(shutil.rmtree, state_dir, ignore_errors=True)
    mapping = {"node": {"role": "cli", "id": "warble-cli", "state_dir": state_dir},
               "plugins": {name: {"required": True} for name in names}}
    try:
        node = Daemon(config_from_mapping(mapping, origin="--plugin", plugin_schema=catalog.schema),
                      catalog=catalog, facts={"hostname": "warble-cli", "mac": "00:00:00:00:00:00"})
        node.load_plugins()
    except (ConfigError, DaemonError) as exc:
        raise ValueError(str(exc)) from None
    return WarbleHooks(node).builtins()


# ---- commands --------------------------------------------------------------------
def _inputs(args: argparse.Namespace):
    """(source, limits, plugin built-ins) from the command line, or None after printing what is wrong."""
    try:
        return _source(args.source), _limits(args.limit), plugin_builtins(args.plugin)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _store(path: str | None, limits: Limits):
    """The store SAVE/LOAD use: the --store file, or memory; None after saying why the file cannot be used."""
    if not path:
        return MemoryStore(limits.max_saved_keys, limits.max_saved_value_length)
    import sqlite3

    from ..sqlite import CorruptDatabase
    try:
        return SqliteStore(path, limits.max_saved_keys, limits.max_saved_value_length)
    except CorruptDatabase as exc:
        print(f"error: --store {exc}", file=sys.stderr)
    except (sqlite3.Error, OSError) as exc:
        print(f"error: --store {path}: cannot open it ({exc})", file=sys.stderr)
    return None


def cmd_run(args: argparse.Namespace) -> int:
    inputs = _inputs(args)
    if inputs is None:
        return 2
    source, limits, builtins = inputs
    store = _store(args.store, limits)
    if store is None:
        return 2
    effects = RecordingEffects(realtime=True)
    try:
        if args.in_process:
            try:
                program = compile_program(source, limits=limits, builtins=builtins)
            except WarbleError as exc:
                result = Result("error", [], exc.info())
            else:
                result = program.run(user=args.user, store=store, effects=effects)
        else:
            from .runner import Runner, RunnerError
            try:
                with Runner(limits) as runner:
                    result = runner.run(source, user=args.user, store=store, effects=effects, builtins=builtins)
            except RunnerError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 3
    finally:
        if isinstance(store, SqliteStore):
            store.close()
    if args.json:
        data = result.to_dict()
        data["effects"] = [[name, list(a)] for name, a in effects.events if name != "SLEEP"]
        print(json.dumps(data, ensure_ascii=False))
    else:
        for line in result.output:
            print(line)
    if args.show_effects:
        for line in _effect_lines(effects):
            print(line, file=sys.stderr)
    if not args.json:
        _report(source, result, sys.stderr)
    return 0 if result.ok else 1


def cmd_check(args: argparse.Namespace) -> int:
    inputs = _inputs(args)
    if inputs is None:
        return 2
    source, limits, builtins = inputs
    try:
        compile_program(source, limits=limits, builtins=builtins)
    except WarbleError as exc:
        print(format_error(source, exc.info()), file=sys.stderr)
        return 1
    print("ok")
    return 0


REPL_HELP = """\
Type Warble statements and press Enter; variables are kept between lines.
  PRINT("hello cluster")        x=16^2;PRINT(x)        FOR(i=0;i<3;i++){PRINT(i)}
A value on its own is printed: 2+3 shows 5, x shows x, SQRT(2) its value
(not PRINT, SETPRECISION, SAVE, SLEEP and the effects: they are done, not shown).
Commands: :help (this), :builtins (every built-in with an example), :vars, :quit
A line that leaves a ( or { open continues on the next line."""


def _open_brackets(text: str) -> int:
    depth, closing = 0, None
    for c in text:
        if closing is not None:
            if c in closing:
                closing = None
        elif c in QUOTES:
            closing = QUOTES[c]
        elif c in "({":
            depth += 1
        elif c in ")}":
            depth -= 1
    return depth


def cmd_repl(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    from .session import Session

    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    try:
        limits = _limits(args.limit)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    effects = RecordingEffects(realtime=True)
    session = Session(limits, user=args.user, effects=effects)
    interactive = stdin is sys.stdin and stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
    print("Warble REPL. :help for help, :quit to leave.", file=out)
    buffer = ""
    while True:
        if interactive:
            try:
                line = input("....... " if buffer else "warble> ") + "\n"
            except EOFError:
                line = ""
            except KeyboardInterrupt:
                print(file=out)
                buffer = ""
                continue
        else:
            line = stdin.readline()
        if not line:
            if buffer:
                _repl_run(session, effects, buffer, out)     # the error shows what is missing
            break
        line = line.rstrip("\n")
        command = line.strip()
        if not buffer and command.startswith(":"):
            if command in (":quit", ":q", ":exit"):
                break
            if command == ":help":
                print(REPL_HELP, file=out)
            elif command == ":builtins":
                for sig in SIGNATURES.values():
                    print(f"{sig.doc}\n    e.g. {sig.example}", file=out)
            elif command == ":vars":
                for name in sorted(session.variables):
                    print(f"{name} = {session.variables[name]}", file=out)
            else:
                print(f"unknown command {command} (:help lists them)", file=out)
            continue
        buffer = f"{buffer}\n{line}" if buffer else line
        if _open_brackets(buffer) > 0:
            continue
        source, buffer = buffer, ""
        if source.strip():
            _repl_run(session, effects, source, out)
    return 0


def _repl_run(session, effects: RecordingEffects, source: str, out: TextIO) -> None:
    events_before = len(effects.events)
    try:
        result = session.run(source)
    except WarbleError as exc:
        print(format_error(source, exc.info()), file=out)
        return
    except KeyboardInterrupt:  # Ctrl-C stops the program, not the session: its variables stay as before
        print("interrupted (the variables are as they were before this line)", file=out)
        return
    for text in result.output:
        print(text, file=out)
    for text in _effect_lines(effects, events_before):
        print(text, file=out)
    if result.error is not None:
        label = "error" if result.status == "error" else result.status
        print(format_error(source, result.error, label), file=out)
