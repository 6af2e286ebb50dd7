"""Relay backends: what drives the solenoids' outputs, chosen by the plugin's `backend` setting.

A backend is one class with three methods (see `RelayBackend`).  The plugin and
`pidaemon relay press` call them one at a time, under a lock, and decide
everything else themselves (bounds, intervals, who pressed): a backend only
sets levels.  Built in: `sim` (levels in memory, logged), `gpio` (RPi.GPIO,
or the rpi-lgpio drop-in on a Pi 5, imported when the backend starts) and
`arduino` (the relay board of firmware/relay_controller on USB serial,
`arduino_backend.py`, which times each press itself).  A distribution adds
one with an entry point in the `pidaemon.relay_backends` group
(`myboard = "my_package.relays:MyBoard"`); `backend: myboard` chooses it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping

from pidaemon.backends import BackendError, Backends

if TYPE_CHECKING:  # pragma: no cover
    from .settings import RelayPluginSettings, RelaySettings

ENTRY_POINT_GROUP = "pidaemon.relay_backends"
BUILT_IN = {"sim": "pidaemon_plugins.relay.backends:SimRelays",
            "gpio": "pidaemon_plugins.relay.backends:GpioRelays",
            "arduino": "pidaemon_plugins.relay.arduino_backend:ArduinoRelays"}
NAMED_RELAYS = {"arduino"}   # backends that address relays by their names, not by pins


class HardwareRefused(Exception):
    """The hardware will not carry out this request now (its own bounds, or it is not connected); says why."""


class RelayBackend:
    """Drives the outputs of a relay board.

    `relays` maps each relay's name to its `RelaySettings` (`pin`, `active`,
    `idle_high`...); `settings` is the plugin's whole section (`numbering`,
    `options` for a backend's own settings).  Calls come one at a time:

    - `setup()`: claim every output and set it idle.  It runs first, before the
      node subscribes to anything, so that a relay left energised by a crash
      is released before anything else happens.  Raise BackendError to say
      what is missing.
    - `drive(name, active)`: energise (True) or release (False) one relay.
      Keep it short: it runs under the plugin's lock, from the event loop or
      from the watchdog thread.
    - `close()`: every output idle, hardware released; also after a failed setup.

    `drive` (and `press`) may raise HardwareRefused to refuse a request with
    a reason (a board's own bounds, a board not connected).  A backend on a
    board that times presses itself sets `times_presses` and implements
    `press(name, duration)`, called instead of `drive(name, True)`; the
    release at the press's end is still `drive(name, False)`.

    A backend whose hardware changes on its own (a board that reconnects or
    restarts) calls `on_idle_forced(at)` (every relay went idle at
    `time.monotonic()` `at`) and `on_status_changed()` (its `info()` or
    `telemetry()` changed); its owner sets both before `setup()`.  They may
    be called from any thread and return at once.
    """

    times_presses = False

    def __init__(self, relays: Mapping[str, RelaySettings], settings: RelayPluginSettings, log: logging.Logger):
        self.relays = dict(relays)
        self.settings = settings
        self.log = log
        self.on_idle_forced: Callable[[float], None] = lambda at: None
        self.on_status_changed: Callable[[], None] = lambda: None

    def setup(self) -> None:
        raise NotImplementedError

    def drive(self, name: str, active: bool) -> None:
        raise NotImplementedError

    def press(self, name: str, duration: float) -> None:
        """Energise button `name` for `duration` s, timed by the hardware (only when `times_presses`)."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """What the node's `info` gains (e.g. a board's presence and version)."""
        return {}

    def telemetry(self) -> dict[str, Any]:
        """Readings the node's telemetry gains."""
        return {}

    def close(self) -> None:
        for name in self.relays:
            self.drive(name, False)


class SimRelays(RelayBackend):
    """No hardware: each relay's level kept in memory and logged (desktops, `pidaemon sim`)."""

    def setup(self) -> None:
        self.active = {name: False for name in self.relays}
        self.log.info("relay (sim): every relay idle: %s", ", ".join(self.relays) or "none configured")

    def drive(self, name: str, active: bool) -> None:
        self.active[name] = active
        relay = self.relays[name]
        level = "high" if active != relay.idle_high else "low"
        self.log.info("relay (sim): %s %s (pin %d %s)", name, "energised" if active else "released", relay.pin,
                      level)


class GpioRelays(RelayBackend):
    """The Pi's own GPIO pins through RPi.GPIO (on a Pi 5, its API from the rpi-lgpio drop-in).

    Every pin is an output set to its idle level from the start (`initial=`),
    so it never shows the active level while being set up.  `close()` leaves
    the pins driven at their idle level rather than calling `GPIO.cleanup()`:
    cleanup turns them into floating inputs, whose level the relay board would
    then decide.
    """

    def setup(self) -> None:
        try:
            import RPi.GPIO as GPIO
        except ImportError as exc:
            raise BackendError(f"the gpio backend needs RPi.GPIO ({exc}): install the `pi` extra on a Pi 2 to 4 "
                               "(pip install 'pidaemon[pi]') or rpi-lgpio on a Pi 5 (pip install "
                               "'pidaemon[pi5]'); elsewhere use backend: sim") from None
        except RuntimeError as exc:  # RPi.GPIO on a machine that is not a Pi
            raise BackendError(f"RPi.GPIO cannot run here: {exc}; use backend: sim") from None
        self.gpio = GPIO
        GPIO.setwarnings(False)  # pins a killed daemon left as outputs are taken again, on purpose
        try:
            GPIO.setmode(GPIO.BCM if self.settings.numbering == "bcm" else GPIO.BOARD)
            for name, relay in self.relays.items():
                GPIO.setup(relay.pin, GPIO.OUT, initial=self._level(name, False))
        except RuntimeError as exc:  # RPi.GPIO itself on a Pi 5: "Cannot determine SOC peripheral base address"
            raise BackendError(f"RPi.GPIO cannot drive the pins: {exc} (on a Pi 5, replace RPi.GPIO by "
                               "rpi-lgpio: pip uninstall RPi.GPIO; pip install 'pidaemon[pi5]')") from None

    def drive(self, name: str, active: bool) -> None:
        self.gpio.output(self.relays[name].pin, self._level(name, active))

    def close(self) -> None:
        if getattr(self, "gpio", None) is not None:
            super().close()

    def _level(self, name: str, active: bool) -> Any:
        high = active != self.relays[name].idle_high
        return self.gpio.HIGH if high else self.gpio.LOW


RELAY_BACKENDS = Backends("relay", ENTRY_POINT_GROUP, RelayBackend, BUILT_IN)
