"""The relay plugin: solenoids on the server's reset and power buttons, pressed within bounds.

RPi.GPIO imports only on a Raspberry Pi, so the `gpio` backend runs here
against a stand-in with the same API (tests/support/gpio_standin/RPi/GPIO.py:
setmode, setup(pin, OUT, initial=...), output, cleanup, BCM/BOARD,
HIGH/LOW, OUT), which records each pin level with its `time.monotonic()`;
for a daemon run as a child process it also writes them to a file, so that
the test sees the pins of a process it killed.  It is importable as
`RPi.GPIO` only in these tests (put on sys.path, or on PYTHONPATH for a
child).  Everything else is real: mosquitto, the shipped ACL, the daemon
and its command line.  Durations are checked against the times the stand-in
recorded, with generous bounds, never against the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from pidaemon.cli import main as pidaemon_main
from tests.support.distributions import write_distribution
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.nodes import make_daemon, start_node_process, write_config
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "support" / "gpio_standin"
NOT_AUTHORIZED = 0x87
RESET_PIN, POWER_PIN, SUPPLY_PIN = 17, 27, 22
RELAYS = {
    # active low: idle is a high pin
    "reset": {"pin": RESET_PIN, "active": "low", "max_press": 5, "default_press": 0.3, "min_interval": 2},
    "power": {"pin": POWER_PIN, "active": "high", "max_press": 6, "default_press": 0.5, "min_interval": 0},
    "supply": {"pin": SUPPLY_PIN, "active": "high", "mode": "switch", "min_interval": 0},
}
HIGH, LOW = 1, 0


@pytest.fixture
def gpio():
    """The RPi.GPIO stand-in, importable as `RPi.GPIO` in this process for this test only."""
    sys.path.insert(0, str(STANDIN))
    for name in ("RPi", "RPi.GPIO"):
        sys.modules.pop(name, None)
    import RPi.GPIO as module
    assert module.VERSION == "stand-in"
    yield module
    sys.path.remove(str(STANDIN))
    for name in ("RPi", "RPi.GPIO"):
        sys.modules.pop(name, None)


def levels(changes, pin: int) -> list[int]:
    """The levels `pin` went through, in order (a level set again, as at shutdown, counted once)."""
    seen: list[int] = []
    for change in changes:
        if change["pin"] == pin and (not seen or seen[-1] != change["level"]):
            seen.append(change["level"])
    return seen


def outputs(changes, pin: int) -> list[dict]:
    return [c for c in changes if c["pin"] == pin and c["call"] == "output"]


def relay_node(broker, state_dir: Path | None = None, relays=RELAYS, backend="gpio", **kw):
    node = make_daemon("relay-1", broker.url, role="relay",
                       plugins={"relay": {"backend": backend, "relays": relays}}, **kw)
    if state_dir is not None:
        node.config["node"]["state_dir"] = str(state_dir)
    return node


async def next_message(observer, topic: str, since: int, timeout: float = 10) -> dict:
    message = await asyncio.to_thread(observer.wait_for, topic, None, timeout, since)
    return json.loads(message.payload)


async def command(observer, topic: str, payload, retain: bool = False) -> int:
    """Publish a command; the index of the observer's messages from which its effects appear."""
    since = len(observer.messages)
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    await asyncio.to_thread(observer.publish, f"picluster/relays/{topic}", data, 1, retain)
    return since


# ---------------------------------------------------------------- presses


