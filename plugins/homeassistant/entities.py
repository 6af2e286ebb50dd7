"""What a node shows Home Assistant: its entities, built from the node's own `info`.

Each entity is an `Entity` (component, object id, Home Assistant's keys for
that component); `NodeDevice` adds what every entity of the node shares: the
`device` block that groups them under the node, the availability that follows
the node's `status` topic (`online` / `offline`, the last will included), a
unique id stable across restarts, and the discovery topic
`<discovery_prefix>/<component>/<node>/<object_id>/config`.

The keys are Home Assistant's documented ones, in full (no abbreviations):
https://www.home-assistant.io/integrations/mqtt/ (discovery),
https://www.home-assistant.io/integrations/light.mqtt/ (JSON schema),
https://www.home-assistant.io/integrations/sensor.mqtt/,
https://www.home-assistant.io/integrations/button.mqtt/,
https://www.home-assistant.io/integrations/switch.mqtt/,
https://www.home-assistant.io/integrations/select.mqtt/.

Names that come from other plugins' info (relays, sounds, effects) end up in
topics, templates and option lists, so each is checked here; one that does
not pass is left out with a reason (`Skipped`), never half-used.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

# Home Assistant's class for a node id or object id in a discovery topic.
DISCOVERY_ID = re.compile(r"[a-zA-Z0-9_-]+")
COMPONENT = re.compile(r"[a-z][a-z_]*")
RELAY_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
EFFECT_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAX_SOUND_NAME = 64
MAX_OPTIONS = 100          # sounds offered in the select; a bigger library is cut, saying so
MAX_RELAYS = 32

# The telemetry readings offered as sensors (docs/telemetry.schema.json), by the name used in settings.
SENSORS: dict[str, dict[str, Any]] = {
    "cpu": {"name": "CPU", "reading": ("cpu_percent",), "unit_of_measurement": "%",
            "state_class": "measurement", "icon": "mdi:cpu-64-bit"},
    "memory": {"name": "Memory", "reading": ("memory", "percent"), "unit_of_measurement": "%",
               "state_class": "measurement", "icon": "mdi:memory"},
    "temperature": {"name": "CPU temperature", "reading": ("cpu_temperature",), "unit_of_measurement": "°C",
                    "device_class": "temperature", "state_class": "measurement"},
    "throttling": {"name": "Throttling", "reading": ("throttling", "raw"), "icon": "mdi:speedometer-slow"},
}


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity: its component, its object id and its component's keys."""

    component: str
    object_id: str
    config: Mapping[str, Any]

    def __post_init__(self):
        if not COMPONENT.fullmatch(self.component):
            raise ValueError(f"component {self.component!r} is not a Home Assistant component name")
        if not DISCOVERY_ID.fullmatch(self.object_id):
            raise ValueError(f"object id {self.object_id!r} is not letters, digits, '_' or '-'")


@dataclass(frozen=True)
class Skipped:
    """Something in the node's info that gets no entity, and why (logged by the plugin)."""

    what: str
    reason: str


@dataclass
class Built:
    entities: list[Entity] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def slug(text: str) -> str:
    """`text` as a discovery topic level: unchanged if it fits, else `_` for each other
    character and a short hash of the original, so that two ids never share a slug."""
    if DISCOVERY_ID.fullmatch(text):
        return text
    cleaned = re.sub(r"[^a-zA-Z0-9_-]", "_", text)
    return f"{cleaned}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


@dataclass(frozen=True)
class NodeDevice:
    """The node as a Home Assistant device: what its entities share."""

    prefix: str                 # the cluster's MQTT prefix
    discovery_prefix: str
    node_id: str
    role: str
    version: str
    machine: str | None = None
    via: str | None = None      # the server's node id, for nodes other than the server

    @staticmethod
    def device_id(prefix: str, node_id: str) -> str:
        return f"pidaemon_{slug(prefix)}_{slug(node_id)}"

    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/nodes/{self.node_id}/status"

    def device(self) -> dict[str, Any]:
        block: dict[str, Any] = {"identifiers": [self.device_id(self.prefix, self.node_id)], "name": self.node_id,
                                 "manufacturer": "pidaemon", "model": f"pidaemon {self.role} node",
                                 "sw_version": self.version}
        if self.machine:
            block["hw_version"] = self.machine
        if self.via and self.via != self.node_id:
            block["via_device"] = self.device_id(self.prefix, self.via)
        return block

    def topic(self, entity: Entity) -> str:
        return f"{self.discovery_prefix}/{entity.component}/{slug(self.node_id)}/{entity.object_id}/config"

    def unique_id(self, entity: Entity) -> str:
        return f"{self.device_id(self.prefix, self.node_id)}_{entity.object_id}"

    def discovery(self, entity: Entity) -> dict[str, Any]:
        """The retained discovery payload of `entity`."""
        return {**entity.config, "unique_id": self.unique_id(entity), "device": self.device(),
                "availability_topic": self.status_topic, "payload_available": "online",
                "payload_not_available": "offline"}


# ---------------------------------------------------------------- the entities

def telemetry_sensors(telemetry_topic: str, sensors: tuple[str, ...], expire_after: int | None) -> list[Entity]:
    """A diagnostic sensor per chosen reading of the node's telemetry.

    A reading the node does not have (no thermal zone, not a Pi) gives `None`,
    which Home Assistant shows as unknown: never a made-up value.
    """
    entities = []
    for name in sensors:
        spec = dict(SENSORS[name])
        path = spec.pop("reading")
        config = {**spec, "state_topic": telemetry_topic, "value_template": _reading_template(path),
                  "entity_category": "diagnostic"}
        if expire_after:
            config["expire_after"] = expire_after
        if name == "throttling":
            config["json_attributes_topic"] = telemetry_topic
            config["json_attributes_template"] = "{{ value_json.get('readings', {}).get('throttling', {}) | tojson }}"
        entities.append(Entity("sensor", name, config))
    return entities


