"""Home Assistant MQTT discovery (plugin `homeassistant`) against a real mosquitto.

The lamp, speaker and relays are stand-ins here (`StandInLamp`, ...): the
real plugins are built at the same time by other hands, and the
`homeassistant` plugin depends only on the agreed protocol, so each stand-in
declares exactly the agreed `info` keys and records the agreed commands it
receives.  No Home Assistant runs here: every discovery payload is checked
against the keys Home Assistant documents for its component
(`tests/support/homeassistant_discovery.py`), and Home Assistant's side of
the conversation (its birth message, its light and button commands) is
published by the test as Home Assistant would publish it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import tempfile

import paho.mqtt.client as mqtt
import pytest

from pidaemon import hookimpl
from pidaemon.config import config_from_mapping
from pidaemon.daemon import Daemon
from pidaemon_plugins.homeassistant import Entity
from pidaemon_plugins.homeassistant.entities import SENSORS, relay_entities, sound_entities, telemetry_sensors
from tests.support.homeassistant_discovery import discovery_problems
from tests.support.nodes import FAKE_FACTS, STATE_ROOT, node_config, start_node_process, write_config
from tests.support.observer import Observer
from tests.support.plugins import catalog_with
from tests.support.waiting import wait_until

PREFIX = "picluster"
FAST = {"resend_spread": 0.2}


class Recorder:
    """Records the JSON commands that reach it on the topics it declares."""

    topics: tuple[str, ...] = ()
    info: dict = {}

    def __init__(self, node, config):
        self.node = node
        self.received: list[tuple[str, dict]] = []

    @hookimpl
    def pidaemon_info(self):
        return self.info

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [node.topic(*topic.split("/")) for topic in self.topics]

    @hookimpl
    def pidaemon_message(self, node, message):
        self.received.append((message.topic.removeprefix(PREFIX + "/"), message.json()))


class StandInLamp(Recorder):
    """Stands in for the `lights` plugin: the agreed info, and what reaches `lights/set`."""

    topics = ("lights/set",)
    info = {"capabilities": ["lights"], "pixels": 4, "pixel_order": "GRB", "effects": ["chase", "pulse"]}


class StandInSpeaker(Recorder):
    """Stands in for the `sound` plugin."""

    topics = ("sound/play", "sound/stop")
    info = {"capabilities": ["sound"], "sounds": ["bell", "beep", "x" * 200], "default_sound": "bell"}


class StandInRelays(Recorder):
    """Stands in for the `relay` plugin: a button relay, a switch relay and one with a name no topic may hold."""

    topics = ("relays/press", "relays/set")
    info = {"capabilities": ["relay"], "relays": [{"name": "reset", "mode": "button"},
                                                  {"name": "power", "mode": "switch"},
                                                  {"name": "../evil", "mode": "button"}]}


class Co2Sensor:
    """A third-party plugin that adds an entity to its node's device through the plugin's own hook."""

    def __init__(self, node, config):
        self.node = node

    @hookimpl(optionalhook=True)   # declared by the homeassistant plugin, which may be absent
    def pidaemon_homeassistant_entities(self, node):
        return [Entity("sensor", "co2", {"name": "CO2", "state_topic": node.topic("co2", node.id),
                                         "unit_of_measurement": "ppm", "device_class": "carbon_dioxide",
                                         "state_class": "measurement"})]


CATALOG = catalog_with(stand_in_lamp=StandInLamp, stand_in_speaker=StandInSpeaker, stand_in_relays=StandInRelays,
                       co2_sensor=Co2Sensor)


def daemon(node_id: str, broker, role: str, plugins: dict, state_dir: str | None = None) -> Daemon:
    mapping = node_config(node_id, broker.url, role=role, plugins=plugins)
    if state_dir:
        mapping["node"]["state_dir"] = state_dir
    return Daemon(config_from_mapping(mapping, plugin_schema=CATALOG.schema), catalog=CATALOG,
                  facts=dict(FAKE_FACTS))


async def started(*nodes: Daemon) -> None:
    for node in nodes:
        await node.start()
        assert await node.bus.wait_connected(10)


async def stopped(*nodes: Daemon) -> None:
    for node in nodes:
        await node.shutdown()


def configs(observer: Observer, node_id: str, since: int = 0) -> dict[str, dict]:
    """The latest non-empty discovery config of each of the node's entities, by topic."""
    found = {}
    for message in observer.messages[since:]:
        if mqtt.topic_matches_sub(f"homeassistant/+/{node_id}/+/config", message.topic):
            if message.payload:
                found[message.topic] = (json.loads(message.payload), None)
            else:
                found.pop(message.topic, None)
    return {topic: config for topic, (config, _) in found.items()}