def test_a_press_energises_the_relay_for_its_duration_then_releases_it(broker, observer, gpio):
    async def scenario():
        node = relay_node(broker)
        await node.start()
        try:
            state = await next_message(observer, "picluster/relays/state", 0)
            since = await command(observer, "press", {"relay": "reset", "duration": 0.4, "user": "ada", "job": "j1"})
            pressed = await next_message(observer, "picluster/relays/pressed", since)
            released = lambda state: not state["relays"]["reset"]["active"] and state["relays"]["reset"]["last_press"]
            await asyncio.to_thread(wait_for_state, observer, released, since)
            states = [json.loads(m.payload) for m in observer.messages[since:] if m.topic == "picluster/relays/state"]
            return state, pressed, states, node.info()
        finally:
            await node.shutdown()

    first_state, pressed, states, info = asyncio.run(scenario())
    # Idle from the start (high: reset is active low), energised once, released once.
    assert gpio.changes[0]["call"] == "setup" and levels(gpio.changes, RESET_PIN) == [HIGH, LOW, HIGH]
    assert first_state["relays"]["reset"] == {"active": False, "mode": "button", "last_press": None}
    active, idle = [c["time"] for c in outputs(gpio.changes, RESET_PIN)[:2]]
    assert pressed["relay"] == "reset" and pressed["by"] == "ada" and isinstance(pressed["at"], float)
    assert pressed["duration"] >= 0.4                      # not released before what was asked (0.5 s)
    assert abs(pressed["duration"] - (idle - active)) < 0.5  # the reported press is the one the pin saw
    assert [s["relays"]["reset"]["active"] for s in states][:2] == [True, False]
    assert states[-1]["relays"]["reset"]["last_press"] == {"by": "ada", "at": pressed["at"],
                                                           "duration": pressed["duration"]}
    assert {"name": "reset", "mode": "button"} in info["relays"] and "relay" in info["capabilities"]
    # The other relays never moved: power idle low (active high), the switch idle low.
    assert levels(gpio.changes, POWER_PIN) == [LOW]


def test_a_press_over_max_press_is_refused_and_never_reaches_the_pin(broker, observer, gpio):
    """Refused rather than clamped: a 60 s hold of a power button is a forced power-off, not a longer press."""
    async def scenario():
        node = relay_node(broker)
        await node.start()
        try:
            await next_message(observer, "picluster/relays/state", 0)
            since = await command(observer, "press", {"relay": "power", "duration": 60, "user": "mallory"})
            return await next_message(observer, "picluster/relays/refused", since), node.plugin("relay").pressed
        finally:
            await node.shutdown()

    refusal, pressed = asyncio.run(scenario())
    assert refusal["by"] == "mallory" and '"duration": 60' in refusal["request"]
    assert "max_press" in refusal["reason"] and "60" in refusal["reason"]
    assert pressed == [] and levels(gpio.changes, POWER_PIN) == [LOW]


def test_min_interval_holds_across_a_restart_then_lets_the_next_press_through(broker, observer, gpio, tmp_path):
    async def scenario():
        node = relay_node(broker, tmp_path / "state")
        await node.start()
        try:
            await next_message(observer, "picluster/relays/state", 0)
            since = await command(observer, "press", {"relay": "reset", "duration": 0.1})
            first = await next_message(observer, "picluster/relays/pressed", since)
            since = await command(observer, "press", {"relay": "reset", "duration": 0.1})
            too_soon = await next_message(observer, "picluster/relays/refused", since)
        finally:
            await node.shutdown()
        node = relay_node(broker, tmp_path / "state")   # a restart does not forget the last press
        await node.start()
        try:
            await wait_until(lambda: node.bus.connected, 10, what="restarted node connected")
            since = await command(observer, "press", {"relay": "reset", "duration": 0.1})
            after_restart = await next_message(observer, "picluster/relays/refused", since)
            board = node.plugin("relay").board
            await wait_until(lambda: board.wait_before("reset", board.relays["reset"]) == 0, 10,
                             what="min_interval over")
            since = await command(observer, "press", {"relay": "reset", "duration": 0.1})
            later = await next_message(observer, "picluster/relays/pressed", since)
            return first, too_soon, after_restart, later
        finally:
            await node.shutdown()

    first, too_soon, after_restart, later = asyncio.run(scenario())
    assert first["by"] == "unknown"
    for refusal in (too_soon, after_restart):
        assert "min_interval" in refusal["reason"] and "try again in" in refusal["reason"]
    assert later["relay"] == "reset" and later["at"] >= first["at"] + 2
    assert levels(gpio.changes, RESET_PIN) == [HIGH, LOW, HIGH, LOW, HIGH]


