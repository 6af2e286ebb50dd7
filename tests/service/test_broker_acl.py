"""config/mosquitto.acl on a real mosquitto: every role can do its job, and no more.

A cluster of one server, two workers, a lamp and a speaker, each role with its
own broker user, serves a program that lights a pixel and plays a sound,
submitted by mosquitto_pub without a user. Anonymous clients and a worker
then try what the ACL forbids; the broker must drop it before any node sees it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.service.cluster import server_plugins, worker_plugins
from tests.support.mosquitto import Mosquitto
from tests.support.nodes import make_daemon
from tests.support.observer import Observer
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {"server": "server-pw", "worker": "worker-pw", "audio": "audio-pw", "lights": "lights-pw"}


@pytest.fixture
def acl_broker(tmp_path):
    passwd = tmp_path / "passwd"
    for user, password in PASSWORDS.items():
        flags = ["-c"] if not passwd.exists() else []
        subprocess.run(["mosquitto_passwd", "-b", *flags, str(passwd), user, password], check=True)
    broker = Mosquitto(tmp_path / "broker", cluster_config=ROOT / "config" / "mosquitto.conf",
                       extra=f"password_file {passwd}\nacl_file {ROOT / 'config' / 'mosquitto.acl'}\n").start()
    yield broker
    broker.stop()


def role_daemon(node_id, broker, user, **kw):
    return make_daemon(node_id, broker.url, username=user, password=PASSWORDS[user], **kw)


def test_each_role_can_do_its_job_and_no_more(acl_broker, tmp_path):
    async def scenario():
        server = role_daemon("server", acl_broker, "server", role="server",
                             plugins=server_plugins(tmp_path), session_expiry=600)
        server.config["node"]["state_dir"] = str(tmp_path)
        workers = [role_daemon(f"worker-{i}", acl_broker, "worker", plugins=worker_plugins(1))
                   for i in (1, 2)]
        lamp = role_daemon("lamp", acl_broker, "lights", role="lights",
                           plugins={"ping": {}, "lights": {"pixels": 4, "state_interval": 0}})
        speaker = role_daemon("speaker", acl_broker, "audio", role="audio",
                              plugins={"ping": {}, "sound": {}})
        nodes = [server, *workers, lamp, speaker]
        for node in nodes:
            await node.start()
        registry = server.plugin("registry")
        watcher = await asyncio.to_thread(Observer, acl_broker.port, ("picluster/#",))   # anonymous
        worker_client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rogue-worker",
                                    protocol=mqtt.MQTTv5)
        worker_client.username_pw_set("worker", PASSWORDS["worker"])
        try:
            await wait_until(lambda: len(registry.healthy_nodes()) == 5, 30, what="all five nodes healthy")

            # What the ACL forbids, tried first: each publish is acknowledged by the broker, then dropped.
            sneaky_job = {"id": "sneak", "user": "mallory", "source": "PRINT(666)"}
            forbidden = [
                ("picluster/nodes/worker-1/cmd/warble", sneaky_job),          # bypass the queue
                ("picluster/nodes/worker-1/status", "offline"),               # spoof presence
                ("picluster/lights/set", {"index": 1, "r": 9, "g": 9, "b": 9}),  # drive the lamp
                ("picluster/sound/play", {"name": "bell"}),
                ("picluster/warble/store", {"op": "save", "user": "ada", "name": "k", "value": ["int", "1"],
                                            "correlation": "c",
                                            "reply_to": "picluster/nodes/worker-1/reply/warble_store"}),
                ("picluster/warble/results/fake", {"id": "fake", "status": "ok", "output": ["pwned"]}),
                ("picluster/registry", "{}"),
            ]
            for topic, payload in forbidden:
                await asyncio.to_thread(watcher.publish, topic, json.dumps(payload) if isinstance(payload, dict)
                                        else payload)
            worker_client.connect("127.0.0.1", acl_broker.port)
            worker_client.loop_start()
            info = worker_client.publish("picluster/nodes/worker-2/cmd/warble", json.dumps(sneaky_job), qos=1)
            await asyncio.to_thread(info.wait_for_publish, 10)

            # The job a user is allowed to submit, by a client nobody here wrote, without a broker user.
            await asyncio.to_thread(subprocess.run, [
                "mosquitto_pub", "-p", str(acl_broker.port), "-q", "1", "-t", "picluster/warble/submit",
                "-m", json.dumps({"id": "legit", "user": "ada",
                                  "source": 'LIGHTS(0,255,0,0);PLAYSOUND("beep");PRINT(1)'})], check=True)
            result = await asyncio.to_thread(watcher.wait_for, "picluster/warble/results/legit",
                                             None, 30)
            while json.loads(result.payload)["status"] == "queued":
                index = watcher.messages.index(result) + 1
                result = await asyncio.to_thread(watcher.wait_for, "picluster/warble/results/legit", None, 30,
                                                 index)
            played = await asyncio.to_thread(watcher.wait_for, "picluster/sound/played", None, 10)
            await wait_until(lambda: lamp.plugin("lights").strip.pixels[0] == (255, 0, 0), 10, what="pixel 0 red")
            return {
                "result": json.loads(result.payload),
                "played": json.loads(played.payload),
                "pixels": list(lamp.plugin("lights").strip.pixels),
                "lamp_changes": lamp.plugin("lights").changes,
                "jobs_run": sum(w.plugin("warble_worker").completed for w in workers),
                "worker_1": registry.record("worker-1")["state"],
                "stored": server.plugin("warble_server").store.get("ada", "k"),
                "fake_seen": any(m.topic.endswith("results/fake") for m in watcher.messages),
                "sounds_played": [json.loads(m.payload) for m in watcher.messages
                                   if m.topic == "picluster/sound/played"],
                "cmd_seen_by_public": any("/cmd/" in m.topic for m in watcher.messages),
            }
        finally:
            worker_client.loop_stop()
            worker_client.disconnect()
            watcher.close()
            for node in reversed(nodes):
                await node.shutdown()

    seen = asyncio.run(scenario())
    assert seen["result"]["status"] == "ok" and seen["result"]["output"] == ["1"]
    assert seen["played"]["name"] == "beep" and [s["name"] for s in seen["sounds_played"]] == ["beep"]
    assert seen["pixels"][0] == (255, 0, 0) and seen["lamp_changes"] == 1
    assert seen["jobs_run"] == 1                     # neither sneaky job ran
    assert seen["worker_1"] == "online"              # the spoofed "offline" never arrived
    assert seen["stored"] is None
    assert not seen["fake_seen"] and not seen["cmd_seen_by_public"]
