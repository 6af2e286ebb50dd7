"""The lamp's last state on disk (`<state_dir>/lights.json`), so that a restarted daemon shows it again.

Written atomically (a temporary file, fsync, rename): a crash mid-write
leaves the previous state.  Read back as hostile input: a damaged file or
one that does not fit the lamp any more is refused with the reason, and the
lamp starts dark; pixels beyond a lamp that got shorter are dropped, and a
white part is added (0) or dropped when the strip's colour order changed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .commands import CommandReader, Effect, Refused
from .lamp import Lamp

STATE_FILE = "lights.json"
VERSION = 1


class SavedStateError(ValueError):
    """The saved state cannot be used; says why."""


def save(path: Path, saved: dict) -> None:
    """Write `saved` (what `Lamp.saved()` returned) to `path` atomically; raises OSError."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"version": VERSION, **saved}, handle, separators=(",", ":"))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def restore(path: Path, lamp: Lamp) -> bool:
    """Set `lamp` to the state saved in `path`: True, or False when there is none.

    Raises SavedStateError (the lamp unchanged) for a file that cannot be used.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SavedStateError(f"{path}: cannot read it: {type(exc).__name__}: {str(exc)[:80]}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise SavedStateError(f"{path}: not a version {VERSION} lamp state")
    reader = CommandReader(lamp.layout.count, lamp.layout.has_white)
    try:
        pixels = [_colour(reader, p, n) for n, p in enumerate(_list(data.get("pixels"), "pixels")[:lamp.layout.count])]
        brightness = reader.read({"command": "brightness", "value": data.get("brightness")}).command.value
        effect = data.get("effect")
        if effect is not None:
            if not isinstance(effect, dict):
                raise Refused("effect must be an object")
            colour = _colour(reader, effect.get("colour"), "effect")
            effect = reader.read({"command": "effect", "name": effect.get("name")}).command
            effect = Effect(effect.name, colour)
    except Refused as exc:
        raise SavedStateError(f"{path}: {exc}") from None
    pixels = (pixels + [lamp.dark] * lamp.layout.count)[:lamp.layout.count]
    lamp.pixels, lamp.brightness, lamp.effect = pixels, brightness, effect
    return True


def _list(value, what: str) -> list:
    if not isinstance(value, list):
        raise Refused(f"{what} must be a list")
    return value


def _colour(reader: CommandReader, parts, where) -> tuple:
    """A saved colour for this lamp: a white part added or dropped when the strip changed."""
    parts = _list(parts, f"colour {where}")
    if len(parts) not in (3, 4):
        raise Refused(f"colour {where}: expected 3 or 4 parts")
    parts = (parts + [0])[:4] if reader.has_white else parts[:3]
    fields = dict(zip(("r", "g", "b", "w"), parts))
    try:
        return reader.colour(fields)
    except Refused as exc:
        raise Refused(f"colour {where}: {exc}") from None
