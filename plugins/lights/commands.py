"""The lamp's commands, as they arrive on `<prefix>/lights/set`, checked field by field before anything changes.

Every field is hostile until read here: a command that fails any check is
`Refused` with the reason, and the lamp does not change at all (a `pixels`
command with one bad entry sets none of them).  Whole numbers may come as
integral floats (255.0), never as booleans or strings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .backend import Colour
from .effects import EFFECTS

COMMANDS = ("pixel", "pixels", "fill", "clear", "brightness", "effect")
MAX_NAME = 64   # characters of a `user` or `job` kept


class Refused(ValueError):
    """A command the lamp will not carry out; the message says why."""


@dataclass(frozen=True)
class SetPixels:
    pixels: tuple[tuple[int, Colour], ...]   # (index, colour), applied in order


@dataclass(frozen=True)
class Fill:
    colour: Colour


@dataclass(frozen=True)
class SetBrightness:
    value: float


@dataclass(frozen=True)
class Effect:
    """Start the named effect (`name` None: stop the running one); `colour` None: the effect's default."""

    name: str | None
    colour: Colour | None = None


Command = SetPixels | Fill | SetBrightness | Effect   # `clear` is Fill with every part 0


@dataclass(frozen=True)
class Request:
    """A checked command and who sent it (`user` and `job` as the Warble worker adds them, or None)."""

    command: Command
    user: str | None
    job: str | None


class CommandReader:
    """Reads commands for a lamp of `pixel_count` pixels (with a white channel if `has_white`)."""

    def __init__(self, pixel_count: int, has_white: bool):
        self.pixel_count = pixel_count
        self.has_white = has_white

    def read(self, payload: Any) -> Request:
        if not isinstance(payload, dict):
            raise Refused(f"expected a JSON object such as {{\"index\": 0, \"r\": 255, \"g\": 0, \"b\": 0}}, "
                          f"got {type(payload).__name__}")
        user, job = sender(payload, "user"), sender(payload, "job")
        kind = payload.get("command", "pixel")
        if kind not in COMMANDS:
            raise Refused(f"unknown command {shorten(kind)} (commands: {', '.join(COMMANDS)})")
        return Request(getattr(self, f"_{kind}")(payload), user, job)

    def _pixel(self, payload: dict) -> SetPixels:
        return SetPixels(((self.index(payload.get("index")), self.colour(payload)),))

    def _pixels(self, payload: dict) -> SetPixels:
        entries = payload.get("pixels")
        parts = "[index, r, g, b] or [index, r, g, b, w]" if self.has_white else "[index, r, g, b]"
        if not isinstance(entries, list) or not entries:
            raise Refused(f"pixels must be a non-empty list of {parts}, got {shorten(entries)}")
        if len(entries) > self.pixel_count:
            raise Refused(f"pixels holds {len(entries)} entries, more than the lamp's {self.pixel_count} pixels")
        pixels = []
        for n, entry in enumerate(entries):
            if not isinstance(entry, list) or len(entry) not in ((4, 5) if self.has_white else (4,)):
                raise Refused(f"pixels[{n}]: expected {parts}, got {shorten(entry)}")
            named = dict(zip(("index", "r", "g", "b", "w"), entry))
            try:
                pixels.append((self.index(named["index"]), self.colour(named)))
            except Refused as exc:
                raise Refused(f"pixels[{n}]: {exc}") from None
        return SetPixels(tuple(pixels))

    def _fill(self, payload: dict) -> Fill:
        return Fill(self.colour(payload))

    def _clear(self, payload: dict) -> Fill:
        return Fill((0,) * (4 if self.has_white else 3))

    def _brightness(self, payload: dict) -> SetBrightness:
        value = payload.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise Refused(f"brightness value must be a number from 0.0 to 1.0, got {shorten(value)}")
        return SetBrightness(float(value))

    def _effect(self, payload: dict) -> Effect:
        if "name" not in payload:
            raise Refused(f"effect needs a name: {', '.join(EFFECTS)}, or null to stop the running effect")
        name = payload["name"]
        if name is None:
            return Effect(None)
        if not isinstance(name, str) or name not in EFFECTS:
            raise Refused(f"unknown effect {shorten(name)} (effects: {', '.join(EFFECTS)}, or null to stop)")
        given = [part for part in ("r", "g", "b", "w") if part in payload]
        return Effect(name, self.colour(payload) if given else None)

    def index(self, value: Any) -> int:
        return whole_number(value, "index", self.pixel_count - 1)

    def colour(self, fields: dict) -> Colour:
        """(r, g, b) from the fields of that name, or (r, g, b, w) on a lamp with white (w 0 when absent)."""
        if "w" in fields and not self.has_white:
            raise Refused("w given, but this lamp has no white channel")
        parts = [whole_number(fields.get(part), part, 255) for part in ("r", "g", "b")]
        if self.has_white:
            parts.append(whole_number(fields.get("w", 0), "w", 255))
        return tuple(parts)


def whole_number(value: Any, what: str, high: int) -> int:
    """`value` as an int in 0..high (255.0 accepted; True, "5" and 2.5 not), or Refused naming `what`."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    else:
        raise Refused(f"{what} must be a whole number from 0 to {high}, got {shorten(value)}")
    if not 0 <= number <= high:
        raise Refused(f"{what} must be a whole number from 0 to {high}, got {number}")
    return number


def sender(payload: dict, field: str) -> str | None:
    """The `user` or `job` of a command: a string (cut to MAX_NAME characters) or absent."""
    value = payload.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Refused(f"{field} must be a string, got {shorten(value)}")
    return value[:MAX_NAME]


def shorten(value: Any, limit: int = 40) -> str:
    """A value from the network, for a reason: repr, cut to `limit` characters."""
    if value is None:
        return "nothing"
    if isinstance(value, (list, dict)) and len(value) > limit:
        return f"a {type(value).__name__} of {len(value)} items"
    try:
        text = repr(value)
    except RecursionError:
        return f"a {type(value).__name__} nested too deep"
    return text if len(text) <= limit else text[:limit - 3] + "..."
