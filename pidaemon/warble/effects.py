"""Effects: what a program does to the world (lights, sound, waiting).

Warble validates effect arguments itself; whoever runs the program supplies
the effect. `lights_builtin` and `playsound_builtin` build the two standard
effect built-ins from a callback; `RecordingEffects` is the stand-in used by
the CLI and the tests, and `Effects` is the shape of the object that
`Program.run(effects=...)` takes.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Protocol

from .builtin import Builtin
from .errors import WarbleError

LIGHTS_DOC = "LIGHTS(i, r, g, b): set light i (0 is the first) to a colour, each part 0-255. LIGHTS(0, 255, 0, 0)"
PLAYSOUND_DOC = ('PLAYSOUND(name): play a sound from the library by name; "" plays the speaker\'s default sound. '
                 'PLAYSOUND("beep")')


class Effects(Protocol):
    """The default effect built-ins call these in the caller's process."""

    def lights(self, index: int, r: int, g: int, b: int) -> None: ...

    def play(self, name: str) -> None: ...

    def sleep(self, seconds: float) -> None:
        """SLEEP in an in-process run. Under the runner the child waits itself."""


def whole_number(value: Any, what: str, low: int, high: int, fn: str) -> int:
    """An integer in low..high (integral floats such as 255.0 are accepted)."""
    n: int | None = None
    if value.__class__ is int:
        n = value
    elif value.__class__ is not str and value.__class__ is not bool:
        try:
            if value == int(value):
                n = int(value)
        except (TypeError, ValueError, OverflowError):
            n = None
    if n is None or not low <= n <= high:
        shown = f'"{value}"' if isinstance(value, str) else str(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        raise WarbleError(f"{fn}: {what} must be a whole number from {low} to {high}, got {shown}")
    return n


class LightsValidator:
    """Checks LIGHTS(index, r, g, b) against the configured pixel count."""

    def __init__(self, pixel_count: int):
        self.pixel_count = int(pixel_count)

    def __call__(self, args: tuple) -> tuple:
        index, r, g, b = args
        return (
            whole_number(index, "the light index", 0, self.pixel_count - 1, "LIGHTS"),
            whole_number(r, "red", 0, 255, "LIGHTS"),
            whole_number(g, "green", 0, 255, "LIGHTS"),
            whole_number(b, "blue", 0, 255, "LIGHTS"),
        )


class SoundValidator:
    """Checks PLAYSOUND(name): a plain name from the configured library.

    `""` is valid: it asks for the speaker's default sound (the 2022 blog's
    own example is `#pi{PLAYSOUND(”");}`), which the speaker, not Warble, knows.
    """

    def __init__(self, sound_names):
        self.sound_names = tuple(sound_names)

    def __call__(self, args: tuple) -> tuple:
        (name,) = args
        if not isinstance(name, str):
            raise WarbleError("PLAYSOUND: the sound name must be a string, e.g. PLAYSOUND(\"beep\")")
        if name == "":
            return ("",)
        if any(c in name for c in "/\\:") or ".." in name or name.startswith("."):
            raise WarbleError("PLAYSOUND takes a sound name from the library, not a path or URL")
        for known in self.sound_names:
            if known.lower() == name.lower():
                return (known,)
        shown = name if len(name) <= 30 else name[:27] + "..."
        raise WarbleError(f"PLAYSOUND: unknown sound \"{shown}\" (sounds: {', '.join(self.sound_names)})")


class CallWith:
    """perform() that spreads the validated arguments over a callback."""

    def __init__(self, callback: Callable[..., Any]):
        self.callback = callback

    def __call__(self, args: tuple) -> Any:
        self.callback(*args)
        return 0


def lights_builtin(pixel_count: int, on_set: Callable[[int, int, int, int], Any]) -> Builtin:
    """LIGHTS(i, r, g, b) calling on_set(i, r, g, b) after validation."""
    return Builtin("LIGHTS", 4, 4, LIGHTS_DOC, perform=CallWith(on_set),
                   validate=LightsValidator(pixel_count), effect=True)


def playsound_builtin(sound_names, on_play: Callable[[str], Any]) -> Builtin:
    """PLAYSOUND(name) calling on_play(name) for names in `sound_names` only."""
    return Builtin("PLAYSOUND", 1, 1, PLAYSOUND_DOC, perform=CallWith(on_play),
                   validate=SoundValidator(sound_names), effect=True)


class RecordingEffects:
    """Records effects as (name, args) tuples in `events`, in order.

    SLEEP is recorded too; it only really waits when `realtime` is true
    (the time still counts against the time limit either way).
    """

    def __init__(self, realtime: bool = False):
        self.realtime = realtime
        self.events: list[tuple[str, tuple]] = []
        self._lock = threading.Lock()

    def _record(self, name: str, args: tuple) -> None:
        with self._lock:
            self.events.append((name, args))

    def lights(self, index: int, r: int, g: int, b: int) -> None:
        self._record("LIGHTS", (index, r, g, b))

    def play(self, name: str) -> None:
        self._record("PLAYSOUND", (name,))

    def sleep(self, seconds: float) -> None:
        self._record("SLEEP", (seconds,))
        if self.realtime:
            time.sleep(seconds)

    def record(self, name: str, args: tuple) -> None:
        """For effect built-ins of plugins that want to show up here too."""
        self._record(name, tuple(args))
