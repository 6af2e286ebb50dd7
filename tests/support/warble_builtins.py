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
    """An effect device that records what it did; it returns how many buzzes it made so far."""

    def __init__(self):
        self.calls = []

    def __call__(self, args):
        self.calls.append(args)
        return sum(n for (n,) in self.calls)


DOUBLE = Builtin("DOUBLE", 1, 1, "DOUBLE(x): twice x. PRINT(DOUBLE(21))", perform=double, validate=check_number)
GREET = Builtin("GREET", 0, None, 'GREET(a, ...): a greeting. PRINT(GREET("ada"))', perform=greet)
BROKEN = Builtin("BROKEN", 0, 0, "BROKEN(): always fails. BROKEN()", perform=broken)


# Built-ins that look at the sandbox process itself (they run in the child), for the reuse tests.

def sandbox_pid(args):
    import os
    return os.getpid()


def cpu_seconds_left(args):
    """Seconds of CPU this process may still use before RLIMIT_CPU stops it."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return resource.getrlimit(resource.RLIMIT_CPU)[0] - (usage.ru_utime + usage.ru_stime)


def memory_mb_left(args):
    """Megabytes of address space this process may still map before RLIMIT_AS stops it."""
    import os
    import resource
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    return (resource.getrlimit(resource.RLIMIT_AS)[0] - size) / 2**20


PID = Builtin("PID", 0, 0, "PID(): the sandbox's process id. PRINT(PID())", perform=sandbox_pid)
CPU_LEFT = Builtin("CPU_LEFT", 0, 0, "CPU_LEFT(): CPU seconds left. PRINT(CPU_LEFT())", perform=cpu_seconds_left)
MEMORY_LEFT = Builtin("MEMORY_LEFT", 0, 0, "MEMORY_LEFT(): MB of memory left. PRINT(MEMORY_LEFT())",
                      perform=memory_mb_left)


def mpmath_backend(args):
    """mpmath's backend in this process ("gmpy" or "python"), or "not loaded"; imports nothing."""
    import sys
    mpmath = sys.modules.get("mpmath")
    return "not loaded" if mpmath is None else mpmath.libmp.BACKEND


MPMATH_BACKEND = Builtin("MPMATH_BACKEND", 0, 0, "MPMATH_BACKEND(): mpmath's backend. PRINT(MPMATH_BACKEND())",
                         perform=mpmath_backend)