def test_a_switch_stays_as_set_and_a_button_is_not_a_switch(broker, observer, gpio):
    async def scenario():
        node = relay_node(broker)
        await node.start()
        seen = {}
        try:
            await next_message(observer, "picluster/relays/state", 0)
            since = await command(observer, "set", {"relay": "supply", "state": "on", "user": "ada"})
            await wait_until(lambda: gpio.levels[SUPPLY_PIN] == HIGH, 10, what="supply on")
            seen["on"] = await next_message(observer, "picluster/relays/state", since)
            since = await command(observer, "set", {"relay": "supply", "state": "off", "user": "ada"})
            await wait_until(lambda: gpio.levels[SUPPLY_PIN] == LOW, 10, what="supply off")
            since = await command(observer, "press", {"relay": "supply"})
            seen["press_a_switch"] = await next_message(observer, "picluster/relays/refused", since)
            since = await command(observer, "set", {"relay": "reset", "state": "on"})
            seen["set_a_button"] = await next_message(observer, "picluster/relays/refused", since)
            return seen
        finally:
            await node.shutdown()

    seen = asyncio.run(scenario())
    assert seen["on"]["relays"]["supply"]["active"] is True
    assert seen["on"]["relays"]["supply"]["last_change"]["state"] == "on"
    assert seen["on"]["relays"]["supply"]["last_change"]["by"] == "ada"
    assert levels(gpio.changes, SUPPLY_PIN) == [LOW, HIGH, LOW]
    assert "supply is a switch" in seen["press_a_switch"]["reason"]
    assert "reset is a button" in seen["set_a_button"]["reason"]
    assert levels(gpio.changes, RESET_PIN) == [HIGH]


BAD_COMMANDS = [
    ("press", b"press reset", "not JSON"),
    ("press", b"\xff\xfe", "not UTF-8"),
    ("press", b"[\"reset\"]", "must be a JSON object"),
    ("press", {"relay": "nuke"}, "no relay named 'nuke'"),
    ("press", {"relay": 5}, "relay must be a relay's name"),
    ("press", {"duration": 1}, "relay must be a relay's name"),
    ("press", {"relay": "power", "duration": "1"}, "duration must be a number"),
    ("press", {"relay": "power", "duration": True}, "duration must be a number"),
    ("press", b'{"relay": "power", "duration": 1e400}', "duration must be a number"),
    ("press", {"relay": "power", "duration": -1}, "above 0"),
    ("press", {"relay": "power", "duration": 0}, "above 0"),
    ("press", {"relay": "power", "user": 7}, "user must be a name"),
    ("press", b"{" * 5000, "at most 4096"),
    ("set", {"relay": "supply", "state": "maybe"}, 'state must be "on" or "off"'),
    ("set", {"relay": "supply", "state": True}, 'state must be "on" or "off"'),
]


def test_bad_commands_are_refused_with_a_reason_and_the_node_keeps_working(broker, observer, gpio):
    async def scenario():
        node = relay_node(broker)
        await node.start()
        try:
            await next_message(observer, "picluster/relays/state", 0)
            refusals = []
            for topic, payload, _ in BAD_COMMANDS:
                since = await command(observer, topic, payload)
                refusals.append(await next_message(observer, "picluster/relays/refused", since))
            since = await command(observer, "press", {"relay": "power", "duration": 0.1, "user": "ada"})
            pressed = await next_message(observer, "picluster/relays/pressed", since)
            return refusals, pressed, node.status()
        finally:
            await node.shutdown()

    refusals, pressed, status = asyncio.run(scenario())
    for (topic, payload, reason), refusal in zip(BAD_COMMANDS, refusals):
        assert reason in refusal["reason"], (payload, refusal)
        assert len(refusal["request"]) <= 201
    assert pressed["relay"] == "power" and pressed["by"] == "ada"
    assert status["plugins"]["relay"]["state"] == "running"
    assert levels(gpio.changes, POWER_PIN) == [LOW, HIGH, LOW]
    assert levels(gpio.changes, SUPPLY_PIN) == [LOW]


def test_a_retained_press_is_not_carried_out_at_start(broker, observer, gpio):
    """A press left retained on the broker (by mistake or malice) would press again at every start."""
    async def scenario():
        await command(observer, "press", {"relay": "reset", "duration": 0.2}, retain=True)
        node = relay_node(broker)
        await node.start()
        try:
            return await next_message(observer, "picluster/relays/refused", 0), node.plugin("relay").pressed
        finally:
            await node.shutdown()

    refusal, pressed = asyncio.run(scenario())
    assert "retained" in refusal["reason"] and pressed == []
    assert levels(gpio.changes, RESET_PIN) == [HIGH]


