"""The simulated strip: no hardware, the last frame kept in memory (for `pidaemon sim` and desktops)."""

from __future__ import annotations

from typing import Sequence

from .backend import Colour, LightsBackend, StripLayout


class SimulatedStrip(LightsBackend):
    """`pixels` holds the last frame shown and `brightness` its brightness; `frames` counts the frames."""

    name = "sim"

    def __init__(self, layout: StripLayout, options=None):
        super().__init__(layout, options)
        self.pixels: list[Colour] = [(0,) * (4 if layout.has_white else 3)] * layout.count
        self.brightness = 0.0
        self.frames = 0

    def show(self, pixels: Sequence[Colour], brightness: float) -> None:
        self.pixels = list(pixels)
        self.brightness = brightness
        self.frames += 1

    def close(self) -> None:
        self.show([(0,) * len(self.pixels[0])] * len(self.pixels), self.brightness)
