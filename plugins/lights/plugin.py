"""The lamp: a strip of pixels that Warble programs (and anyone allowed on the bus) light.

Commands arrive on `<prefix>/lights/set` (docs/protocol.md): one pixel
(`{"index", "r", "g", "b"}`, what a worker publishes for `LIGHTS(i, r, g, b)`),
several (`pixels`), `fill`, `clear`, `brightness`, and the effects `chase` and
`pulse`, which run on this node until another command comes.  They are applied
in the order they arrive, within a per-user rate limit (`rate_limit`); a
command that fails a check is refused whole, with the reason on
`<prefix>/lights/refused`, and nothing changes.  The lamp as it is goes
retained to `<prefix>/lights/state` at most every `state_interval` seconds,
and to `<state_dir>/lights.json`, from which a restarted daemon shows it
again (a running effect included).

The strip is driven by a backend chosen by `backend:` (backend.py): `sim`
(no hardware: for `pidaemon sim` and desktops), `neopixel` (the Pi's GPIO,
the `[pi]` extra), `arduino` (the lamp board of firmware/, on USB serial),
or one another distribution registers.  A backend's own `info()` and
`telemetry()` (the arduino board's presence and version) join the node's;
the node's info is published again when the backend says it changed.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from pidaemon import hookimpl
from pidaemon.backends import BackendError, backend_options, check_options
from pidaemon.bus import RETAINED_COMMAND, Message, PayloadError, Subscription
from pidaemon.schema import Any_, Checked, Integer, MapOf, Number, settings

from . import saved_state
from .backend import LIGHTS_BACKENDS, LightsBackend, StripLayout
from .commands import MAX_NAME, CommandReader, Refused, shorten
from .effects import EFFECTS
from .lamp import Lamp
from .rate_limit import RateLimit
from .renderer import Renderer

ECHO_LIMIT = 300              # characters of a refused command sent back in the reply
RATE_REPLY_INTERVAL = 1.0     # seconds between two replies to one user's rate-limited commands
RATE_LOG_INTERVAL = 60.0      # seconds between two log lines about one user's rate-limited commands
ANONYMOUS = "(no user)"
MAX_COMMAND_BYTES = 64 * 1024  # a `pixels` command for 1,024 RGBW pixels takes about 30 KB


def pixel_order(value: Any) -> str:
    """A strip's colour order: R, G and B once each, and maybe W ("GRB", "GRBW", "RGB"...)."""
    if not isinstance(value, str) or sorted(value) not in (sorted("RGB"), sorted("RGBW")):
        raise ValueError("R, G and B once each, and W once on strips with a white LED")
    return value


@settings
class RateLimitSettings:
    burst: int = Integer(min=1, default=64,
                         doc="commands one user may send at once (a program that sets every pixel in a loop)")
    per_second: float = Number(min=0.01, default=20, doc="commands a second one user may send after a burst")


@settings
class LightsSettings:
    backend: str = Checked(LIGHTS_BACKENDS.check_name, expected="the name of a lights backend", default="sim",
                           doc="sim: no hardware; neopixel: a strip on the Pi's GPIO (the [pi] extra); "
                               "arduino: the lamp board of firmware/ on USB serial (pyserial); "
                               "or one installed in the pidaemon.lights_backends entry-point group")
    pixels: int = Integer(min=1, max=1024, default=24, doc="pixels on the lamp (24 to 32 on the cluster's)")
    pixel_order: str = Checked(pixel_order, expected="a colour order such as GRB, RGB or GRBW", default="GRB",
                               doc="the order the strip takes colours in; with W, pixels have a white part")
    brightness: float = Number(min=0, max=1, default=1.0,
                               doc="brightness until a command sets it (the saved state wins after a restart)")
    options: dict = MapOf(Any_(), doc="the backend's own settings (neopixel: pin; arduino: port, baud, timeouts)")
    rate_limit: RateLimitSettings
    state_interval: float = Number(min=0, default=0.2, doc="seconds between two state publications")
    frame_interval: float = Number(min=0.01, max=10, default=0.05, doc="seconds between two frames of an effect")
    save_interval: float = Number(min=0, default=1.0,
                                  doc="seconds between two writes of the saved state (spares the SD card)")

    @staticmethod
    def check_whole(values, path, problems):
        check_options(LIGHTS_BACKENDS, values, path, problems)   # `config check` sees a misspelt option too


@dataclass
class Throttled:
    """One user's rate-limited commands: replied to and logged at a bounded rate."""

    unreplied: int = 0
    replied: float = -math.inf
    logged: float = -math.inf