def test_a_retained_press_is_refused_while_the_node_is_connected_too(broker, observer, gpio):
    """Before: a broker clears the retain flag for subscribers already connected, so a retained press
    sent while the node was online was carried out (and stayed on the broker for the next start).
    Under MQTT v5 the command topics are subscribed with retain-as-published."""
    async def scenario():
        node = relay_node(broker)
        await node.start()
        try:
            await next_message(observer, "picluster/relays/state", 0)
            since = await command(observer, "press", {"relay": "reset", "duration": 0.2}, retain=True)
            refusal = await next_message(observer, "picluster/relays/refused", since)
            cleared = await command(observer, "press", b"", retain=True)   # mosquitto_pub -r -n: nothing to do
            await command(observer, "press", {"relay": "power", "duration": 0.1})
            pressed = await next_message(observer, "picluster/relays/pressed", cleared)
            refusals = [m for m in observer.messages[cleared:] if m.topic == "picluster/relays/refused"]
            return refusal, pressed, refusals
        finally:
            await node.shutdown()

    refusal, pressed, refusals = asyncio.run(scenario())
    assert "retained command is refused" in refusal["reason"]
    assert pressed["relay"] == "power" and refusals == []
    assert levels(gpio.changes, RESET_PIN) == [HIGH]


def test_a_press_that_outlives_its_duration_is_released_by_the_watchdog(broker, observer, gpio):
    """The event loop, which should end the press, is blocked for 2 s; the relay goes idle anyway."""
    async def scenario():
        node = relay_node(broker)
        await node.start()
        try:
            await next_message(observer, "picluster/relays/state", 0)
            since = await command(observer, "press", {"relay": "power", "duration": 0.2})
            await wait_until(lambda: gpio.levels.get(POWER_PIN) == HIGH, 10, what="power energised")
            time.sleep(2)   # a plugin blocking the loop (the bug this guards against)
            unblocked = time.monotonic()
            pressed = await next_message(observer, "picluster/relays/pressed", since)
            return unblocked, pressed, node.plugin("relay").board.watchdog_releases
        finally:
            await node.shutdown()

    unblocked, pressed, releases = asyncio.run(scenario())
    active, idle = [c["time"] for c in outputs(gpio.changes, POWER_PIN)[:2]]
    assert idle < unblocked and releases == 1
    assert 0.2 <= idle - active < 1.5 and abs(pressed["duration"] - (idle - active)) < 0.05


# ---------------------------------------------------------------- the daemon as a process


def process_config(tmp_path: Path, broker_url: str) -> Path:
    return write_config(tmp_path / "relay.yaml", {
        "node": {"role": "relay", "id": "relay-1", "state_dir": str(tmp_path / "state")},
        "mqtt": {"broker": broker_url, "keepalive": 5, "reconnect": {"min_delay": 0.1, "max_delay": 1.0}},
        "lifecycle": {"shutdown_timeout": 2},
        "plugins": {"relay": {"backend": "gpio", "required": True, "relays": RELAYS}},
    })


