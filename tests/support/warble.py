"""Running Warble in tests: a program in this process, its output or error, and the `warble` command."""

from __future__ import annotations

import argparse
import io
import sys

import pytest

from pidaemon.warble import Limits, Result, WarbleError, compile_program
from pidaemon.warble.cli import add_commands

# Limits small enough that a runaway program ends quickly.
SMALL = Limits(max_steps=20_000, time_limit=5.0, max_output_lines=200, max_output_chars=20_000)


def run(source: str, **kwargs) -> Result:
    """Compile with the given limits and run in-process."""
    limits = kwargs.pop("limits", None)
    builtins = kwargs.pop("builtins", ())
    return compile_program(source, limits=limits, builtins=builtins).run(limits=limits, **kwargs)


def out(source: str, **kwargs) -> list[str]:
    """The output of a program that must end with status ok."""
    result = run(source, **kwargs)
    assert result.status == "ok", (source, result.error)
    return result.output


def compile_error(source: str, **kwargs) -> WarbleError:
    with pytest.raises(WarbleError) as info:
        compile_program(source, **kwargs)
    return info.value


def run_error(source: str, status: str = "error", **kwargs):
    result = run(source, **kwargs)
    assert result.status == status, (source, result)
    assert result.error is not None
    return result.error


class CliResult:
    def __init__(self, code: int, stdout: str, stderr: str):
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def cli(*argv: str, stdin: str = "", monkeypatch=None) -> CliResult:
    """Run `pidaemon warble ...` through a tiny argparse like the core CLI's."""
    parser = argparse.ArgumentParser(prog="pidaemon")
    subparsers = parser.add_subparsers(dest="command")
    add_commands(subparsers)
    args = parser.parse_args(list(argv))
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), io.StringIO(), io.StringIO()
    try:
        code = args.func(args)
        return CliResult(code, sys.stdout.getvalue(), sys.stderr.getvalue())
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