class LightsPlugin:
    config_schema = LightsSettings

    def __init__(self, node, config: LightsSettings):
        self.node = node
        self.config = config
        self.count = config.pixels
        self.layout = StripLayout(config.pixels, config.pixel_order)
        self.lamp = Lamp(self.layout, config.brightness)
        self.reader = CommandReader(self.layout.count, self.layout.has_white)
        self.rate_limit = RateLimit(config.rate_limit.burst, config.rate_limit.per_second)
        self.state_file = node.state_dir / saved_state.STATE_FILE
        self.backend: LightsBackend | None = None
        self.renderer: Renderer | None = None
        self.changes = 0        # commands applied
        self.refused = 0        # commands refused as bad (with a reply each)
        self.rate_limited = 0   # commands refused by the rate limit
        self._throttled: dict[str | None, Throttled] = {}
        self._effect_task: asyncio.Task | None = None
        self._playing = None    # the Effect the effect task plays
        self._state_due = asyncio.Event()
        self._stopped = False           # the daemon stops: no state but the last, dark one
        self._save_due = asyncio.Event()
        self._save_failing = False
        self._save_lock = threading.Lock()   # the save task and the shutdown hook may both write
        self._saves = 0          # snapshots taken, so that an older one never overwrites a newer
        self._saved = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def strip(self) -> Lamp:
        """The lamp (`strip.pixels`: the picture), under the name older callers use."""
        return self.lamp

    # ------------------------------------------------------------ hooks

    @hookimpl
    def pidaemon_configure(self, node):
        backend = LIGHTS_BACKENDS.load(self.config.backend)
        options = backend_options(backend, self.config.options, ("plugins", "lights", "options"))
        self.backend = backend(self.layout, options)
        self.backend.on_status_changed = self._backend_status_changed
        self._loop = asyncio.get_running_loop()
        self.renderer = Renderer(self.backend)
        try:
            if saved_state.restore(self.state_file, self.lamp):
                node.log.info("lights: showing the state saved in %s", self.state_file)
        except saved_state.SavedStateError as exc:
            node.log.warning("lights: %s; starting dark", exc)

    @hookimpl
    def pidaemon_startup(self, node):
        if self.renderer is None:
            raise BackendError("the lamp has no backend (pidaemon_configure did not run)")
        node.supervise(self.renderer.run, name="lights-render")
        node.supervise(self._publish_state, name="lights-state")
        node.supervise(self._save_state, name="lights-save")
        self._changed()

    @hookimpl
    async def pidaemon_shutdown(self, node):
        self._stop_effect()
        if self._save_due.is_set():
            await asyncio.to_thread(self._write_saved, *self._snapshot())
        if self.renderer is not None:
            await asyncio.to_thread(self.renderer.close)
        # The strip is off now; the retained state says so (the saved state lights it again at the next start).
        self._stopped = True
        dark = {"pixels": [list(self.lamp.dark)] * self.count, "brightness": self.lamp.brightness, "effect": None,
                "on": False}
        node.publish(node.topic("lights", "state"), dark, qos=1, retain=True)

    @hookimpl
    def pidaemon_connected(self, node):
        self._state_due.set()   # the broker may have lost the retained state

    @hookimpl
    def pidaemon_info(self, node):
        return {"capabilities": ["lights"], "pixels": self.count, "pixel_order": self.layout.pixel_order,
                "effects": list(EFFECTS), **(self.backend.info() if self.backend is not None else {})}

    @hookimpl
    def pidaemon_telemetry(self):
        return self.backend.telemetry() if self.backend is not None else {}

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topic("lights", "set"), retain_as_published=True)]

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        """Check the command, charge its user's rate limit (bad commands count too), apply it."""
        if message.retain:
            if message.payload:   # (an empty one clears a retained command: nothing to do)
                self.refused += 1
                self._refuse(message.payload, RETAINED_COMMAND)
                raise PayloadError(f"{message.topic}: {RETAINED_COMMAND}")
            return
        try:
            if len(message.payload) > MAX_COMMAND_BYTES:
                raise PayloadError(f"{message.topic}: a command of {len(message.payload)} bytes, more than "
                                   f"{MAX_COMMAND_BYTES}")
            payload = message.json()
        except PayloadError as exc:
            if self._within_limit(None, message.payload):
                self.refused += 1
                self._refuse(message.payload, str(exc).split(": ", 1)[-1])
            raise
        user = payload.get("user") if isinstance(payload, dict) else None
        if not self._within_limit(user if isinstance(user, str) else None, message.payload, payload):
            return
        try:
            request = self.reader.read(payload)
        except Refused as exc:
            self.refused += 1
            self._refuse(message.payload, str(exc), payload)
            raise PayloadError(f"{message.topic}: {exc}") from None
        self.lamp.apply(request.command)
        self.changes += 1
        self._changed()

    def _backend_status_changed(self) -> None:
        """From any thread: the backend's info changed (a board came or went): publish the node's info again."""
        try:
            self._loop.call_soon_threadsafe(self._publish_info)
        except RuntimeError:
            pass   # the loop has closed: the node has stopped

    def _publish_info(self) -> None:
        if self.node.status()["connected"]:   # otherwise the node publishes its info when it connects
            self.node.publish(self.node.topics.info(self.node.id), self.node.info(), qos=1, retain=True)

    # ------------------------------------------------------------ changes

    def _changed(self) -> None:
        """The lamp changed: show it (or play its new effect), publish and save it."""
        if self.lamp.effect is not self._playing:
            self._stop_effect()
            if self.lamp.effect is not None:
                self._playing = self.lamp.effect
                self._effect_task = self.node.spawn(self._play(self._playing), name="lights-effect")
        if self.lamp.effect is None and self.renderer is not None:
            self.renderer.show(self.lamp.frame(), self.lamp.brightness)
        self._state_due.set()
        self._save_due.set()

    def _stop_effect(self) -> None:
        if self._effect_task is not None:
            self._effect_task.cancel()
        self._effect_task = self._playing = None

    async def _play(self, effect) -> None:
        step = 0
        while True:
            self.renderer.show(self.lamp.frame(step), self.lamp.brightness)
            step += 1
            await asyncio.sleep(self.config.frame_interval)

    async def _publish_state(self) -> None:
        while True:
            await self._state_due.wait()
            self._state_due.clear()
            if self._stopped:
                return
            self.node.publish(self.node.topic("lights", "state"), self.lamp.state(), qos=1, retain=True)
            await asyncio.sleep(self.config.state_interval)

    async def _save_state(self) -> None:
        while True:
            await self._save_due.wait()
            self._save_due.clear()
            await asyncio.to_thread(self._write_saved, *self._snapshot())
            await asyncio.sleep(self.config.save_interval)

    def _snapshot(self) -> tuple[int, dict]:
        """The lamp's state to save, numbered (taken on the event loop, written in a thread)."""
        self._saves += 1
        return self._saves, self.lamp.saved()

    def _write_saved(self, number: int, saved: dict) -> None:
        try:
            with self._save_lock:
                if number <= self._saved:
                    return
                saved_state.save(self.state_file, saved)
                self._saved = number
        except OSError as exc:
            if not self._save_failing:
                self.node.log.warning("lights: cannot save the lamp's state in %s: %s (it will not survive "
                                      "a restart)", self.state_file, exc.strerror or exc)
            self._save_failing = True
            return
        if self._save_failing:
            self.node.log.info("lights: the lamp's state is saved again in %s", self.state_file)
        self._save_failing = False

    # ------------------------------------------------------------ refusals

    def _refuse(self, raw: bytes, reason: str, payload: Any = None, **more) -> None:
        """Tell `<prefix>/lights/refused` why a command was not carried out (`payload`: the JSON, if it was)."""
        sent: Any = None
        if payload is not None:
            try:
                text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
                sent = payload if len(text) <= ECHO_LIMIT else None
            except (ValueError, RecursionError):   # NaN, or nested too deep to write back
                sent = None
        if sent is None:
            sent = raw[:ECHO_LIMIT].decode("utf-8", "replace") + ("..." if len(raw) > ECHO_LIMIT else "")
        user, job = (payload.get("user"), payload.get("job")) if isinstance(payload, dict) else (None, None)
        self.node.publish(self.node.topic("lights", "refused"),
                          {"command": sent, "reason": reason, "user": user if isinstance(user, str) else None,
                           "job": job if isinstance(job, str) else None, **more}, qos=1)

    def _within_limit(self, user: str | None, raw: bytes, payload: Any = None) -> bool:
        """Charge `user`'s bucket; over the limit, the command is counted, and replied to and logged
        at a bounded rate."""
        user = None if user is None else user[:MAX_NAME]
        if self.rate_limit.allow(user):
            return True
        self.rate_limited += 1
        now = time.monotonic()
        if len(self._throttled) > 1000:
            self._throttled = {u: t for u, t in self._throttled.items() if t.unreplied}
        throttled = self._throttled.setdefault(user, Throttled())
        throttled.unreplied += 1
        limit = self.config.rate_limit
        who = shorten(user) if user is not None else ANONYMOUS
        reason = (f"rate limit: user {who} sent more than {limit.burst} commands at once "
                  f"(then {limit.per_second:g} a second)")
        if now - throttled.replied >= RATE_REPLY_INTERVAL:
            self._refuse(raw, reason, payload, refused=throttled.unreplied)
            throttled.unreplied, throttled.replied = 0, now
        if now - throttled.logged >= RATE_LOG_INTERVAL:
            self.node.log.warning("lights: %s; refusing the excess", reason)
            throttled.logged = now
        return False