def retained(port: int, topic_filter: str = "homeassistant/#") -> dict[str, bytes]:
    """What a Home Assistant starting now would find: the retained messages on `topic_filter`."""
    fresh = Observer(port, topics=(topic_filter, "test/sentinel"))
    try:
        # The broker sends the retained messages on subscription, before anything published after it.
        fresh.publish("test/sentinel", "end")
        fresh.wait_for("test/sentinel")
        return {m.topic: m.payload for m in fresh.messages if m.retain}
    finally:
        fresh.close()


async def wait_for_configs(observer: Observer, node_id: str, count: int, since: int = 0) -> dict[str, dict]:
    return await wait_until(lambda: (c := configs(observer, node_id, since)) and len(c) >= count and c,
                            timeout=15, what=f"{count} discovery configs of {node_id}")


def template_path(template: str) -> list[str]:
    """The keys a value template reads, in order: `value_json.get('readings', {}).get('cpu_percent', ...)`."""
    return re.findall(r"\.get\('([a-z_]+)'", template)


# ---------------------------------------------------------------- the node's own telemetry

def test_a_server_offers_its_telemetry_as_documented_sensors_with_stable_ids(broker, observer):
    """The server is on by default; every payload is checked against Home Assistant's documented keys."""
    async def scenario():
        plugins = {"telemetry": {"interval": 0.2}, "simulated_system": {}, "homeassistant": FAST}
        server = daemon("hub", broker, "server", plugins)
        await started(server)
        first = await wait_for_configs(observer, "hub", 4)
        telemetry = json.loads((await asyncio.to_thread(observer.wait_for, f"{PREFIX}/nodes/hub/telemetry")).payload)
        await stopped(server)
        mark = len(observer.messages)
        again = daemon("hub", broker, "server", plugins)   # a restart: a new process would be the same
        await started(again)
        second = await wait_for_configs(observer, "hub", 4, since=mark)
        await stopped(again)
        return first, second, telemetry

    first, second, telemetry = asyncio.run(scenario())
    assert sorted(first) == [f"homeassistant/sensor/hub/{name}/config"
                             for name in ("cpu", "memory", "temperature", "throttling")]
    for topic, config in first.items():
        assert discovery_problems(topic, config) == []
        assert config["entity_category"] == "diagnostic"
        assert config["availability_topic"] == f"{PREFIX}/nodes/hub/status"
        assert config["state_topic"] == f"{PREFIX}/nodes/hub/telemetry"
        assert config["device"]["identifiers"] == ["pidaemon_picluster_hub"]
        assert config["device"]["name"] == "hub" and "via_device" not in config["device"]
        assert config["device"]["model"] == "pidaemon server node"
    assert first["homeassistant/sensor/hub/temperature/config"]["device_class"] == "temperature"
    assert first["homeassistant/sensor/hub/cpu/config"]["state_class"] == "measurement"
    assert {c["unique_id"] for c in first.values()} == {c["unique_id"] for c in second.values()}
    assert len({c["unique_id"] for c in first.values()}) == 4
    # The templates read readings the node really publishes; the simulated node has no throttling,
    # so that sensor reads nothing (Home Assistant shows it unknown): no made-up value.
    for name in ("cpu", "memory", "temperature"):
        value = telemetry
        for key in template_path(first[f"homeassistant/sensor/hub/{name}/config"]["value_template"]):
            value = value[key]
        assert isinstance(value, (int, float)), name
    assert "throttling" not in telemetry["readings"]


# ---------------------------------------------------------------- lamp, speaker, relays