def standin_env(pins_file: Path) -> dict:
    path = os.pathsep.join([str(STANDIN), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"PYTHONPATH": path, "GPIO_STANDIN_LOG": str(pins_file)}


def recorded(pins_file: Path) -> list[dict]:
    return [json.loads(line) for line in pins_file.read_text().splitlines()] if pins_file.exists() else []


def wait_for_pin(pins_file: Path, pin: int, level: int, pid: int, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for change in recorded(pins_file):
            if (change["pid"], change["pin"], change["level"], change["call"]) == (pid, pin, level, "output"):
                return change
        time.sleep(0.02)
    raise TimeoutError(f"pin {pin} never {level} in process {pid}: {recorded(pins_file)}")


def wait_for_state(observer, condition, since: int = 0, timeout: float = 10) -> dict:
    """The first relays/state from index `since` that meets `condition`."""
    deadline = time.monotonic() + timeout
    while True:
        for message in observer.messages[since:]:
            if message.topic == "picluster/relays/state" and condition(state := json.loads(message.payload)):
                return state
        if time.monotonic() > deadline:
            raise TimeoutError("no such relays/state")
        time.sleep(0.02)


def stop(process) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(10)


def test_after_a_crash_mid_press_the_next_start_releases_the_relay_before_anything_else(broker, observer, tmp_path):
    pins = tmp_path / "pins.jsonl"
    config = process_config(tmp_path, broker.url)
    first = start_node_process(config, env=standin_env(pins), log_path=tmp_path / "first.log")
    second = None
    try:
        observer.wait_for("picluster/nodes/relay-1/status", "online", timeout=20)
        observer.publish("picluster/relays/press", json.dumps({"relay": "reset", "duration": 4}))
        wait_for_pin(pins, RESET_PIN, LOW, first.pid)
        wait_for_state(observer, lambda state: state["relays"]["reset"]["active"])
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # Nothing released it: the pin is still energised.
        assert [(c["call"], c["level"]) for c in recorded(pins) if c["pin"] == RESET_PIN][-1] == ("output", LOW)
        since = len(observer.messages)
        second = start_node_process(config, env=standin_env(pins), log_path=tmp_path / "second.log")
        online = observer.wait_for("picluster/nodes/relay-1/status", "online", timeout=20, since=since)
        state = json.loads(observer.wait_for("picluster/relays/state", since=since).payload)
    finally:
        stop(second) if second else None
        stop(first)
    restarted = [c for c in recorded(pins) if c["pid"] == second.pid]
    # Its first act on the pins: every relay set up as an output at its idle level (reset: high), before the
    # node was online.
    setup = {c["pin"]: c for c in restarted[:3]}
    assert {c["call"] for c in setup.values()} == {"setup"} and setup[RESET_PIN]["level"] == HIGH
    assert setup[RESET_PIN]["time"] < online.timestamp
    assert all(c["level"] != LOW for c in restarted if c["pin"] == RESET_PIN)
    assert state["relays"]["reset"]["active"] is False
    # The press the crash cut short still counts for min_interval.
    assert state["relays"]["reset"]["last_press"]["duration"] == 4


def test_sigterm_mid_press_releases_the_relay_before_the_daemon_exits(broker, observer, tmp_path):
    pins = tmp_path / "pins.jsonl"
    process = start_node_process(process_config(tmp_path, broker.url), env=standin_env(pins))
    try:
        observer.wait_for("picluster/nodes/relay-1/status", "online", timeout=20)
        observer.publish("picluster/relays/press", json.dumps({"relay": "power", "duration": 5}))
        active = wait_for_pin(pins, POWER_PIN, HIGH, process.pid)
        process.send_signal(signal.SIGTERM)
        code = process.wait(10)
    finally:
        stop(process)
    power = [c for c in recorded(pins) if c["pin"] == POWER_PIN]
    assert code == 0
    assert (power[-1]["call"], power[-1]["level"]) == ("output", LOW)
    assert power[-1]["time"] - active["time"] < 5   # released at the stop, before the 5 s asked were over
    assert "power released after" in Path(process.log_path).read_text()


# ---------------------------------------------------------------- who may command


ACL_USERS = {"server": "server-pw", "worker": "worker-pw", "relay": "relay-pw", "operator": "operator-pw"}


@pytest.fixture
def acl_broker(tmp_path):
    """mosquitto with the shipped configuration, users and ACL (config/mosquitto.acl)."""
    passwd = tmp_path / "passwd"
    for user, password in ACL_USERS.items():
        flags = ["-c"] if not passwd.exists() else []
        subprocess.run(["mosquitto_passwd", "-b", *flags, str(passwd), user, password], check=True)
    broker = Mosquitto(tmp_path / "broker", cluster_config=ROOT / "config" / "mosquitto.conf",
                       extra=f"password_file {passwd}\nacl_file {ROOT / 'config' / 'mosquitto.acl'}\n").start()
    yield broker
    broker.stop()


class AclClient:
    """A client of broker user `user` (None: anonymous) that reads picluster/relays/# and
    returns the broker's answer (PUBACK reason code) to each of its QoS 1 publishes."""

    def __init__(self, port: int, user: str | None, client_id: str):
        self.seen: list[str] = []
        self._answers: dict[int, int] = {}
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if user:
            self.client.username_pw_set(user, ACL_USERS[user])
        self.client.on_connect = lambda c, *_: c.subscribe("picluster/relays/#", 1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda c, u, message: self.seen.append(message.topic)
        self.client.on_publish = lambda c, u, mid, code, properties: self._answers.__setitem__(mid, code.value)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError(f"{user or 'anonymous'}: not subscribed within 10 s")

    def publish(self, topic: str, payload: dict) -> int:
        info = self.client.publish(f"picluster/relays/{topic}", json.dumps(payload), qos=1)
        info.wait_for_publish(10)
        return self._answers.pop(info.mid)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


FORBIDDEN = {"press": {"relay": "power", "duration": 0.1, "user": "mallory"},
             "set": {"relay": "supply", "state": "on", "user": "mallory"},
             "pressed": {"relay": "power", "by": "ada", "at": 1.0, "duration": 0.1},
             "state": {"relays": {}}}


def test_only_the_server_and_the_operator_may_command_the_relays(acl_broker, tmp_path):
    async def scenario():
        node = relay_node(acl_broker, tmp_path / "state", backend="sim", username="relay", password="relay-pw")
        await node.start()
        plugin = node.plugin("relay")
        clients = {who: await asyncio.to_thread(AclClient, acl_broker.port, who, client_id) for who, client_id in
                   (("worker", "worker-9"), (None, "stranger"), ("operator", "ada-laptop"), ("server", "server"))}
        answers = {}
        try:
            await wait_until(lambda: node.bus.connected, 10, what="relay node connected")
            for who in ("worker", None):
                for topic, payload in FORBIDDEN.items():
                    answers[who, topic] = await asyncio.to_thread(clients[who].publish, topic, payload)
            operator = await asyncio.to_thread(clients["operator"].publish, "press",
                                               {"relay": "power", "duration": 0.1, "user": "ada"})
            await wait_until(lambda: plugin.pressed, 10, what="the operator's press")
            server = await asyncio.to_thread(clients["server"].publish, "set",
                                             {"relay": "supply", "state": "on", "user": "server"})
            await wait_until(lambda: plugin.board.active["supply"], 10, what="the server's switch on")
            await wait_until(lambda: "picluster/relays/pressed" in clients["operator"].seen, 10,
                             what="the operator sees the press")
            return answers, operator, server, list(plugin.pressed), plugin.board.history, clients[None].seen
        finally:
            for client in clients.values():
                client.close()
            await node.shutdown()

    answers, operator, server, pressed, history, anonymous_saw = asyncio.run(scenario())
    assert answers == {key: NOT_AUTHORIZED for key in answers}   # workers and anonymous clients: refused
    assert operator == 0 and server == 0
    assert [(p["relay"], p["by"]) for p in pressed] == [("power", "ada")]
    assert history["supply"]["by"] == "server"
    assert set(anonymous_saw) <= {"picluster/relays/state"}    # who pressed what is not public


# ---------------------------------------------------------------- configuration


def test_config_check_warns_about_relays_on_the_server_and_checks_their_bounds(tmp_path, capsys):
    server = write_config(tmp_path / "server.yaml", {
        "node": {"role": "server", "state_dir": str(tmp_path)},
        "plugins": {"relay": {"relays": {"reset": {"pin": 17}}}}})
    bad = write_config(tmp_path / "bad.yaml", {
        "node": {"role": "relay", "state_dir": str(tmp_path)},
        "plugins": {"relay": {"relays": {"reset": {"pin": 17, "max_press": 1, "default_press": 2},
                                         "power": {"pin": 17}}}}})
    codes = [pidaemon_main(["config", "check", str(path)]) for path in (ROOT / "config" / "relay.yaml", server, bad)]
    out, err = capsys.readouterr()
    assert codes == [0, 0, 2]
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{server}:" in warnings[0] and "relay plugin on the server" in warnings[0]
    assert f"{bad}:" in err and "plugins.relay.relays.reset.default_press: 2 s is over max_press (1 s)" in err
    assert ".pin: pin 17 is also relay" in err and "2 errors in the configuration" in err


# ---------------------------------------------------------------- the command line, no broker


def press_command(config: Path, pins: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pidaemon", "relay", "press", *args, "-c", str(config), "--by", "bob"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **standin_env(pins)})


def test_relay_press_on_the_command_line_needs_no_broker(tmp_path):
    pins = tmp_path / "pins.jsonl"
    config = process_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}")   # nothing listens there
    pressed = press_command(config, pins, "reset", "--duration", "0.3")
    too_soon = press_command(config, pins, "reset")
    too_long = press_command(config, pins, "power", "--duration", "60")
    unknown = press_command(config, pins, "nuke")
    assert (pressed.returncode, pressed.stderr) == (0, "") and pressed.stdout.startswith("pressed reset for 0.3")
    assert too_soon.returncode == 1 and "min_interval" in too_soon.stderr
    assert too_long.returncode == 1 and "max_press" in too_long.stderr
    assert unknown.returncode == 1 and "no relay named 'nuke'" in unknown.stderr
    changes = recorded(pins)
    assert changes[0]["call"] == "setup" and levels(changes, RESET_PIN) == [HIGH, LOW, HIGH]   # pressed once
    assert levels(changes, POWER_PIN) == [LOW]
    active, idle = [c["time"] for c in outputs(changes, RESET_PIN)[:2]]
    assert 0.3 <= idle - active                     # held at least what was asked
    history = json.loads((tmp_path / "state" / "relays.json").read_text())
    assert history["reset"]["by"] == "bob (pidaemon relay press)"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as `sudo pidaemon relay press` has")
def test_a_press_by_root_leaves_the_state_files_to_the_daemons_user(tmp_path):
    """Before: `sudo pidaemon relay press` left relays.lock (mode 600) and relays.json owned by root in the
    daemon's state directory, and the daemon, running as its own user, could no longer take the lock."""
    pins = tmp_path / "pins.jsonl"
    config = process_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}")
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)   # nobody: the daemon's user
    pressed = press_command(config, pins, "reset", "--duration", "0.1")
    assert pressed.returncode == 0, pressed.stderr
    owners = {path.name: (path.stat().st_uid, path.stat().st_gid) for path in state.iterdir()}
    assert owners == {"relays.lock": (65534, 65534), "relays.json": (65534, 65534)}


def test_relay_press_asks_the_running_daemon_that_holds_the_relays(broker, observer, gpio, tmp_path):
    pins = tmp_path / "pins.jsonl"
    config = process_config(tmp_path, broker.url)

    async def scenario():
        node = relay_node(broker, tmp_path / "state")
        await node.start()
        try:
            await next_message(observer, "picluster/relays/state", 0)
            since = len(observer.messages)
            result = await asyncio.to_thread(press_command, config, pins, "power", "--duration", "0.2")
            published = await next_message(observer, "picluster/relays/pressed", since)
            refused = await asyncio.to_thread(press_command, config, pins, "power", "--duration", "60")
            return result, published, refused
        finally:
            await node.shutdown()

    result, published, refused = asyncio.run(scenario())
    assert result.returncode == 0 and "by the running daemon" in result.stdout
    assert published["by"] == "bob (pidaemon relay press)" and published["duration"] >= 0.2
    assert refused.returncode == 1 and "max_press" in refused.stderr
    # The daemon drove the pins (this process's stand-in); the command line never touched them.
    assert recorded(pins) == []
    assert levels(gpio.changes, POWER_PIN) == [LOW, HIGH, LOW]


def test_ctrl_c_on_a_press_the_daemon_makes_releases_the_relay_at_once(broker, observer, gpio, tmp_path):
    """Before: the command line exited 130 without a word and the daemon held power for the whole 5 s
    (about 5 s held forces the server off)."""
    config = process_config(tmp_path, broker.url)

    async def scenario():
        node = relay_node(broker, tmp_path / "state")
        await node.start()
        try:
            await next_message(observer, "picluster/relays/state", 0)
            since = len(observer.messages)
            command_line = subprocess.Popen([sys.executable, "-m", "pidaemon", "relay", "press", "power",
                                             "--duration", "5", "-c", str(config)], stderr=subprocess.PIPE, text=True)
            try:
                await wait_until(lambda: levels(gpio.changes, POWER_PIN)[-1:] == [HIGH], 30, what="power pressed")
                command_line.send_signal(signal.SIGINT)
                code = await asyncio.to_thread(command_line.wait, 10)
            finally:
                if command_line.poll() is None:
                    command_line.kill()
            published = await next_message(observer, "picluster/relays/pressed", since)
            return code, command_line.stderr.read(), published
        finally:
            await node.shutdown()

    code, stderr, published = asyncio.run(scenario())
    assert code == 130 and "interrupted: the running daemon releases power" in stderr
    assert published["relay"] == "power" and published["duration"] < 5   # cut short of the 5 s asked
    assert levels(gpio.changes, POWER_PIN) == [LOW, HIGH, LOW]


def test_sigterm_during_a_command_line_press_releases_the_relay(tmp_path):
    pins = tmp_path / "pins.jsonl"
    config = process_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}")
    command_line = subprocess.Popen([sys.executable, "-m", "pidaemon", "relay", "press", "power", "--duration", "5",
                                     "-c", str(config)], stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, **standin_env(pins)})
    try:
        active = wait_for_pin(pins, POWER_PIN, HIGH, command_line.pid)
        command_line.send_signal(signal.SIGTERM)
        code = command_line.wait(10)
    finally:
        if command_line.poll() is None:
            command_line.kill()
    power = [c for c in recorded(pins) if c["pin"] == POWER_PIN]
    assert code == 130 and "interrupted: power released" in command_line.stderr.read()
    assert power[-1]["level"] == LOW and power[-1]["time"] - active["time"] < 5   # before the 5 s asked


