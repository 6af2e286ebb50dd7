"""config/mosquitto.acl on a real mosquitto: every role can do its job, and no more.

A cluster with one broker user per role (a server, two workers, a lamp and a
speaker) runs programs submitted by clients without a user.  Meanwhile a
client of each role, and anonymous ones, try what their role must not do:
speak for another node (its job result, status, facts, readings, ping answer,
health), for another role (the registry, a job, the lamp's state, a sound
played, a client's answer), or read what is addressed to another node.  The
broker must refuse every such publish (MQTT v5 PUBACK "Not authorized") and
deliver none of those messages; the server's view, the lamp and the speaker
stay as they were, and the cluster still runs programs, lights the lamp and
plays sounds.

The forgeries the ACL cannot refuse, because the topics do not say which node
speaks, are pinned at the end as expected failures.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.support.mosquitto import Mosquitto
from tests.support.nodes import make_daemon
from tests.support.waiting import wait_until
from tests.support.warble_cluster import server_plugins, worker_plugins

ROOT = Path(__file__).resolve().parents[2]
ACL_FILE = ROOT / "config" / "mosquitto.acl"   # a check of this test may point it at another ACL
PASSWORDS = {"server": "server-pw", "worker": "worker-pw", "audio": "audio-pw", "lights": "lights-pw"}
NOT_AUTHORIZED = 0x87
NODES = ("server", "worker-1", "worker-2", "lamp", "speaker")


@pytest.fixture
def acl_broker(tmp_path):
    passwd = tmp_path / "passwd"
    for user, password in PASSWORDS.items():
        flags = ["-c"] if not passwd.exists() else []
        subprocess.run(["mosquitto_passwd", "-b", *flags, str(passwd), user, password], check=True)
    broker = Mosquitto(tmp_path / "broker", cluster_config=ROOT / "config" / "mosquitto.conf",
                       extra=f"password_file {passwd}\nacl_file {ACL_FILE}\n").start()
    yield broker
    broker.stop()


def role_daemon(node_id, broker, user, **kw):
    return make_daemon(node_id, broker.url, username=user, password=PASSWORDS[user], **kw)


def server_daemon(broker, tmp_path):
    server = role_daemon("server", broker, "server", role="server", plugins=server_plugins(tmp_path),
                         session_expiry=600)
    server.config["node"]["state_dir"] = str(tmp_path)
    return server


class Client:
    """An MQTT v5 client of broker user `user` (None: anonymous) connected as `client_id`.

    It subscribes to everything, keeps what the broker lets it read, and returns the broker's
    answer to each of its QoS 1 publishes.
    """

    def __init__(self, port: int, client_id: str, user: str | None = None):
        self.client_id, self.name = client_id, f"{user or 'anonymous'} as {client_id}"
        self.received: list[mqtt.MQTTMessage] = []
        self._answers: dict[int, object] = {}
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if user:
            self.client.username_pw_set(user, PASSWORDS[user])
        self.client.on_connect = lambda client, *_: client.subscribe("#", 1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda client, userdata, message: self.received.append(message)
        self.client.on_publish = lambda client, userdata, mid, reason, properties: \
            self._answers.__setitem__(mid, reason)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError(f"{self.name}: not subscribed within 10 s")

    def publish(self, topic: str, payload) -> int:
        """The reason code of the broker's PUBACK (0 or 0x10: accepted; 0x87: refused)."""
        data = payload if isinstance(payload, (str, bytes)) else json.dumps(payload)
        info = self.client.publish(topic, data, qos=1)
        info.wait_for_publish(10)
        return self._answers.pop(info.mid).value

    def topics_read(self, prefix: str) -> set[str]:
        return {m.topic for m in self.received if m.topic.startswith(prefix)}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def forgeries(holder: str, other: str) -> dict[str, object]:
    """What a client could publish to make the cluster believe what is not so, by topic.

    `holder` is the worker that runs the job "held"; `other` the other worker.
    """
    result = {"status": "ok", "output": ["5"], "error": None, "steps": 1, "elapsed": 0.0, "node": holder}
    return {
        f"picluster/nodes/{holder}/reply/warble": {"id": "held", "node": holder, "attempt": 1, "state": "done",
                                                   "result": result},
        f"picluster/nodes/{holder}/status": "offline",
        f"picluster/nodes/{holder}/info": {"schema": 1, "id": holder, "role": "lights", "capabilities": []},
        f"picluster/nodes/{holder}/telemetry": {"node": holder, "time": 1.0, "readings": {"cpu_percent": 99.5}},
        f"picluster/nodes/{holder}/reply/ping": {"node": holder, "seq": 10 ** 6, "time": 1.0, "delay": 0},
        f"picluster/nodes/{holder}/health": {"node": holder, "state": "offline", "since": 1.0, "reason": "forged",
                                             "server": "server"},
        f"picluster/nodes/{other}/cmd/warble": {"id": "sneak", "user": "mallory", "source": "PRINT(666)",
                                                "attempt": 1},
        f"picluster/nodes/{holder}/cmd/warble_revoke": {"id": "held", "attempt": 1},
        "picluster/nodes/lamp/status": "offline",
        "picluster/nodes/server/info": {"schema": 1, "id": "server", "role": "worker", "capabilities": ["warble"]},
        "picluster/broadcast/ping": {"seq": 1},
        "picluster/registry": "{}",
        "picluster/registry/pong/server": {"node": holder, "seq": 10 ** 6, "time": 1.0, "delay": 0},
        "picluster/registry/forget": {"nodes": [holder], "force": True},
        "picluster/warble/results/held": {"id": "held", "user": "ada", **result},
        "picluster/warble/leaderboard": {"pi_digits": [{"user": "mallory", "digits": 10 ** 6, "job": "held",
                                                        "time": 1.0}]},
        "picluster/warble/store": {"op": "save", "user": "ada", "name": "k", "value": ["int", "666"],
                                   "job": "held", "attempt": 1, "correlation": "c",
                                   "reply_to": f"picluster/nodes/{holder}/reply/warble_store"},
        f"picluster/nodes/{holder}/reply/warble_store": {"op": "save", "user": "ada", "name": "k",
                                                         "value": ["int", "666"], "job": "held", "attempt": 1,
                                                         "correlation": "c"},
        f"picluster/nodes/{holder}/cmd/warble_store": {"correlation": "c", "value": ["int", "666"]},
        "picluster/lights/set": {"index": 1, "r": 6, "g": 6, "b": 6},
        "picluster/lights/state": {"pixels": [[6, 6, 6]] * 4},
        "picluster/sound/play": {"name": "bell"},
        "picluster/sound/played": {"name": "bell", "job": "held", "user": "ada", "time": 1.0},
        "picluster/replies/ada": {"user": "ada", "jobs": []},
    }