def test_the_lamp_speaker_and_relays_become_documented_entities_of_their_nodes(broker, observer, caplog):
    async def scenario():
        lamp = daemon("lamp", broker, "lights", {"stand_in_lamp": {}, "homeassistant": FAST})
        speaker = daemon("speaker", broker, "audio", {"stand_in_speaker": {}, "homeassistant": FAST})
        relays = daemon("relays", broker, "relay", {"stand_in_relays": {},
                                                    "homeassistant": {**FAST, "via_device": "hub"}})
        await started(lamp, speaker, relays)
        found = {node: await wait_for_configs(observer, node, count) for node, count in
                 (("lamp", 1), ("speaker", 2), ("relays", 2))}
        press = found["relays"]["homeassistant/button/relays/relay_reset/config"]
        await asyncio.to_thread(observer.publish, press["command_topic"], press["payload_press"])
        switch = found["relays"]["homeassistant/switch/relays/relay_power/config"]
        await asyncio.to_thread(observer.publish, switch["command_topic"], switch["payload_off"])
        stop = found["speaker"]["homeassistant/button/speaker/sound_stop/config"]
        await asyncio.to_thread(observer.publish, stop["command_topic"], stop["payload_press"])
        recorder, player = relays.plugin("stand_in_relays"), speaker.plugin("stand_in_speaker")
        await wait_until(lambda: len(recorder.received) == 2 and player.received, what="the commands")
        result = found, recorder.received, player.received
        await stopped(lamp, speaker, relays)
        return result

    found, relay_commands, sound_commands = asyncio.run(scenario())
    assert sorted(found["lamp"]) == ["homeassistant/light/lamp/lamp/config"]
    assert sorted(found["speaker"]) == ["homeassistant/button/speaker/sound_stop/config",
                                        "homeassistant/select/speaker/sound/config"]
    assert sorted(found["relays"]) == ["homeassistant/button/relays/relay_reset/config",
                                       "homeassistant/switch/relays/relay_power/config"]
    for node in found.values():
        for topic, config in node.items():
            assert discovery_problems(topic, config) == []
            assert "entity_category" not in config   # controls, not diagnostics
    light = found["lamp"]["homeassistant/light/lamp/lamp/config"]
    assert (light["schema"], light["brightness"], light["supported_color_modes"]) == ("json", True, ["rgb"])
    assert light["effect_list"] == ["chase", "pulse", "none"]
    assert light["command_topic"] == f"{PREFIX}/homeassistant/lights/set"
    select = found["speaker"]["homeassistant/select/speaker/sound/config"]
    assert select["options"] == ["bell", "beep"]               # the 200-character name is left out
    assert select["command_topic"] == f"{PREFIX}/sound/play"
    switch = found["relays"]["homeassistant/switch/relays/relay_power/config"]
    assert (switch["state_on"], switch["state_off"], switch["optimistic"]) == ("ON", "OFF", False)
    assert found["relays"]["homeassistant/button/relays/relay_reset/config"]["device"]["via_device"] == \
        "pidaemon_picluster_hub"
    # What Home Assistant publishes for a press, a switch and a stop is the agreed command, as is.
    assert relay_commands == [("relays/press", {"relay": "reset", "user": "homeassistant"}),
                              ("relays/set", {"relay": "power", "state": "off", "user": "homeassistant"})]
    assert sound_commands == [("sound/stop", {"user": "homeassistant"})]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no entity for relay '../evil'" in w for w in warnings)
    assert any("no entity for sound 'xxx" in w for w in warnings)