def test_a_daemon_starting_during_a_command_line_press_waits_for_it_to_end(broker, gpio, tmp_path):
    """The lock file keeps the daemon's start-up (every relay set idle) from cutting the press short."""
    pins = tmp_path / "pins.jsonl"
    config = process_config(tmp_path, broker.url)
    command_line = subprocess.Popen([sys.executable, "-m", "pidaemon", "relay", "press", "reset", "--duration", "1",
                                     "-c", str(config)], env={**os.environ, **standin_env(pins)})
    try:
        wait_for_pin(pins, RESET_PIN, LOW, command_line.pid)

        async def scenario():
            node = relay_node(broker, tmp_path / "state")
            await node.start()
            try:
                return node.status()
            finally:
                await node.shutdown()

        status = asyncio.run(scenario())
        code = command_line.wait(10)
    finally:
        if command_line.poll() is None:
            command_line.kill()
    released = [c for c in recorded(pins) if c["pin"] == RESET_PIN and c["level"] == HIGH and c["call"] == "output"]
    daemon_setup = next(c for c in gpio.changes if c["pin"] == RESET_PIN)
    assert code == 0 and status["plugins"]["relay"]["state"] == "running"
    assert daemon_setup["call"] == "setup" and daemon_setup["time"] > released[0]["time"]


