"""The extension point: a built-in function that a plugin adds to Warble.

Plugins return `Builtin` objects from a pluggy hook. `validate` runs inside
the sandbox (in the child process under the runner) and raises `WarbleError`
with a message for the user; `perform` does the work and returns the call's
value (a number or a string; None is 0). For an `effect` built-in (lights,
sound, anything with a physical effect) `perform` runs in the caller's
process: the sandboxed child sends `(name, args)` to it as the program runs
and waits for the answer, so the call still has `perform`'s value, and a
`WarbleError` from `validate` or `perform` there is the program's error at
the call. A built-in sent to the runner's child must be picklable, so use
module-level functions or instances of small classes, not lambdas, for
`validate` (and for `perform` unless `effect` is true).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

NAME_RE = re.compile(r"[A-Z][A-Z0-9_]*\Z")


def accept_args(args: tuple) -> tuple:
    return args


@dataclass(frozen=True)
class Builtin:
    name: str                      # upper case, e.g. "BUZZ"
    min_args: int
    max_args: Optional[int]        # None: any number
    doc: str                       # one line with an example: 'BUZZ(n): buzz n times. BUZZ(2)'
    perform: Callable[[tuple], Any]
    validate: Callable[[tuple], tuple] = accept_args
    effect: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise ValueError(f"built-in name {self.name!r} must be upper case letters, digits and _")
        if self.min_args < 0 or (self.max_args is not None and self.max_args < self.min_args):
            raise ValueError(f"built-in {self.name}: bad argument counts {self.min_args}..{self.max_args}")
        if not callable(self.perform) or not callable(self.validate):
            raise ValueError(f"built-in {self.name}: perform and validate must be callable")

    @property
    def arity(self) -> tuple[int, Optional[int]]:
        return (self.min_args, self.max_args)
