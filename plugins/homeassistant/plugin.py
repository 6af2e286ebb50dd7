"""Home Assistant MQTT discovery: each node announces its own entities, grouped as one device.

What a node announces comes from its own `info` (what its plugins declare,
docs/protocol.md), never from another plugin's classes:
- its main telemetry (CPU, memory, CPU temperature, throttling) as diagnostic
  sensors, if `telemetry_entities` is on: by default on the server and on the
  lamp's, speaker's and relays' nodes (roles `server`, `lights`, `audio`,
  `relay`), off on workers and any other role, so that a thousand workers add
  nothing to Home Assistant unless each is told to;
- the lamp (capability `lights`) as a JSON-schema light: this node translates
  Home Assistant's commands into `lights/set` commands and the lamp's
  `lights/state` into Home Assistant's state (`light_commands.py`);
- the speaker (capability `sound`) as a select of its sounds and a stop button;
- the relays (capability `relay`) as a button each (`button` mode) or a
  switch (`switch` mode), publishing the agreed `relays/press` and
  `relays/set` commands directly;
- entities other plugins add through `pidaemon_homeassistant_entities`.

Discovery configs are retained, under `<discovery_prefix>/<component>/<node>/<object_id>/config`,
sent on every connection, when the node's `info` changes, and again (after a
random pause of up to `resend_spread` s) when Home Assistant says `online` on
`<discovery_prefix>/status`.  An entity the node no longer offers gets an
empty retained config, which deletes it in Home Assistant (`published.py`).
Availability follows the node's `status` topic: `offline` on a clean stop
and as the last will.  A node with nothing to offer subscribes to nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from typing import Any

from pidaemon import hookimpl
from pidaemon.bus import Message, PayloadError, Subscription, encode_payload
from pidaemon.logs import LimitedLog
from pidaemon.names import NAME, NAME_DOC, TOPIC_PREFIX, TOPIC_PREFIX_DOC, is_name
from pidaemon.schema import Boolean, ListOf, Number, String, settings

from . import hookspecs
from .entities import (SENSORS, Built, Entity, NodeDevice, Skipped, lamp_effects, lamp_entities, relay_entities,
                       sound_entities, telemetry_sensors)
from .light_commands import MAX_COMMAND_BYTES, LampView, LightCommandError, translate
from .published import PublishedTopics

ROLES_WITH_TELEMETRY_ENTITIES = ("server", "lights", "audio", "relay")
HARDWARE = ("lights", "sound", "relay")     # capabilities that become entities
MIN_EXPIRE_AFTER = 30                       # seconds: a sensor goes unavailable after this long without telemetry


@settings
class HomeAssistantSettings:
    discovery_prefix: str = String(default="homeassistant", pattern=TOPIC_PREFIX, pattern_doc=TOPIC_PREFIX_DOC,
                                   doc="Home Assistant's discovery prefix (its MQTT integration's setting)")
    telemetry_entities: bool | None = Boolean(
        default=None, doc="CPU, memory, temperature and throttling sensors for this node; null: by the node's "
                          "role, on for server, lights, audio and relay, off for workers and other roles")
    sensors: tuple = ListOf(String(choices=list(SENSORS)), default=list(SENSORS),
                            doc="which telemetry sensors, when telemetry_entities is on")
    resend_spread: float = Number(min=0, max=60, default=2.0,
                                  doc="when Home Assistant comes online, resend discovery after a random pause of "
                                      "up to this many seconds, so that nodes do not all answer at once")
    user: str = String(default="homeassistant", pattern=NAME, pattern_doc=NAME_DOC,
                       doc="the `user` field of the lamp, speaker and relay commands sent for Home Assistant")
    via_device: str | None = String(default=None, pattern=NAME, pattern_doc=NAME_DOC,
                                    doc="the server's node id, shown in Home Assistant as the device this node is "
                                        "reached through; null: the server found by discovery, if any")


class HomeAssistantPlugin:
    config_schema = HomeAssistantSettings
    hookspecs = hookspecs

    def __init__(self, node, config: HomeAssistantSettings):
        self.node = node
        self.config = config
        self.telemetry_entities = (config.telemetry_entities if config.telemetry_entities is not None
                                   else node.role in ROLES_WITH_TELEMETRY_ENTITIES)
        self.status_topic = f"{config.discovery_prefix}/status"
        self.light_command_topic = node.topic("homeassistant", "lights", "set")
        self.light_state_topic = node.topic("homeassistant", "lights", "state")
        self.lamp = LampView()
        self.lamp_state_seen = False
        self._lamp_state_sent: bytes | None = None
        self.stopping = False
        self.effects: tuple[str, ...] = ()
        self.capabilities: set[str] = set()
        self.published: PublishedTopics | None = None
        self.announced: dict[str, bytes] = {}   # discovery topic: payload, on this connection
        self.translated = 0                     # Home Assistant light commands passed to the lamp
        self.refused = 0                        # ... and refused
        self._resend: asyncio.Task | None = None
        self._reported: set[Skipped] = set()
        self._limited_log = LimitedLog(node.log)

    # ------------------------------------------------------------ hooks

    @hookimpl
    def pidaemon_configure(self, node):
        self.published = PublishedTopics(node.state_dir, node.log)

    @hookimpl
    def pidaemon_subscriptions(self, node):
        capabilities = node.info().get("capabilities", [])   # every plugin of the node is configured by now
        self.capabilities = {c for c in capabilities if isinstance(c, str)}
        if not self.offers_entities():
            return []
        subscriptions = [Subscription(self.status_topic), Subscription(node.topics.info(node.id))]
        if "lights" in self.capabilities:
            subscriptions += [Subscription(node.topic("lights", "state")), Subscription(self.light_command_topic, retain_as_published=True)]
        return subscriptions

    @hookimpl
    def pidaemon_connected(self, node):
        self.announced.clear()
        self.announce()

    @hookimpl
    def pidaemon_shutdown(self, node):
        self.stopping = True

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        if message.topic == self.status_topic:
            self._home_assistant_status(message)
        elif message.topic == node.topics.info(node.id):
            self.announce()   # a plugin's state or declaration changed: publish what differs
        elif message.topic == self.light_command_topic:
            self._light_command(message)
        elif message.topic == node.topic("lights", "state"):
            self._lamp_state(message)

    # ------------------------------------------------------------ discovery

    def offers_entities(self) -> bool:
        """Whether this node has anything for Home Assistant (a worker, by default, has not)."""
        return (self.telemetry_entities or bool(self.capabilities & set(HARDWARE))
                or bool(self.node.hook_runner.implementers("pidaemon_homeassistant_entities")))

    def announce(self, again: bool = False) -> None:
        """Publish the discovery config of every entity (only those that changed unless `again`),
        and an empty one for each entity this node offered before and no longer does."""
        if self.stopping:
            return   # plugins show `stopped` now: that is no reason to delete their entities
        info = self.node.info()
        device = self._device(info)
        current = {device.topic(entity): encode_payload(device.discovery(entity)) for entity in self.entities(info)}
        for topic, payload in current.items():
            if again or self.announced.get(topic) != payload:
                self.node.publish(topic, payload, qos=1, retain=True)
                self.announced[topic] = payload
        previous = set(self.announced) | (self.published.topics if self.published else set())
        gone = previous - set(current)
        failed = sorted(name for name, record in (info.get("plugins") or {}).items()
                        if isinstance(record, dict) and record.get("state") == "failed")
        if gone and failed:
            # A plugin that failed may be why an entity is missing: keep it (and what Home Assistant
            # holds of it) until the node runs without failures, rather than delete it for a hiccup.
            self._limited_log.log("keep", "homeassistant: keeping %d entities while plugin %s has failed",
                                  len(gone), ", ".join(failed), level=logging.INFO)
        else:
            for topic in sorted(gone):
                self.node.publish(topic, b"", qos=1, retain=True)
                self.announced.pop(topic, None)
                self.node.log.info("homeassistant: removed %s (no longer offered)", topic)
            gone = set()
        if self.published is not None:
            self.published.replace(set(current) | gone)
        if again and "lights" in self.capabilities and self.lamp_state_seen:
            self._publish_lamp_state()

    def entities(self, info: dict[str, Any]) -> list[Entity]:
        """Every entity this node offers now, from its `info`."""
        built = Built()
        if self.telemetry_entities and self._runs(info, "telemetry"):
            built.entities += telemetry_sensors(self.node.topics.telemetry(self.node.id), tuple(self.config.sensors),
                                                self._expire_after())
        if "lights" in self.capabilities:
            self.effects = lamp_effects(info)
            self._add(built, lamp_entities(info, self.light_command_topic, self.light_state_topic))
        if "sound" in self.capabilities:
            self._add(built, sound_entities(info, self.node.topic("sound", "play"), self.node.topic("sound", "stop"),
                                            self.node.topic("sound", "state"), self.config.user))
        if "relay" in self.capabilities:
            self._add(built, relay_entities(info, self.node.topic("relays", "press"), self.node.topic("relays", "set"),
                                            self.node.topic("relays", "state"), self.config.user))
        self._add_from_plugins(built)
        for skipped in built.skipped:
            if skipped not in self._reported and len(self._reported) < 1000:
                self._reported.add(skipped)
                self.node.log.warning("homeassistant: no entity for %s: %s", skipped.what, skipped.reason)
        return built.entities

    def _add_from_plugins(self, built: Built) -> None:
        taken = {(e.component, e.object_id) for e in built.entities}
        for call in self.node.hook_runner.each("pidaemon_homeassistant_entities", node=self.node):
            for entity in call.result or ():
                if not isinstance(entity, Entity) or (entity.component, entity.object_id) in taken:
                    built.skipped.append(Skipped(f'an entity of plugin "{call.plugin}"',
                                                 "not an Entity, or its object id is taken"))
                    continue
                taken.add((entity.component, entity.object_id))
                built.entities.append(entity)

    @staticmethod
    def _add(built: Built, more: Built) -> None:
        built.entities += more.entities
        built.skipped += more.skipped

    def _device(self, info: dict[str, Any]) -> NodeDevice:
        via = self.config.via_device
        if via is None and self.node.role != "server":
            found = (info.get("discovery") or {}).get("server") if isinstance(info.get("discovery"), dict) else None
            via = found if is_name(found) else None
        machine = info.get("machine")
        return NodeDevice(prefix=self.node.topics.prefix, discovery_prefix=self.config.discovery_prefix,
                          node_id=self.node.id, role=self.node.role, version=str(info.get("version", "?")),
                          machine=machine if isinstance(machine, str) else None, via=via)

    def _expire_after(self) -> int | None:
        section = self.node.config.plugin_sections.get("telemetry") or {}
        interval = section.get("interval")
        return max(MIN_EXPIRE_AFTER, math.ceil(4 * interval)) if isinstance(interval, (int, float)) else None

    @staticmethod
    def _runs(info: dict[str, Any], plugin: str) -> bool:
        record = (info.get("plugins") or {}).get(plugin)   # a failed one too: its sensors show it unavailable
        return isinstance(record, dict) and record.get("state") in ("configured", "running", "failed")

    # ------------------------------------------------------------ Home Assistant's birth message

    def _home_assistant_status(self, message: Message) -> None:
        if message.retain:
            return   # a retained birth message comes with every connection, which announces anyway
        if message.payload.strip() != b"online":
            return
        if self._resend is None or self._resend.done():
            delay = random.uniform(0, self.config.resend_spread)
            self._resend = self.node.spawn(self._announce_after(delay), name="homeassistant:resend")

    async def _announce_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.announce(again=True)

    # ------------------------------------------------------------ the lamp

    def _light_command(self, message: Message) -> None:
        if not message.payload:
            return   # a retained command being cleared: nothing to do
        try:
            if message.retain:
                raise LightCommandError("a retained command would run again at every connection: "
                                        "publish it without the retain flag")
            commands = translate(message.json_object(MAX_COMMAND_BYTES), self.lamp, self.effects, self.config.user)
        except (PayloadError, LightCommandError) as exc:
            self.refused += 1
            reason = str(exc).removeprefix(f"{message.topic}: ")
            kind = re.sub(r"\d+|, got .*", "", reason)   # the same reason again within seconds: counted
            self._limited_log.log(f"light:{kind}", "homeassistant: refused a light command on %s: %s",
                                  message.topic, reason)
            return
        for command in commands:
            self.node.publish(self.node.topic("lights", "set"), command, qos=1)
        self.translated += 1

    def _lamp_state(self, message: Message) -> None:
        if not message.payload:
            return   # the retained state was cleared
        try:
            self.lamp.update(message.json())
        except (PayloadError, LightCommandError) as exc:
            self._limited_log.log("lamp_state", "homeassistant: ignored a lamp state on %s: %s", message.topic, exc)
            return
        self.lamp_state_seen = True
        self._publish_lamp_state(only_a_change=True)

    def _publish_lamp_state(self, only_a_change: bool = False) -> None:
        """The lamp's state for Home Assistant (an effect changes the lamp's pixels many times a
        second; Home Assistant hears only when what it shows changes)."""
        state = encode_payload(self.lamp.home_assistant_state())
        if only_a_change and state == self._lamp_state_sent:
            return
        self.node.publish(self.light_state_topic, state, qos=1, retain=True)
        self._lamp_state_sent = state