# What each role may publish among the forgeries: its own job.
OWN_TOPICS = {
    "worker": {"picluster/lights/set", "picluster/sound/play"},
    # The lamp's node also commands its own lamp: it translates Home Assistant's light commands.
    "lights": {"picluster/lights/state", "picluster/lights/set"},
    "audio": {"picluster/sound/played"},
    None: set(),
}


def node_topics(node_id: str) -> dict[str, object]:
    """What a client connected with `node_id` as its client id could say as that node."""
    return {
        f"picluster/nodes/{node_id}/status": "online",
        f"picluster/nodes/{node_id}/info": {"schema": 1, "id": node_id, "role": "worker", "capabilities": ["warble"]},
        f"picluster/nodes/{node_id}/telemetry": {"node": node_id, "time": 1.0, "readings": {"cpu_percent": 0.0}},
        f"picluster/nodes/{node_id}/reply/ping": {"node": node_id, "seq": 10 ** 6, "time": 1.0, "delay": 0},
        f"picluster/nodes/{node_id}/reply/warble": {"id": "held", "node": node_id, "attempt": 1, "state": "done",
                                                    "result": {"status": "ok", "output": ["5"]}},
    }


def stable(record: dict) -> dict:
    """What the registry says of a node, without what changes with every ping."""
    return {k: v for k, v in record.items() if k not in ("last_seen", "misses", "since")}