def test_home_assistant_light_commands_reach_the_lamp_in_the_agreed_format(broker, observer, caplog):
    async def scenario():
        lamp = daemon("lamp", broker, "lights", {"stand_in_lamp": {}, "homeassistant": FAST})
        # A retained command (Home Assistant sends none; a stray client might) would run again at every
        # connection: refused when it comes as retained.
        command_topic = f"{PREFIX}/homeassistant/lights/set"
        await asyncio.to_thread(observer.publish, command_topic, json.dumps({"state": "ON"}), retain=True)
        await started(lamp)
        await wait_until(lambda: lamp.plugin("homeassistant").refused == 1, timeout=10, what="the retained refusal")
        await asyncio.to_thread(observer.publish, command_topic, b"", retain=True)   # cleared
        light = (await wait_for_configs(observer, "lamp", 1))["homeassistant/light/lamp/lamp/config"]
        recorded = lamp.plugin("stand_in_lamp").received

        async def send(payload):
            await asyncio.to_thread(observer.publish, light["command_topic"], payload)

        async def commands_for(payload, count):
            """Send one Home Assistant command; what reaches the lamp once `count` commands did."""
            before = len(recorded)
            await send(json.dumps(payload))
            await wait_until(lambda: len(recorded) >= before + count, timeout=10, what=str(payload))
            return [command for _, command in recorded[before:]]

        results = {}
        # The lamp shows a red pixel at half brightness: Home Assistant sees it in its own format.
        await asyncio.to_thread(observer.publish, f"{PREFIX}/lights/state", json.dumps(
            {"pixels": [[0, 0, 0], [255, 0, 0], [0, 0, 0], [0, 0, 0]], "brightness": 0.5, "effect": None,
             "on": True}), retain=True)
        await asyncio.to_thread(observer.wait_for, light["state_topic"])
        results["state"] = json.loads((await asyncio.to_thread(retained, broker.port, light["state_topic"]))[
            light["state_topic"]])
        for name, payload, count in (
                ("colour", {"state": "ON", "color": {"r": 0, "g": 255, "b": 0}, "brightness": 255}, 2),
                ("effect", {"state": "ON", "effect": "chase"}, 1), ("off", {"state": "OFF"}, 1)):
            results[name] = await commands_for(payload, count)
        # A chase runs: dimming it from Home Assistant is a brightness alone, which the lamp applies to the
        # running effect (before: the effect was sent again, without its colour: a red pulse turned white).
        await asyncio.to_thread(observer.publish, f"{PREFIX}/lights/state", json.dumps(
            {"pixels": [[0, 0, 255], [0, 0, 0], [0, 0, 0], [0, 0, 0]], "brightness": 1.0, "effect": "chase",
             "on": True}), retain=True)
        await wait_until(lambda: lamp.plugin("homeassistant").lamp.effect == "chase", what="the chase state")
        results["dim"] = await commands_for({"state": "ON", "brightness": 50}, 1)
        # Dark now: ON alone lights the lamp again with the colour it showed last.
        await asyncio.to_thread(observer.publish, f"{PREFIX}/lights/state", json.dumps(
            {"pixels": [[0, 0, 0]] * 4, "brightness": 0.5, "effect": None, "on": False}), retain=True)
        await wait_until(lambda: not lamp.plugin("homeassistant").lamp.on, what="the lamp's dark state")
        results["on"] = await commands_for({"state": "ON"}, 1)
        # Dimmed to nothing: ON alone must give light (before: a fill at brightness 0, the lamp stayed dark).
        await asyncio.to_thread(observer.publish, f"{PREFIX}/lights/state", json.dumps(
            {"pixels": [[0, 0, 0]] * 4, "brightness": 0, "effect": None, "on": False}), retain=True)
        await wait_until(lambda: lamp.plugin("homeassistant").lamp.brightness == 0, what="the lamp dimmed to 0")
        results["on_from_zero"] = await commands_for({"state": "ON"}, 2)
        # Hostile or wrong commands: refused, each with a log line, nothing reaches the lamp.
        before = len(recorded)
        bad = [b"\xff\xfe", b"not json", b"[1, 2]", json.dumps({"state": "BLINK"}),
               json.dumps({"state": "ON", "brightness": 256}), json.dumps({"state": "ON", "brightness": True}),
               json.dumps({"state": "ON", "color": {"r": -1, "g": 0, "b": 0}}),
               json.dumps({"state": "ON", "color": {"h": 10, "s": 20}}),
               json.dumps({"state": "ON", "effect": "strobe"}), json.dumps({"state": "ON", "color_temp": 300}),
               json.dumps({"state": "ON", "brightness": 9, "pad": "x" * 5000})]
        for payload in bad:
            await send(payload)
        await wait_until(lambda: lamp.plugin("homeassistant").refused == len(bad) + 1, timeout=10,
                         what="the refusals")
        results["after_refusals"] = await commands_for({"state": "OFF"}, 1)
        results["between"] = recorded[before:]
        await stopped(lamp)
        return results

    results = asyncio.run(scenario())
    tag = {"user": "homeassistant"}
    assert results["state"] == {"state": "ON", "brightness": 128, "color_mode": "rgb",
                                "color": {"r": 255, "g": 0, "b": 0}, "effect": "none"}
    assert results["colour"] == [{"command": "brightness", "value": 1.0, **tag},
                                 {"command": "fill", "r": 0, "g": 255, "b": 0, **tag}]
    assert results["effect"] == [{"command": "effect", "name": "chase", **tag}]
    assert results["off"] == [{"command": "clear", **tag}]
    assert results["dim"] == [{"command": "brightness", "value": 0.1961, **tag}]
    assert results["on"] == [{"command": "fill", "r": 0, "g": 0, "b": 255, **tag}]
    assert results["on_from_zero"] == [{"command": "brightness", "value": 1.0, **tag},
                                       {"command": "fill", "r": 0, "g": 0, "b": 255, **tag}]
    assert results["after_refusals"] == [{"command": "clear", **tag}]
    assert results["between"] == [("lights/set", {"command": "clear", **tag})]   # only the last, good one
    refusals = [r.getMessage() for r in caplog.records if "refused a light command" in r.getMessage()]
    for reason in ("not UTF-8", "not JSON", "expected a JSON object", 'state must be "ON" or "OFF"',
                   "brightness must be a whole number from 0 to 255, got 256", "color.r must be",
                   "the lamp takes r, g, b only", "effect must be one of chase, pulse, none, got 'strobe'",
                   "color_temp is not supported", "more than 4096", "retained command"):
        assert any(reason in line for line in refusals), reason


