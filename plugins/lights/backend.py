"""The interface between the lamp and a strip of pixels, and how a backend is found by name.

A backend is one class: it is created with the strip's layout and its own
options (the `options:` mapping of the plugin's section, validated by the
class's `config_schema`), shows whole frames and lets go of the hardware when
the daemon stops.  The lamp (commands, effects, brightness, the saved state)
is the plugin's business; a backend only puts colours on pixels.

The plugin's `backend:` names one (`LIGHTS_BACKENDS`, pidaemon/backends.py): a
built-in (`sim`, `neopixel`, `arduino`) or one a distribution registers in the
`pidaemon.lights_backends` entry-point group:

    [project.entry-points."pidaemon.lights_backends"]
    dmx = "pidaemon_dmx_lamp:DmxStrip"

A backend on a device of its own (`arduino`: a board on USB serial) adds its
presence to the node's `info` and `telemetry`, and calls `on_status_changed`
when that changes, so that the plugin publishes the node's info again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

from pidaemon.backends import BackendError, Backends  # noqa: F401  (BackendError: the backends' error)

ENTRY_POINT_GROUP = "pidaemon.lights_backends"

Colour = tuple[int, ...]  # (r, g, b), or (r, g, b, w) on a strip with a white channel


@dataclass(frozen=True)
class StripLayout:
    """What every backend is told about its strip."""

    count: int          # pixels on the strip
    pixel_order: str    # the order the strip wants its colour bytes in: "GRB", "GRBW", "RGB"...

    @property
    def has_white(self) -> bool:
        return "W" in self.pixel_order


class LightsBackend:
    """One kind of strip.  Subclass it, give it a `name`, and implement `show` (and `close` if needed).

    `show` and `close` are called in a worker thread, never two at once, so
    they may block for as long as a write to the strip takes.  A colour has
    3 parts (r, g, b) or, when `layout.has_white`, 4 (r, g, b, w), each 0-255,
    already checked; `brightness` is 0.0-1.0 and applies to the whole frame.
    """

    name: ClassVar[str] = ""
    config_schema: ClassVar[type | None] = None   # a @settings class for `options:`, or None: no options

    def __init__(self, layout: StripLayout, options: Any = None):
        self.layout = layout
        self.options = options

    def show(self, pixels: Sequence[Colour], brightness: float) -> None:
        """Put one frame on the strip: `pixels[i]` on pixel i, scaled by `brightness`."""
        raise NotImplementedError

    def close(self) -> None:
        """The daemon stops: turn the strip off and release the hardware."""

    def info(self) -> dict[str, Any]:
        """Keys to add to the node's `info` (a board's presence and version); none by default."""
        return {}

    def telemetry(self) -> dict[str, Any]:
        """Readings to add to the node's telemetry; none by default.  Quick: called on the event loop."""
        return {}

    # Set by the plugin: call it (from any thread; it returns at once) when `info()` changed.
    on_status_changed: Callable[[], None] = staticmethod(lambda: None)


LIGHTS_BACKENDS = Backends("lights", ENTRY_POINT_GROUP, LightsBackend, {
    "sim": f"{__package__}.sim_backend:SimulatedStrip",
    "neopixel": f"{__package__}.neopixel_backend:NeoPixelStrip",  # imports its library only when it starts
    "arduino": f"{__package__}.arduino_backend:ArduinoStrip",      # the lamp board of firmware/ (pyserial)
})