def test_each_role_can_do_its_job_and_no_more(acl_broker, tmp_path):
    async def scenario():
        server = server_daemon(acl_broker, tmp_path)
        workers = [role_daemon(f"worker-{i}", acl_broker, "worker", plugins=worker_plugins(1)) for i in (1, 2)]
        lamp = role_daemon("lamp", acl_broker, "lights", role="lights",
                           plugins={"ping": {}, "lights": {"pixels": 4, "state_interval": 0}})
        speaker = role_daemon("speaker", acl_broker, "audio", role="audio", plugins={"ping": {}, "sound": {}})
        nodes = [server, *workers, lamp, speaker]
        for node in nodes:
            await node.start()
        registry, service = server.plugin("registry"), server.plugin("warble_server")
        port = acl_broker.port
        # A client of each role (None: anonymous) under a client id of its own.
        attackers = {
            "worker": await asyncio.to_thread(Client, port, "worker-3", "worker"),
            "lights": await asyncio.to_thread(Client, port, "lamp-2", "lights"),
            "audio": await asyncio.to_thread(Client, port, "speaker-2", "audio"),
            None: await asyncio.to_thread(Client, port, "stranger"),
        }
        # Clients under the id of a worker (one not connected: what a client that knocked a worker
        # off would be): an anonymous one has no share of a node's topics, the lamp and the
        # speaker none of a worker's jobs.
        impostors = [await asyncio.to_thread(Client, port, client_id, user)
                     for client_id, user in (("worker-8", None), ("worker-9", "lights"), ("worker-7", "audio"))]
        clients = [*attackers.values(), *impostors]
        answers: dict[tuple[str, str], int] = {}   # (client, topic): the broker's answer
        try:
            await wait_until(lambda: len(registry.healthy_nodes()) == len(NODES), 30, what="all five nodes healthy")
            before = {node_id: stable(registry.record(node_id)) for node_id in NODES}

            # A job that runs for a while, so that its result can be forged while its worker holds it.
            await asyncio.to_thread(subprocess.run, [
                "mosquitto_pub", "-p", str(port), "-q", "1", "-t", "picluster/warble/submit",
                "-m", json.dumps({"id": "held", "user": "ada", "source": "SLEEP(3);PRINT(2+2)"})], check=True)
            job = await wait_until(lambda: (j := service.get("held")) and j["state"] == "running" and j, 30,
                                   what="job held running")
            holder = job["node"]
            other = next(w.id for w in workers if w.id != holder)

            for role, client in attackers.items():
                for topic, payload in forgeries(holder, other).items():
                    if topic not in OWN_TOPICS[role]:
                        answers[client.name, topic] = await asyncio.to_thread(client.publish, topic, payload)
            for client in impostors:
                for topic, payload in node_topics(client.client_id).items():
                    if client.name.startswith("anonymous") or topic.endswith("/reply/warble"):
                        answers[client.name, topic] = await asyncio.to_thread(client.publish, topic, payload)
            # Every one refused by the broker (a list of those it took, by client and topic, if not).
            assert sorted(key for key, code in answers.items() if code != NOT_AUTHORIZED) == []

            # What a user may do, by a client nobody here wrote, without a broker user.
            await asyncio.to_thread(subprocess.run, [
                "mosquitto_pub", "-p", str(port), "-q", "1", "-t", "picluster/warble/submit",
                "-m", json.dumps({"id": "legit", "user": "ada", "source":
                                  'LIGHTS(0,255,0,0);PLAYSOUND("beep");SAVE("n",2+2);PRINT(LOAD("n"))'})],
                check=True)
            for job_id in ("held", "legit"):
                await wait_until(lambda: service.get(job_id)["state"] == "done", 30, what=f"job {job_id} done")
            await wait_until(lambda: lamp.plugin("lights").strip.pixels[0] == (255, 0, 0), 10, what="pixel 0 red")
            await wait_until(lambda: speaker.plugin("sound").played, 10, what="a sound played")
            stranger = attackers[None]
            for topic in ("picluster/warble/results/legit", "picluster/lights/state", "picluster/sound/played"):
                await wait_until(lambda: stranger.topics_read(topic), 10, what=f"{topic} seen by an anonymous client")
            return {
                "holder": holder,
                "held": service.get("held"),
                "legit": service.get("legit"),
                "before": before,
                "after": {node_id: stable(registry.record(node_id)) for node_id in registry.records},
                "healthy": registry.healthy_nodes(),
                "jobs_run": sum(w.plugin("warble_worker").completed for w in workers),
                "stored": {name: service.store.get("ada", name) for name in ("n", "k")},
                "leaderboard": service.leaderboard.snapshot()["pi_digits"],
                "pixels": list(lamp.plugin("lights").strip.pixels),
                "lamp_changes": lamp.plugin("lights").changes,
                "played": list(speaker.plugin("sound").played),
                "read": {client.name: client.topics_read("picluster/nodes/") for client in clients},
                "anonymous_read": stranger.topics_read("picluster/"),
                "sounds_announced": [json.loads(m.payload)["name"] for m in stranger.received
                                     if m.topic == "picluster/sound/played"],
                "lamp_states": [json.loads(m.payload)["pixels"] for m in stranger.received
                                if m.topic == "picluster/lights/state"],
            }
        finally:
            for client in clients:
                client.close()
            for node in reversed(nodes):
                await node.shutdown()

    seen = asyncio.run(scenario())
    holder = seen["holder"]
    # The server's view: no node changed, no node added, the held job's result is its worker's.
    assert seen["after"] == seen["before"]
    assert seen["healthy"] == sorted(NODES)
    assert seen["held"]["node"] == holder and seen["held"]["result"]["output"] == ["4"]
    assert seen["leaderboard"] == []
    assert seen["stored"] == {"n": 4, "k": None}
    # Nobody read another node's jobs, answers or store replies; anonymous clients see the cluster
    # through the server's registry and results, not the nodes' own topics.
    assert seen["read"] == {name: set() for name in seen["read"]}
    assert {"picluster/registry", "picluster/warble/results/legit", "picluster/sound/played",
            "picluster/lights/state"} <= seen["anonymous_read"]
    # The legitimate cluster still works: both programs ran, the lamp lit, the speaker played.
    assert seen["legit"]["result"]["status"] == "ok" and seen["legit"]["result"]["output"] == ["4"]
    assert seen["jobs_run"] == 2
    assert seen["pixels"] == [(255, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0)] and seen["lamp_changes"] == 1
    assert seen["played"] == ["beep"] and seen["sounds_announced"] == ["beep"]
    # The lamp publishes its state when it starts (dark here) and after each change; never the forged one.
    lit, dark = [[255, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]], [[0, 0, 0]] * 4
    assert seen["lamp_states"] and seen["lamp_states"][-1] == lit
    assert all(state in (dark, lit) for state in seen["lamp_states"])


