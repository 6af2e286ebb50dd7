"""The lamp's named effects: one frame per step, computed from the step number alone.

An effect hides the lamp's picture while it runs; the picture is back when it
stops.  Without a colour an effect is white.  At the default `frame_interval`
(0.05 s) a chase goes round a 32-pixel lamp in 1.6 s and a pulse breathes
once every 2 s.
"""

from __future__ import annotations

from typing import Callable

from .backend import Colour

PULSE_STEPS = 40          # frames from dim to bright and back
PULSE_FLOOR = 0.05        # the dimmest point of a pulse, as a fraction of the colour
CHASE_TAIL = (1.0, 0.35, 0.12)   # the running pixel and the two behind it


def scaled(colour: Colour, level: float) -> Colour:
    return tuple(round(part * level) for part in colour)


def chase(step: int, count: int, colour: Colour) -> list[Colour]:
    """One pixel of `colour` running round the lamp with a fading tail; the rest dark."""
    frame = [scaled(colour, 0)] * count
    head = step % count
    for behind, level in enumerate(CHASE_TAIL[:count]):
        frame[(head - behind) % count] = scaled(colour, level)
    return frame


def pulse(step: int, count: int, colour: Colour) -> list[Colour]:
    """The whole lamp in `colour`, brightening and dimming in a triangle wave."""
    phase = step % PULSE_STEPS
    rise = 1 - abs(PULSE_STEPS / 2 - phase) / (PULSE_STEPS / 2)   # 0 at the ends, 1 in the middle
    return [scaled(colour, PULSE_FLOOR + (1 - PULSE_FLOOR) * rise)] * count


EFFECTS: dict[str, Callable[[int, int, Colour], list[Colour]]] = {"chase": chase, "pulse": pulse}