def test_a_damaged_press_history_is_reported_and_the_relays_still_work(broker, observer, gpio, tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir()
    (state / "relays.json").write_text('{"reset": {"by": "ada", "at": ')   # cut short by a power cut

    async def scenario():
        node = relay_node(broker, state)
        await node.start()
        try:
            await next_message(observer, "picluster/relays/state", 0)
            since = await command(observer, "press", {"relay": "reset", "duration": 0.1})
            return await next_message(observer, "picluster/relays/pressed", since)
        finally:
            await node.shutdown()

    pressed = asyncio.run(scenario())
    assert pressed["relay"] == "reset"
    assert any("relays.json" in record.getMessage() and "cannot read" in record.getMessage()
               for record in caplog.records)
    assert json.loads((state / "relays.json").read_text())["reset"]["duration"] == pressed["duration"]


BOARD_MODULE = '''
from pidaemon_plugins.relay.backends import BackendError, RelayBackend


class LoggedBoard(RelayBackend):
    """A board of another distribution: each level written to a file named in `options`."""

    def setup(self):
        if "log" not in self.settings.options:
            raise BackendError("options.log: missing")
        self.log_file = open(self.settings.options["log"], "a")
        for name in self.relays:
            self.drive(name, False)

    def drive(self, name, active):
        self.log_file.write(f"{name} {'on' if active else 'off'}\\n")
        self.log_file.flush()

    def close(self):
        super().close()
        self.log_file.close()
'''


@pytest.fixture
def installed_board(tmp_path):
    """A distribution offering a relay backend, found by importlib.metadata as pip would leave it."""
    site = write_distribution(tmp_path / "site", "pidaemon-logged-board",
                              {"pidaemon.relay_backends": {"logged": "logged_board:LoggedBoard"}},
                              {"logged_board": BOARD_MODULE})
    sys.path.insert(0, str(site))
    yield site
    sys.path.remove(str(site))
    sys.modules.pop("logged_board", None)


def test_a_backend_from_another_distribution_is_chosen_by_name(broker, observer, installed_board, tmp_path):
    levels_file = tmp_path / "board.log"

    async def scenario():
        node = make_daemon("relay-1", broker.url, role="relay", plugins={"relay": {
            "backend": "logged", "options": {"log": str(levels_file)}, "relays": {"reset": {"pin": 3}}}})
        await node.start()
        try:
            await next_message(observer, "picluster/relays/state", 0)
            since = await command(observer, "press", {"relay": "reset", "duration": 0.1})
            return await next_message(observer, "picluster/relays/pressed", since)
        finally:
            await node.shutdown()

    pressed = asyncio.run(scenario())
    assert pressed["relay"] == "reset"
    assert levels_file.read_text().split("\n")[:3] == ["reset off", "reset on", "reset off"]
