"""Home Assistant's JSON light and the cluster's lamp: commands one way, state the other.

Home Assistant's MQTT light with `schema: json` publishes commands such as

    {"state": "ON", "brightness": 128, "color": {"r": 255, "g": 0, "b": 0}, "effect": "chase"}

(brightness 0-255, colour 0-255 per channel) and expects a state in the same
shape.  The lamp speaks the cluster's protocol instead (`<prefix>/lights/set`
commands, `<prefix>/lights/state`), so the lamp's node translates:

- `"state": "OFF"` -> `{"command": "clear"}`;
- `"brightness": b` -> `{"command": "brightness", "value": b / 255}`, sent first;
- `"effect": name` -> `{"command": "effect", "name": name}` with the colour if one
  was given; `"effect": "none"` -> `{"command": "effect", "name": null}`;
- `"color"` (no effect) -> `{"command": "fill", r, g, b}`;
- `"state": "ON"` alone on a dark lamp -> a fill with the last colour the lamp
  showed (white at first), so that the switch in Home Assistant lights it; on
  a lit lamp it changes nothing, and a brightness alone keeps a running
  effect (the lamp stops an effect on any other command, so it is sent again).

Every command comes from the network: a payload that is not such a JSON
object, a value out of range, an effect the lamp does not have, or a colour
model the lamp does not take is refused whole (`LightCommandError`, saying
what and where): nothing reaches the lamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_COMMAND_BYTES = 4096
NO_EFFECT = "none"                        # Home Assistant's name for "no effect" in the effect list
UNSUPPORTED = ("color_temp", "white", "color_mode")   # colour models the lamp does not take
IGNORED = ("transition", "flash")         # Home Assistant may send them; the lamp has neither
WHITE = (255, 255, 255)


class LightCommandError(ValueError):
    """A Home Assistant light command that the lamp's node refuses; says why."""


@dataclass
class LampView:
    """What the node knows of its lamp from `<prefix>/lights/state`: enough to translate a command."""

    on: bool = False
    effect: str | None = None
    brightness: float = 1.0
    colour: tuple[int, int, int] = WHITE       # the last colour a lit pixel showed

    def update(self, state: Any) -> None:
        """Take a `lights/state` payload (already parsed); raises LightCommandError if it is malformed."""
        if not isinstance(state, dict):
            raise LightCommandError(f"a lamp state must be a JSON object, got {type(state).__name__}")
        pixels = state.get("pixels", [])
        if not isinstance(pixels, list) or not all(_is_pixel(p) for p in pixels):
            raise LightCommandError("pixels must be a list of [r, g, b] or [r, g, b, w], each 0-255")
        brightness = state.get("brightness", 1.0)
        if isinstance(brightness, bool) or not isinstance(brightness, (int, float)) or not 0 <= brightness <= 1:
            raise LightCommandError(f"brightness must be a number from 0 to 1, got {_shown(brightness)}")
        effect = state.get("effect")
        if effect is not None and not isinstance(effect, str):
            raise LightCommandError(f"effect must be a name or null, got {_shown(effect)}")
        on = state.get("on")
        if on is not None and not isinstance(on, bool):
            raise LightCommandError(f"on must be true or false, got {_shown(on)}")
        lit = [(p[0], p[1], p[2]) for p in pixels if any(p[:3])]
        self.on = on if on is not None else bool(lit)
        self.effect, self.brightness = effect, float(brightness)
        if lit:
            self.colour = lit[0]

    def home_assistant_state(self) -> dict[str, Any]:
        """The state in Home Assistant's JSON light format (colour: the first lit pixel's)."""
        state: dict[str, Any] = {"state": "ON" if self.on else "OFF", "brightness": round(self.brightness * 255),
                                 "color_mode": "rgb", "effect": self.effect or NO_EFFECT}
        r, g, b = self.colour
        state["color"] = {"r": r, "g": g, "b": b}
        return state


def translate(request: dict[str, Any], lamp: LampView, effects: tuple[str, ...], user: str) -> list[dict[str, Any]]:
    """The `lights/set` commands for one Home Assistant command (a JSON object), in order;
    raises LightCommandError."""
    state = request.get("state")
    if state not in ("ON", "OFF"):
        raise LightCommandError(f'state must be "ON" or "OFF", got {_shown(state)}')
    for key in UNSUPPORTED:
        if key in request:
            raise LightCommandError(f"{key} is not supported: the lamp takes rgb colours")
    brightness = _brightness(request)
    colour = _colour(request)
    effect = _effect(request, effects)
    tag = {"user": user}
    if state == "OFF":
        return [{"command": "clear", **tag}]
    commands: list[dict[str, Any]] = []
    if brightness is not None:
        commands.append({"command": "brightness", "value": round(brightness / 255, 4), **tag})
    if effect == NO_EFFECT:
        commands.append({"command": "effect", "name": None, **tag})
        if colour is not None:
            commands.append({"command": "fill", **_rgb(colour), **tag})
    elif effect is not None:
        commands.append({"command": "effect", "name": effect, **(_rgb(colour) if colour else {}), **tag})
    elif colour is not None:
        commands.append({"command": "fill", **_rgb(colour), **tag})
    elif not lamp.on:
        if brightness is None and lamp.brightness == 0:   # "ON" must give light on a lamp dimmed to nothing
            commands.append({"command": "brightness", "value": 1.0, **tag})
        commands.append({"command": "fill", **_rgb(lamp.colour), **tag})
    return commands


def _brightness(request: dict[str, Any]) -> int | None:
    if "brightness" not in request:
        return None
    value = request["brightness"]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise LightCommandError(f"brightness must be a whole number from 0 to 255, got {_shown(value)}")
    return value


def _colour(request: dict[str, Any]) -> tuple[int, int, int] | None:
    if "color" not in request:
        return None
    colour = request["color"]
    if not isinstance(colour, dict):
        raise LightCommandError(f"color must be an object {{r, g, b}}, got {_shown(colour)}")
    others = sorted(set(colour) - {"r", "g", "b"})
    if others:
        raise LightCommandError(f"color has {', '.join(others)[:60]}: the lamp takes r, g, b only")
    values = []
    for channel in ("r", "g", "b"):
        value = colour.get(channel)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
            raise LightCommandError(f"color.{channel} must be a whole number from 0 to 255, got {_shown(value)}")
        values.append(value)
    return values[0], values[1], values[2]


def _effect(request: dict[str, Any], effects: tuple[str, ...]) -> str | None:
    if "effect" not in request:
        return None
    effect = request["effect"]
    if effect != NO_EFFECT and effect not in effects:
        known = ", ".join((*effects, NO_EFFECT))
        raise LightCommandError(f"effect must be one of {known}, got {_shown(effect)}")
    return effect


def _rgb(colour: tuple[int, int, int]) -> dict[str, int]:
    return {"r": colour[0], "g": colour[1], "b": colour[2]}


def _is_pixel(pixel: Any) -> bool:
    return (isinstance(pixel, list) and len(pixel) in (3, 4)
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in pixel))


def _shown(value: Any) -> str:
    """A value from the network in a log line: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