# ---------------------------------------------------------------- speaking for another node
#
# Ping answers and SAVE/LOAD requests once came on topics every node shared
# (`registry/pong/<server>`, `warble/store`), naming their node in the payload:
# any node could speak for another.  They now come on each node's own reply
# topics, which the ACL lets only that client id write.


def test_a_node_cannot_answer_pings_for_another(acl_broker, tmp_path):
    async def scenario():
        server = server_daemon(acl_broker, tmp_path)
        await server.start()
        registry = server.plugin("registry")
        lamp = await asyncio.to_thread(Client, acl_broker.port, "lamp-2", "lights")
        try:
            await wait_until(lambda: registry.seq >= 1, 10, what="a ping sent")
            code = await asyncio.to_thread(lamp.publish, "picluster/nodes/ghost/reply/ping",
                                           {"node": "ghost", "seq": 1, "time": 1.0, "delay": 0})
            # Then, on the same connection, what the lamp may say of itself: once the server has it,
            # it has the forged answer too.
            await asyncio.to_thread(lamp.publish, "picluster/nodes/lamp-2/info",
                                    {"schema": 1, "id": "lamp-2", "role": "lights", "capabilities": ["lights"]})
            await wait_until(lambda: registry.record("lamp-2"), 10, what="the lamp's own info")
            return code, registry.record("ghost")
        finally:
            lamp.close()
            await server.shutdown()

    code, ghost = asyncio.run(scenario())
    assert code == NOT_AUTHORIZED or ghost is None


def test_a_worker_cannot_save_for_a_job_on_another_worker(acl_broker, tmp_path):
    async def scenario():
        server = server_daemon(acl_broker, tmp_path)
        worker = role_daemon("worker-1", acl_broker, "worker", plugins=worker_plugins(1))
        for node in (server, worker):
            await node.start()
        service = server.plugin("warble_server")
        rogue = await asyncio.to_thread(Client, acl_broker.port, "worker-3", "worker")
        try:
            await wait_until(lambda: server.plugin("registry").healthy_nodes("warble"), 30, what="worker healthy")
            service.submit("ada", "SLEEP(2);PRINT(1)", job_id="held")
            await wait_until(lambda: service.get("held")["state"] == "running", 30, what="job held running")
            # The job's id is public (its results topic) and its attempt is a small number: as worker-1
            # (refused by the broker), and as itself (refused by the server: the job is not held there).
            save = {"op": "save", "user": "ada", "name": "k", "value": ["int", "666"], "job": "held", "attempt": 1,
                    "correlation": "c"}
            codes = [await asyncio.to_thread(rogue.publish, f"picluster/nodes/{as_node}/reply/warble_store", save)
                     for as_node in ("worker-1", "worker-3")]
            await wait_until(lambda: service.get("held")["state"] == "done", 30, what="job held done")
            return codes, service.store.get("ada", "k")
        finally:
            rogue.close()
            await worker.shutdown()
            await server.shutdown()

    codes, saved = asyncio.run(scenario())
    assert codes[0] == NOT_AUTHORIZED and saved is None
