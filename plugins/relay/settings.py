"""The relay plugin's settings: the relays (name, pin, active level, bounds) and the backend.

    plugins:
      relay:
        backend: gpio
        relays:
          reset: {pin: 17, active: low, max_press: 1, default_press: 0.3, min_interval: 10}
          power: {pin: 27, active: low, max_press: 6, default_press: 0.5, min_interval: 10}

With `backend: arduino` the relays have no pins (the board names them) and
`options:` holds the board's port and timing, checked here against the
backend's `config_schema` (`arduino_backend.ArduinoSettings`), as
pidaemon/backends.py has it for the other device plugins.

Each relay is a nested section validated like any other (file, line, dotted
path).  What one field cannot judge alone (a default press over the maximum,
two relays on one pin, a name that is not a topic-safe word) is checked by
`RelaysSection` after the fields.  `RelaysSection.warnings` is what
`pidaemon config check` reports against the whole configuration: a relay
plugin on the server, the machine its solenoids reset.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from pidaemon.schema import (SETTINGS_SECTION, Any_, Checked, Integer, MapOf, Number, Problem, Section, String,
                             section_of, settings)

from .backends import BUILT_IN, NAMED_RELAYS, RELAY_BACKENDS

RELAY_NAME = re.compile(r"[a-z][a-z0-9_\-]{0,31}")
RELAY_NAME_DOC = "a name of lower-case letters, digits, _ and - (at most 32), starting with a letter"
MAX_PRESS_LIMIT = 30.0   # seconds: no configuration may let a message hold a button longer


@settings
class RelaySettings:
    """One relay: the solenoid on one button."""

    pin: int | None = Integer(min=0, max=40, default=None,
                              doc="the GPIO pin (numbered as `numbering` says) or the board's channel; required "
                                  "except with the arduino backend, which names each relay as the board does")
    active: str = String(choices=["high", "low"], default="high",
                         doc="the level that energises the solenoid; most opto-isolated relay boards are active low")
    mode: str = String(choices=["button", "switch"], default="button",
                       doc="button: pressed for a while (relays/press); switch: on until off (relays/set)")
    max_press: float = Number(min=0.05, max=MAX_PRESS_LIMIT, default=2.0,
                              doc="longest press, seconds: a longer one is refused (an ATX power button held "
                                  "about 5 s forces the machine off)")
    default_press: float = Number(min=0.05, max=MAX_PRESS_LIMIT, default=0.5,
                                  doc="the press when a request gives no duration, seconds")
    min_interval: float = Number(min=0, max=86400, default=5.0,
                                 doc="seconds from the end of one press (or switch change) to the next")

    @property
    def idle_high(self) -> bool:
        """The level of the pin when the solenoid is at rest."""
        return self.active == "low"


class RelaysSection(Section):
    """The plugin's section: each field alone, then the relays taken together."""

    def check(self, value, path, problems):
        before = len(problems)
        result = super().check(value, path, problems)
        if not isinstance(result, dict) or len(problems) > before:
            return result  # a bad field is reported once, by itself
        pins: dict[int, str] = {}
        for name, relay in (result.get("relays") or {}).items():
            where = path + ("relays", name)
            if not RELAY_NAME.fullmatch(name):
                problems.append(Problem(where, f"{name!r} is not {RELAY_NAME_DOC}"))
            if relay["default_press"] > relay["max_press"]:
                problems.append(Problem(where + ("default_press",),
                                        f"{relay['default_press']:g} s is over max_press ({relay['max_press']:g} s)"))
            if relay["pin"] is None:
                if result["backend"] not in NAMED_RELAYS:
                    problems.append(Problem(where + ("pin",), f"missing: the {result['backend']} backend drives "
                                                              "each relay by its pin (an integer 0 to 40)"))
                continue
            if relay["pin"] in pins:
                problems.append(Problem(where + ("pin",), f"pin {relay['pin']} is also relay {pins[relay['pin']]}'s"))
            pins.setdefault(relay["pin"], name)
        self._check_options(result, path, problems)
        return result

    @staticmethod
    def _check_options(result: dict, path: tuple[str, ...], problems: list[Problem]) -> None:
        """A built-in backend's `options` against its `config_schema`, every default filled in."""
        if result["backend"] not in BUILT_IN:
            return   # a third-party backend checks its own (not imported to check a file)
        schema = getattr(RELAY_BACKENDS.load(result["backend"]), "config_schema", None)
        if schema is not None:
            result["options"] = section_of(schema).validate(dict(result["options"] or {}), path + ("options",),
                                                            problems)

    def extended(self, more):
        return RelaysSection({**self.fields, **more})

    def warnings(self, config: Mapping[str, Any], path: tuple[str, ...]) -> list[Problem]:
        """Problems of a valid configuration that do not stop it: reported by `config check` and at start."""
        if config["node"]["role"] == "server":
            return [Problem(path, "a relay plugin on the server: the relays press the server's own reset and "
                                  "power buttons, so they belong on another node (config/relay.yaml), which can "
                                  "still reset the server when it hangs")]
        return []


@settings
class RelayPluginSettings:
    backend: str = Checked(RELAY_BACKENDS.check_name, default="sim", expected="the name of a relay backend",
                           doc="sim: no hardware (levels logged); gpio: RPi.GPIO (the `pi` extra); arduino: the "
                               "relay board on USB serial (the `serial` extra); or the name of a backend in the "
                               "pidaemon.relay_backends entry-point group")
    numbering: str = String(choices=["bcm", "board"], default="bcm",
                            doc="gpio: pins by Broadcom GPIO number (17: GPIO17) or physical pin (11)")
    options: Mapping[str, Any] = MapOf(Any_(), doc="the backend's own settings (arduino: port, baud, timeouts; "
                                                   "a third-party backend checks its own)")
    relays: Mapping[str, Any] = MapOf(section_of(RelaySettings), default={},
                                      doc="the relays by name: reset, power...")

    def relay_settings(self) -> dict[str, RelaySettings]:
        """Each relay's typed settings, by name, in the order configured."""
        return {name: RelaySettings.from_mapping(values) for name, values in self.relays.items()}


setattr(RelayPluginSettings, SETTINGS_SECTION, RelaysSection(section_of(RelayPluginSettings).fields))
