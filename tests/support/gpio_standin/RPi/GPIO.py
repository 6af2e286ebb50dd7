"""A stand-in for RPi.GPIO, for tests: the same API, pins kept in memory, every change recorded.

RPi.GPIO imports only on a Raspberry Pi, so the tests of the relay plugin's
`gpio` backend run against this module, put first on `sys.path` (or
`PYTHONPATH` for a child process) so that `import RPi.GPIO` finds it.  It
checks what the real module checks (a numbering mode before `setup`, a pin
set up as an output before `output`, one numbering mode per process) and
records each level given to a pin with `time.monotonic()` in `changes`, and,
when the environment names a file in GPIO_STANDIN_LOG, appends it there as a
JSON line (`pid`, `call`, `pin`, `level`, `time`) so that a test can read the
pins of a daemon it ran as another process (and killed).
"""

from __future__ import annotations

import json
import os
import time

BOARD, BCM = 10, 11
OUT, IN = 0, 1
LOW, HIGH = 0, 1
PUD_OFF, PUD_DOWN, PUD_UP = 20, 21, 22
VERSION = "stand-in"
RPI_INFO = {"P1_REVISION": 3, "TYPE": "stand-in"}

changes: list[dict] = []         # {"call", "pin", "level", "time"}, in order
levels: dict[int, int] = {}      # pin: level now
directions: dict[int, int] = {}  # pin: OUT or IN
_mode: int | None = None
_warnings = True


def _record(call: str, pin: int, level: int | None) -> None:
    change = {"pid": os.getpid(), "call": call, "pin": pin, "level": level, "time": time.monotonic()}
    changes.append(change)
    path = os.environ.get("GPIO_STANDIN_LOG")
    if path:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, (json.dumps(change) + "\n").encode())
        finally:
            os.close(descriptor)


def _channels(channel) -> list[int]:
    channels = list(channel) if isinstance(channel, (list, tuple)) else [channel]
    for pin in channels:
        if isinstance(pin, bool) or not isinstance(pin, int):
            raise ValueError("Channel must be an integer or list/tuple of integers")
    return channels


def _level(value) -> int:
    if value not in (0, 1, True, False):
        raise ValueError("An output value must be 0, 1, True or False")
    return int(value)


def setwarnings(flag) -> None:
    global _warnings
    _warnings = bool(flag)


def setmode(mode) -> None:
    global _mode
    if mode not in (BOARD, BCM):
        raise ValueError("An invalid mode was passed to setmode()")
    if _mode is not None and _mode != mode:
        raise ValueError("A different mode has already been set!")
    _mode = mode


def getmode():
    return _mode


def setup(channel, direction, pull_up_down=PUD_OFF, initial=-1) -> None:
    if _mode is None:
        raise RuntimeError("Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) or GPIO.setmode(GPIO.BCM)")
    if direction not in (OUT, IN):
        raise ValueError("An invalid direction was passed to setup()")
    for pin in _channels(channel):
        directions[pin] = direction
        if direction == OUT:
            level = levels.get(pin, LOW) if initial == -1 else _level(initial)
            levels[pin] = level
            _record("setup", pin, level)


def output(channel, value) -> None:
    pins = _channels(channel)
    values = list(value) if isinstance(value, (list, tuple)) else [value] * len(pins)
    for pin, level in zip(pins, values):
        if directions.get(pin) != OUT:
            raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
        levels[pin] = _level(level)
        _record("output", pin, levels[pin])


def input(channel) -> int:
    (pin,) = _channels(channel)
    if pin not in directions:
        raise RuntimeError("You must setup() the GPIO channel first")
    return levels.get(pin, LOW)


def cleanup(channel=None) -> None:
    global _mode
    pins = list(directions) if channel is None else _channels(channel)
    for pin in pins:
        directions.pop(pin, None)
        levels.pop(pin, None)
        _record("cleanup", pin, None)
    if channel is None:
        _mode = None
