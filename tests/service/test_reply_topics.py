"""Where the server publishes for a client: only to reply topics that `reply_topics` allows (issue 10, item 2).

A submission names its reply topic (MQTT v5 response topic, or "reply_to" in
the JSON); anyone may submit, so any topic a client names is an attempt to make
the server publish there: a garage door's command topic, a node's status, a
worker's job topic.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from pidaemon_plugins.warble.server import WarbleServerSettings

from pidaemon.schema import section_of
from tests.support.mosquitto import Mosquitto
from tests.support.warble_cluster import (
    InProcessCluster,
    is_answer,
    on,
    props,
    submit,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]





def test_answers_go_only_to_reply_topics_the_allow_list_permits(broker, observer, tmp_path):
    outside = ["garage/door/cmd", "home/garage/set", "picluster/nodes/worker-1/status",
               "picluster/warble/submit", "ab\u0001c", "picluster/replies"]

    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1) as cluster:
            service = cluster.service
            await submit(observer, {"id": "garage", "user": "mallory", "source": "PRINT(1)",
                                    "reply_to": "garage/door/cmd"})
            await submit(observer, "PRINT(2)", props("home/garage/set", b"x", user="mallory"))   # v5, plain text
            await submit(observer, {"id": "status", "user": "mallory", "source": "PRINT(3)",
                                    "reply_to": "picluster/nodes/worker-1/status"})
            await submit(observer, {"id": "resubmit", "user": "mallory", "source": "PRINT(4)",
                                    "reply_to": "picluster/warble/submit"})      # a loop through the intake
            await submit(observer, {"id": "control", "user": "mallory", "source": "PRINT(5)", "reply_to": "ab\u0001c"})
            await submit(observer, {"id": "parent", "user": "mallory", "source": "PRINT(6)",
                                    "reply_to": "picluster/replies"})            # the subtree's parent
            await submit(observer, {"user": "mallory", "reply_to": "garage/door/cmd"}, topic="picluster/warble/history")
            await submit(observer, {"id": "ok", "user": "ada", "source": "PRINT(7)"},
                         props("picluster/replies/ada", b"c-1"))
            await wait_until(lambda: len(on(observer, "picluster/replies/ada")) >= 2, what="ada's two answers")
            await wait_until(lambda: len(service.history("mallory")) == 6
                             and all(j["state"] == "done" for j in service.history("mallory")), what="mallory's jobs")
            await asyncio.sleep(0.3)  # anything misdirected would have arrived with the results
            return service.history("mallory")

    mallory = asyncio.run(scenario())
    assert not [m.topic for m in observer.messages if m.topic in outside and is_answer(m)]
    # The jobs ran; their answers went to their results topics, saying why not to the topic asked for.
    assert sorted(j["result"]["output"][0] for j in mallory) == ["1", "2", "3", "4", "5", "6"]
    ack = json.loads(on(observer, "picluster/warble/results/garage")[0].payload)
    assert ack["status"] == "queued"
    assert "'garage/door/cmd' refused (not allowed: answers go only to picluster/replies/#)" in ack["reply_refused"]
    answers = on(observer, "picluster/replies/ada")
    assert [json.loads(m.payload)["status"] for m in answers] == ["queued", "ok"]
    assert {m.properties.CorrelationData for m in answers} == {b"c-1"}


def test_the_allow_list_is_configurable_but_never_opens_the_clusters_own_topics(broker, observer, tmp_path):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1,
                                    reply_topics=["{prefix}/replies/#", "dashboards/+/answers", "{prefix}/#"]) as c:
            await submit(observer, {"id": "dash", "user": "ada", "source": "PRINT(1)",
                                    "reply_to": "dashboards/d1/answers"})
            await submit(observer, {"id": "other", "user": "ada", "source": "PRINT(2)",
                                    "reply_to": "dashboards/d1/other"})
            await submit(observer, {"id": "job", "user": "mallory", "source": "PRINT(3)",
                                    "reply_to": "picluster/nodes/worker-1/cmd/warble"})
            await wait_until(lambda: all((j := c.service.get(i)) and j["state"] == "done"
                                         for i in ("dash", "other", "job")), what="three jobs done")
            await wait_until(lambda: len(on(observer, "dashboards/d1/answers")) >= 2, what="answers on the dashboard")

    asyncio.run(scenario())
    assert [json.loads(m.payload)["status"] for m in on(observer, "dashboards/d1/answers")] == ["queued", "ok"]
    assert on(observer, "dashboards/d1/other") == []
    jobs = [json.loads(m.payload) for m in on(observer, "picluster/nodes/worker-1/cmd/warble")]
    assert jobs and all("source" in job and "status" not in job for job in jobs)  # only real jobs, no answers


def test_reply_topic_filters_are_checked_with_the_configuration():
    problems = []
    section_of(WarbleServerSettings).validate(
        {"reply_topics": ["{prefix}/replies/#", "a/#/b", "a/b+", "a/\u0000", 7]}, (), problems)
    assert [(p.dotted, p.message.split(" (")[-1]) for p in problems] == [
        ("reply_topics.1", "'#' must be a whole level, the last one)"),
        ("reply_topics.2", "'+' must be a whole level)"),
        ("reply_topics.3", "the character U+0000, not allowed in a topic)"),
        ("reply_topics.4", "not a string)"),
    ]


def test_the_acl_lines_in_the_docs_give_each_client_a_reply_subtree_of_its_own(tmp_path):
    """docs/broker.md, "Reply topics": an anonymous client reads picluster/replies/<its client id>/ only."""
    section = (ROOT / "docs" / "broker.md").read_text().split("## Reply topics", 1)[1]
    lines = section.split("```", 2)[1].strip().splitlines()
    assert lines and all(line.startswith("pattern read picluster/replies/%c") for line in lines)
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "server", "server-pw"], check=True)
    acl.write_text("\n".join(lines) + "\nuser server\ntopic readwrite picluster/#\n")
    broker = Mosquitto(tmp_path / "broker", extra=f"password_file {passwd}\nacl_file {acl}\n").start()
    clients = {}
    try:
        for client_id in ("alice-client", "bob-client"):
            received: list[str] = []
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
            client.on_message = lambda c, u, m, received=received: received.append(m.topic)
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            for subtree in ("alice-client", "bob-client"):
                client.subscribe(f"picluster/replies/{subtree}/#", 1)
            clients[client_id] = (client, received)
        server = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="server", protocol=mqtt.MQTTv5)
        server.username_pw_set("server", "server-pw")
        server.connect("127.0.0.1", broker.port)
        server.loop_start()
        time.sleep(0.5)  # the subscriptions are in place
        for topic in ("picluster/replies/alice-client/1", "picluster/replies/bob-client/2"):
            server.publish(topic, "{}", qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(received for _, received in clients.values()):
            time.sleep(0.05)
        time.sleep(0.3)
        server.loop_stop()
        server.disconnect()
    finally:
        for client, _ in clients.values():
            client.loop_stop()
            client.disconnect()
        broker.stop()
    assert clients["alice-client"][1] == ["picluster/replies/alice-client/1"]
    assert clients["bob-client"][1] == ["picluster/replies/bob-client/2"]