# ---------------------------------------------------------------- availability, Home Assistant's birth

def test_availability_follows_a_clean_stop_and_a_sigkill(tmp_path, broker, observer):
    """The nodes run as processes: a SIGKILLed one leaves only its last will (keepalive 2 s).

    Before: a node stopping cleanly deleted its own entities (its plugins showed `stopped`)."""
    processes = {}
    for node_id, keepalive in (("calm", 60), ("doomed", 2)):
        path = write_config(tmp_path / f"{node_id}.yaml", node_config(
            node_id, broker.url, role="server", keepalive=keepalive,
            plugins={"telemetry": {"interval": 1}, "homeassistant": {}}))
        processes[node_id] = start_node_process(path)
    try:
        topics = {}
        for node_id in ("doomed", "calm"):
            for name in ("throttling", "temperature", "memory", "cpu"):   # the order they are sent in, reversed
                config = json.loads(observer.wait_for(f"homeassistant/sensor/{node_id}/{name}/config",
                                                      timeout=20).payload)
            topics[node_id] = config["availability_topic"]
            observer.wait_for(topics[node_id], config["payload_available"], timeout=10)
        mark = len(observer.messages)
        # At once, while the node still handles what its connection brought (its own info).
        processes["calm"].send_signal(signal.SIGTERM)
        processes["doomed"].send_signal(signal.SIGKILL)
        assert processes["calm"].wait(timeout=15) == 0
        processes["doomed"].wait(timeout=15)
        for node_id in processes:
            observer.wait_for(topics[node_id], "offline", since=mark, timeout=2 * 1.5 + 8)
        # The entities stay in Home Assistant, unavailable: a stop is no reason to delete them.
        left = retained(broker.port)
        assert sorted(left) == sorted(f"homeassistant/sensor/{node_id}/{name}/config" for node_id in processes
                                      for name in ("cpu", "memory", "temperature", "throttling"))
        assert all(left.values())
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def test_discovery_is_sent_again_when_home_assistant_comes_online(broker, observer):
    async def scenario():
        server = daemon("hub", broker, "server", {"telemetry": {"interval": 1}, "homeassistant": FAST})
        await started(server)
        await wait_for_configs(observer, "hub", 4)
        mark = len(observer.messages)
        await asyncio.to_thread(observer.publish, "homeassistant/status", "online")
        again = await wait_for_configs(observer, "hub", 4, since=mark)
        await stopped(server)
        return again

    again = asyncio.run(scenario())
    assert sorted(again) == [f"homeassistant/sensor/hub/{name}/config"
                             for name in ("cpu", "memory", "temperature", "throttling")]


