"""The speaker on the audio Pi: plays the sounds that Warble programs ask for.

Listens on `<prefix>/sound/play` for `{"name", ...}` (what a worker publishes
for `PLAYSOUND("name")`); only names of the configured library are played,
never a path or URL.  Each sound played is announced on `<prefix>/sound/played`.

Backends: `sim` (no speaker: the sound is logged and announced).  The
simpleaudio backend (the `[audio]` extra) comes with the hardware plugins'
issue; `backend` will choose it.
"""

from __future__ import annotations

import time

from pidaemon import hookimpl
from pidaemon.bus import Message, PayloadError, Subscription
from pidaemon.schema import ListOf, String, settings
from pidaemon.warble.limits import DEFAULT_SOUNDS


@settings
class SoundSettings:
    sounds: tuple[str, ...] = ListOf(String(pattern=r"[a-z0-9_]+", pattern_doc="a sound name (a-z, 0-9, _)"),
                                     default=list(DEFAULT_SOUNDS), doc="the library: names programs may play")
    backend: str = String(choices=["sim"], default="sim", doc="sim: no speaker")


class SoundPlugin:
    config_schema = SoundSettings

    def __init__(self, node, config: SoundSettings):
        self.node = node
        self.sounds = set(config.sounds)
        self.played: list[str] = []

    @hookimpl
    def pidaemon_info(self, node):
        return {"capabilities": ["sound"], "sounds": sorted(self.sounds)}

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topic("sound", "play"))]

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        request = message.json()
        name = request.get("name") if isinstance(request, dict) else None
        if name not in self.sounds:
            raise PayloadError(f"{message.topic}: {name!r} is not in the sound library {sorted(self.sounds)}")
        self.played.append(name)
        node.log.info("playing %s (job %s of %s)", name, request.get("job"), request.get("user"))
        node.publish(node.topic("sound", "played"),
                     {"name": name, "job": request.get("job"), "user": request.get("user"), "time": time.time()},
                     qos=1)
