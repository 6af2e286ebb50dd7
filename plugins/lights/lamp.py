"""What the lamp shows: a picture (one colour per pixel), a brightness, and maybe an effect over the picture.

Commands change it in the order they come; any command but `brightness`
stops a running effect (and an effect command replaces it), so the picture
shows again; a brightness dims or brightens the effect as it runs.
`state()` is the retained `<prefix>/lights/state` payload and `saved()` what
survives a restart of the daemon.
"""

from __future__ import annotations

from .backend import Colour, StripLayout
from .commands import Command, Effect, Fill, SetBrightness, SetPixels
from .effects import EFFECTS


class Lamp:
    def __init__(self, layout: StripLayout, brightness: float = 1.0):
        self.layout = layout
        self.dark: Colour = (0,) * (4 if layout.has_white else 3)
        self.pixels: list[Colour] = [self.dark] * layout.count
        self.brightness = brightness
        self.effect: Effect | None = None   # the running effect, with its colour

    @property
    def white(self) -> Colour:
        return (255, 255, 255, 0) if self.layout.has_white else (255, 255, 255)

    def apply(self, command: Command) -> None:
        if isinstance(command, SetBrightness):
            self.brightness = command.value   # a running effect goes on, dimmed or brightened
            return
        self.effect = None
        if isinstance(command, SetPixels):
            for index, colour in command.pixels:
                self.pixels[index] = colour
        elif isinstance(command, Fill):
            self.pixels = [command.colour] * self.layout.count
        elif isinstance(command, Effect) and command.name is not None:
            self.effect = Effect(command.name, command.colour or self.white)

    def frame(self, step: int = 0) -> list[Colour]:
        """The colours to put on the strip now: the picture, or step `step` of the running effect."""
        if self.effect is None:
            return list(self.pixels)
        return EFFECTS[self.effect.name](step, self.layout.count, self.effect.colour)

    @property
    def on(self) -> bool:
        """The lamp gives light: a lit pixel or a running effect, at a brightness above 0."""
        return self.brightness > 0 and (self.effect is not None or any(any(p) for p in self.pixels))

    def state(self) -> dict:
        return {"pixels": [list(p) for p in self.pixels], "brightness": self.brightness,
                "effect": self.effect.name if self.effect else None, "on": self.on}

    def saved(self) -> dict:
        effect = None if self.effect is None else {"name": self.effect.name, "colour": list(self.effect.colour)}
        return {"pixels": [list(p) for p in self.pixels], "brightness": self.brightness, "effect": effect}
