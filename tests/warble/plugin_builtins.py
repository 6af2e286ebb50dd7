"""Example plugin built-ins, importable by the runner's child (module-level, picklable)."""
from pidaemon.warble import Builtin, WarbleError


def double(args):
    return args[0] * 2


def check_number(args):
    if isinstance(args[0], str):
        raise WarbleError("DOUBLE needs a number")
    return args


def greet(args):
    return "hello " + "+".join(str(a) for a in args)


def broken(args):
    raise RuntimeError("a device exploded at 0xdeadbeef")


class Buzzer:
    """An effect device that records what it did."""

    def __init__(self):
        self.calls = []

    def __call__(self, args):
        self.calls.append(args)


DOUBLE = Builtin("DOUBLE", 1, 1, "DOUBLE(x): twice x. PRINT(DOUBLE(21))", perform=double, validate=check_number)
GREET = Builtin("GREET", 0, None, 'GREET(a, ...): a greeting. PRINT(GREET("ada"))', perform=greet)
BROKEN = Builtin("BROKEN", 0, 0, "BROKEN(): always fails. BROKEN()", perform=broken)
