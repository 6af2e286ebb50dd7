"""Warble: the cluster's tweet-sized language, compiled and sandboxed.

See docs/warble.md for the language and the limits.
"""
from .builtin import Builtin
from .effects import Effects, RecordingEffects, lights_builtin, playsound_builtin
from .errors import ErrorInfo, UnknownFunction, WarbleError
from .library import SIGNATURES
from .limits import Limits
from .program import Program, compile_program
from .result import Result
from .store import MemoryStore, SqliteStore, Store

__all__ = [
    "Builtin", "Effects", "ErrorInfo", "Limits", "MemoryStore", "Program", "RecordingEffects",
    "Result", "Runner", "SIGNATURES", "SqliteStore", "Store", "UnknownFunction", "WarbleError",
    "compile_program", "lights_builtin", "playsound_builtin",
]


def __getattr__(name):
    # the runner pulls in subprocess and socket machinery: load it on first use
    if name == "Runner":
        from .runner import Runner
        return Runner
    raise AttributeError(name)
