"""The NeoPixel lamp: takes `LIGHTS` commands from Warble programs and shows them.

Listens on `<prefix>/lights/set` for `{"index", "r", "g", "b"}` (what a worker
publishes for `LIGHTS(i, r, g, b)`) and keeps the lamp's state, published
retained on `<prefix>/lights/state` as `{"pixels": [[r, g, b], ...]}` at most
every `state_interval` seconds.

Backends: `sim` (no hardware: the state above is the lamp, for `pidaemon sim`
and desktops).  The real NeoPixel backend (adafruit-circuitpython-neopixel,
the `[pi]` extra) and the Arduino lamp controller come with the hardware
plugins' issue; `backend` will choose among them.
"""

from __future__ import annotations

import asyncio

from pidaemon import hookimpl
from pidaemon.bus import Message, PayloadError, Subscription
from pidaemon.schema import Integer, Number, String, settings


class SimulatedPixels:
    """A strip of pixels in memory."""

    def __init__(self, count: int):
        self.pixels = [(0, 0, 0)] * count

    def set(self, index: int, colour: tuple[int, int, int]) -> None:
        self.pixels[index] = colour


@settings
class LightsSettings:
    pixels: int = Integer(min=1, max=1024, default=24, doc="pixels on the lamp (24 to 32 on the cluster's)")
    backend: str = String(choices=["sim"], default="sim", doc="sim: no hardware")
    state_interval: float = Number(min=0, default=0.2, doc="seconds between two state publications")


class LightsPlugin:
    config_schema = LightsSettings

    def __init__(self, node, config: LightsSettings):
        self.node = node
        self.config = config
        self.count = config.pixels
        self.strip = SimulatedPixels(self.count)
        self.changes = 0
        self._dirty = asyncio.Event()

    @hookimpl
    def pidaemon_info(self, node):
        return {"capabilities": ["lights"], "pixels": self.count}

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topic("lights", "set"))]

    @hookimpl
    def pidaemon_startup(self, node):
        node.spawn(self._publish_state(), name="lights-state")

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        command = message.json()
        if not isinstance(command, dict):
            raise PayloadError(f"{message.topic}: expected {{\"index\", \"r\", \"g\", \"b\"}}")
        values = [command.get(k) for k in ("index", "r", "g", "b")]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise PayloadError(f"{message.topic}: index, r, g and b must be whole numbers")
        index, *colour = values
        if not 0 <= index < self.count or not all(0 <= c <= 255 for c in colour):
            raise PayloadError(f"{message.topic}: index must be 0..{self.count - 1} and colours 0..255, "
                               f"got {values}")
        self.strip.set(index, tuple(colour))
        self.changes += 1
        self._dirty.set()

    async def _publish_state(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            self.node.publish(self.node.topic("lights", "state"),
                              {"pixels": [list(p) for p in self.strip.pixels]}, qos=1, retain=True)
            await asyncio.sleep(self.config.state_interval)