# ---------------------------------------------------------------- who offers what

def test_workers_offer_nothing_unless_each_opts_in_and_the_feature_switched_off_offers_nothing(broker, observer):
    """A hundred workers with the plugin at its defaults: no entity, no subscription, no answer to
    Home Assistant's birth; so a thousand would not flood Home Assistant either."""
    async def scenario():
        workers = [daemon(f"w{i:03d}", broker, "worker", {"homeassistant": FAST, "telemetry": {"interval": 5}})
                   for i in range(100)]
        keen = daemon("keen", broker, "worker", {"telemetry": {"interval": 5},
                                                 "homeassistant": {**FAST, "telemetry_entities": True}})
        dark_lamp = daemon("darklamp", broker, "lights", {"stand_in_lamp": {}, "homeassistant": {"enabled": False}})
        quiet = daemon("quiet", broker, "server", {"telemetry": {}, "homeassistant": {"telemetry_entities": False}})
        await started(*workers, dark_lamp, quiet, keen)
        await wait_for_configs(observer, "keen", 4)
        left = await asyncio.to_thread(retained, broker.port)
        mark = len(observer.messages)
        await asyncio.to_thread(observer.publish, "homeassistant/status", "online")
        await wait_for_configs(observer, "keen", 4, since=mark)
        await asyncio.sleep(FAST["resend_spread"] + 0.5)   # longer than any node's pause before resending
        answers = {m.topic.split("/")[2] for m in observer.messages[mark:] if m.topic.startswith("homeassistant/")
                   and m.topic.endswith("/config")}
        subscribed = {node.id for node in (*workers, quiet) for plugin, _ in node.hooks.subscriptions()
                      if plugin == "homeassistant"}
        everything = {m.topic for m in observer.messages}
        await stopped(*workers, dark_lamp, quiet, keen)
        return left, answers, subscribed, everything

    left, answers, subscribed, everything = asyncio.run(scenario())
    assert {topic.split("/")[2] for topic in left} == {"keen"}
    assert answers == {"keen"}
    assert subscribed == set()
    assert f"{PREFIX}/homeassistant/lights/state" not in everything


def test_an_entity_no_longer_offered_is_deleted_from_home_assistant(broker, observer):
    """Switching a sensor off publishes an empty retained config: Home Assistant deletes the entity."""
    async def scenario():
        state_dir = tempfile.mkdtemp(prefix="shrinking-", dir=STATE_ROOT)
        first = daemon("shrinking", broker, "server", {"telemetry": {}, "homeassistant": {
            **FAST, "sensors": ["cpu", "memory"]}}, state_dir=state_dir)
        await started(first)
        await wait_for_configs(observer, "shrinking", 2)
        await stopped(first)
        mark = len(observer.messages)
        second = daemon("shrinking", broker, "server", {"telemetry": {}, "homeassistant": {
            **FAST, "sensors": ["cpu"]}}, state_dir=state_dir)
        await started(second)
        removal = await asyncio.to_thread(observer.wait_for, "homeassistant/sensor/shrinking/memory/config", b"",
                                          since=mark)
        left = await asyncio.to_thread(retained, broker.port)
        await stopped(second)
        return removal, left

    removal, left = asyncio.run(scenario())
    assert removal.payload == b""
    assert sorted(left) == ["homeassistant/sensor/shrinking/cpu/config"]


def test_a_plugin_adds_its_own_entity_to_its_nodes_device(broker, observer):
    async def scenario():
        node = daemon("airy", broker, "worker", {"co2_sensor": {}, "homeassistant": FAST})
        await started(node)
        found = await wait_for_configs(observer, "airy", 1)
        await stopped(node)
        return found

    found = asyncio.run(scenario())
    assert sorted(found) == ["homeassistant/sensor/airy/co2/config"]   # a worker: no telemetry sensors
    config = found["homeassistant/sensor/airy/co2/config"]
    assert discovery_problems("homeassistant/sensor/airy/co2/config", config) == []
    assert config["device"]["identifiers"] == ["pidaemon_picluster_airy"]
    assert config["availability_topic"] == f"{PREFIX}/nodes/airy/status"