def _reading_template(path: tuple[str, ...]) -> str:
    lookup = "value_json.get('readings', {})"
    for i, key in enumerate(path):
        last = i == len(path) - 1
        lookup += f".get('{key}', {'none' if last else '{}'})"
    return "{% set v = " + lookup + " %}{{ 'None' if v is none else v }}"


def lamp_entities(info: Mapping[str, Any], command_topic: str, state_topic: str) -> Built:
    """The lamp as a JSON-schema light with brightness, rgb colour and the lamp's effects."""
    built = Built()
    effects = lamp_effects(info, built.skipped)
    config: dict[str, Any] = {"name": "Lamp", "schema": "json", "command_topic": command_topic,
                              "state_topic": state_topic, "brightness": True, "brightness_scale": 255,
                              "supported_color_modes": ["rgb"], "qos": 1, "icon": "mdi:led-strip-variant"}
    if effects:
        config["effect"] = True
        config["effect_list"] = [*effects, "none"]
    built.entities.append(Entity("light", "lamp", config))
    return built


def lamp_effects(info: Mapping[str, Any], skipped: list[Skipped] | None = None) -> tuple[str, ...]:
    """The effects the lamp declares in the node's info, each a plain name."""
    effects = info.get("effects", [])
    if not isinstance(effects, list):
        if skipped is not None:
            skipped.append(Skipped("the lamp's effects", "info.effects is not a list"))
        return ()
    good = []
    for effect in effects:
        if isinstance(effect, str) and EFFECT_NAME.fullmatch(effect) and effect != "none":
            good.append(effect)
        elif skipped is not None:
            skipped.append(Skipped(f"lamp effect {_shown(effect)}", "not 1-32 letters, digits, '_' or '-'"))
    return tuple(dict.fromkeys(good))


def relay_entities(info: Mapping[str, Any], press_topic: str, set_topic: str, state_topic: str,
                   user: str) -> Built:
    """A button per relay in button mode (a press), a switch per relay in switch mode."""
    built = Built()
    relays = info.get("relays", [])
    if not isinstance(relays, list):
        built.skipped.append(Skipped("the relays", "info.relays is not a list"))
        return built
    seen: set[str] = set()
    for relay in relays[:MAX_RELAYS]:
        name = relay.get("name") if isinstance(relay, dict) else None
        mode = relay.get("mode") if isinstance(relay, dict) else None
        if not isinstance(name, str) or not RELAY_NAME.fullmatch(name) or name in seen:
            built.skipped.append(Skipped(f"relay {_shown(name)}", "a relay name is 1-32 letters, digits, '_' or "
                                                                  "'-', once"))
            continue
        seen.add(name)
        if mode == "button":
            built.entities.append(Entity("button", f"relay_{name}", {
                "name": f"Press {name}", "command_topic": press_topic, "qos": 1,
                "payload_press": _json({"relay": name, "user": user}), "icon": "mdi:gesture-tap-button"}))
        elif mode == "switch":
            state = (f"{{% set r = value_json.get('relays', {{}}).get('{name}') %}}"
                     "{{ 'None' if r is not mapping else ('ON' if r.get('active') else 'OFF') }}")
            built.entities.append(Entity("switch", f"relay_{name}", {
                "name": name, "command_topic": set_topic, "state_topic": state_topic, "value_template": state,
                "payload_on": _json({"relay": name, "state": "on", "user": user}),
                "payload_off": _json({"relay": name, "state": "off", "user": user}),
                "state_on": "ON", "state_off": "OFF", "optimistic": False, "qos": 1}))
        else:
            built.skipped.append(Skipped(f"relay {name}", f'mode must be "button" or "switch", got {_shown(mode)}'))
    if len(relays) > MAX_RELAYS:
        built.skipped.append(Skipped(f"{len(relays) - MAX_RELAYS} relays", f"more than {MAX_RELAYS}"))
    return built


def sound_entities(info: Mapping[str, Any], play_topic: str, stop_topic: str, state_topic: str,
                   user: str) -> Built:
    """A select of the speaker's sounds (choosing one plays it; it shows what plays) and a stop button."""
    built = Built()
    sounds = info.get("sounds", [])
    if not isinstance(sounds, list):
        built.skipped.append(Skipped("the sounds", "info.sounds is not a list"))
        sounds = []
    options = []
    for sound in sounds:
        if (isinstance(sound, str) and 0 < len(sound) <= MAX_SOUND_NAME and sound.isprintable()
                and sound != "None" and sound not in options):
            options.append(sound)
        else:
            built.skipped.append(Skipped(f"sound {_shown(sound)}", f"a sound name is 1-{MAX_SOUND_NAME} printable "
                                                                  "characters, once, and not None"))
    if len(options) > MAX_OPTIONS:
        built.skipped.append(Skipped(f"{len(options) - MAX_OPTIONS} sounds", f"the select offers the first "
                                                                            f"{MAX_OPTIONS}"))
        options = options[:MAX_OPTIONS]
    if options:
        command = '{"name": {{ value | tojson }}, "user": ' + json.dumps(user) + "}"
        built.entities.append(Entity("select", "sound", {
            "name": "Sound", "command_topic": play_topic, "command_template": command, "options": options,
            "state_topic": state_topic, "value_template": "{{ value_json.get('playing') or 'None' }}",
            "qos": 1, "icon": "mdi:music-note"}))
    built.entities.append(Entity("button", "sound_stop", {
        "name": "Stop sound", "command_topic": stop_topic, "payload_press": _json({"user": user}), "qos": 1,
        "icon": "mdi:stop"}))
    return built


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