def test_the_documentation_check_refuses_an_unknown_key_a_missing_one_and_a_bad_device():
    """The check the tests above rely on does fail: a misspelt key, which Home Assistant would drop
    silently, a missing required key, an undocumented device key."""
    good = {"name": "Press reset", "cmd_t": "picluster/relays/press", "pl_prs": "{}", "uniq_id": "x",
            "dev": {"ids": ["pidaemon_picluster_relays"], "via_device": "pidaemon_picluster_hub"}}
    assert discovery_problems("homeassistant/button/relays/relay_reset/config", good) == []
    assert discovery_problems("homeassistant/button/relays/relay_reset/config", {**good, "payload_pres": "{}"}) == [
        "homeassistant/button/relays/relay_reset/config: unknown key payload_pres"]
    missing = {k: v for k, v in good.items() if k != "cmd_t"}
    assert discovery_problems("homeassistant/button/relays/relay_reset/config", missing) == [
        "homeassistant/button/relays/relay_reset/config: missing required command_topic"]
    assert discovery_problems("homeassistant/button/relays/relay_reset/config",
                              {**good, "dev": {"ids": ["a"], "firmware": "1"}}) == [
        "homeassistant/button/relays/relay_reset/config: device has unknown key firmware"]
    assert discovery_problems("homeassistant/sensor/hub/cpu/config",
                              {"state_topic": "t", "entity_category": "config"}) == [
        "homeassistant/sensor/hub/cpu/config: a sensor's entity_category must be diagnostic"]


# ---------------------------------------------------------------- the templates, rendered

def test_every_template_renders_what_home_assistant_should_show():
    """Home Assistant renders these with Jinja2 (its own sandboxed environment adds filters these do not
    use); rendered here with Jinja2 itself against the payloads the nodes publish, no Home Assistant."""
    jinja2 = pytest.importorskip("jinja2")
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)

    def render(template: str, payload=None, value: str | None = None) -> str:
        return environment.from_string(template).render(value_json=payload, value=value)

    sensors = {e.object_id: e.config for e in telemetry_sensors("picluster/nodes/pi-1/telemetry",
                                                                tuple(SENSORS), None)}
    reading = {"readings": {"cpu_percent": 12.5, "memory": {"percent": 40.1}, "cpu_temperature": 51.2,
                            "throttling": {"raw": 327680, "under_voltage_now": False}}}
    assert {name: render(config["value_template"], reading) for name, config in sensors.items()} == {
        "cpu": "12.5", "memory": "40.1", "temperature": "51.2", "throttling": "327680"}
    # A reading the machine does not have: None, which Home Assistant shows as unknown.
    assert {render(config["value_template"], {"readings": {}}) for config in sensors.values()} == {"None"}
    attributes = render(sensors["throttling"]["json_attributes_template"], reading)
    assert json.loads(attributes) == {"raw": 327680, "under_voltage_now": False}

    info = {"sounds": ["bell", "beep"], "relays": [{"name": "supply", "mode": "switch"}]}
    select = next(e.config for e in sound_entities(info, "p/play", "p/stop", "p/state", "homeassistant").entities
                  if e.component == "select")
    assert json.loads(render(select["command_template"], value="bell")) == {"name": "bell", "user": "homeassistant"}
    assert render(select["value_template"], {"playing": "bell"}) == "bell"
    assert render(select["value_template"], {"playing": None}) == "None"
    switch = relay_entities(info, "p/press", "p/set", "p/state", "homeassistant").entities[0].config
    assert render(switch["value_template"], {"relays": {"supply": {"active": True}}}) == "ON"
    assert render(switch["value_template"], {"relays": {"supply": {"active": False}}}) == "OFF"
    assert render(switch["value_template"], {"relays": {}}) == "None"
