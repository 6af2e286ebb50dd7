"""Intake and views: HTTP, the submit command, v5 request/response, fairness under a flood."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.mosquitto import free_port, wait_for_port
from tests.support.observer import Observer
from tests.support.warble_cluster import InProcessCluster, wait_until


def http(method, url, body=None, content_type="application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def fetch_text(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_http_submit_status_history_and_leaderboard(broker, tmp_path):
    port = free_port()

    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, http_listen=f"127.0.0.1:{port}") as cluster:
            base = f"http://127.0.0.1:{port}"
            status, queued = await asyncio.to_thread(
                http, "POST", f"{base}/warbles", {"user": "ada", "source": "SETPRECISION(30);PRINT(2*ACOS(0))"})
            assert status == 202 and queued["status"] == "queued"
            status, rejected = await asyncio.to_thread(http, "POST", f"{base}/warbles?user=bob",
                                                       b"#pi{PRINT(}", "text/plain")
            assert status == 422 and rejected["status"] == "rejected" and rejected["error"]["line"] == 1
            service = cluster.service
            await wait_until(lambda: service.get(queued["id"])["state"] == "done")
            job = await asyncio.to_thread(http, "GET", f"{base}/warbles/{queued['id']}")
            history = await asyncio.to_thread(http, "GET", f"{base}/warbles?user=ada")
            board = await asyncio.to_thread(http, "GET", f"{base}/leaderboard")
            missing = await asyncio.to_thread(http, "GET", f"{base}/warbles/nope")
            bad = await asyncio.to_thread(http, "POST", f"{base}/warbles", b"{not json")
            spec = await asyncio.to_thread(fetch_text, f"{base}/openapi.yaml")  # the server is on this loop
            return job, history, board, missing, bad, spec

    job, history, board, missing, bad, spec = asyncio.run(scenario())
    assert job[0] == 200 and job[1]["result"]["output"] == ["3.14159265358979323846264338328"]
    assert [j["id"] for j in history[1]["jobs"]] == [job[1]["id"]]
    assert board[1]["pi_digits"][0]["user"] == "ada" and board[1]["pi_digits"][0]["digits"] == 28  # the 29th decimal is rounded up
    assert missing[0] == 404 and bad[0] == 400 and "not JSON" in bad[1]["error"]
    assert spec.startswith("openapi: 3.1.0") and "/warbles/{id}:" in spec


def test_mqtt5_request_response_is_honoured(broker, tmp_path):
    answers = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="v5-client", protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, m: answers.append((m.topic, m.payload, m.properties.CorrelationData))
    client.connect("127.0.0.1", broker.port)
    client.subscribe("picluster/replies/v5-client", 1)
    client.loop_start()

    async def scenario():
        async with InProcessCluster(broker.url, tmp_path):
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "picluster/replies/v5-client"  # under the allowed reply subtree
            props.CorrelationData = b"req-42"
            props.UserProperty = ("user", "grace")
            client.publish("picluster/warble/submit", "SLEEP(0.5);PRINT(40+2)", qos=1, properties=props)
            await wait_until(lambda: len(answers) >= 3)

    asyncio.run(scenario())
    client.loop_stop()
    ack, running, result = (json.loads(p) for _, p, _ in answers[:3])
    assert running["status"] == "running" and running["node"] == "worker-1"
    assert ack["status"] == "queued" and ack["user"] == "grace"
    assert result["output"] == ["42"] and result["id"] == ack["id"]
    assert {c for _, _, c in answers} == {b"req-42"}


def test_a_flood_does_not_delay_another_users_job_by_more_than_a_few(broker, tmp_path):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=2, slots=2, slots_per_worker=2,
                                    per_user_rate=100000, per_user_burst=100000, per_user_queued=5000) as cluster:
            service = cluster.service
            order: list[str] = []
            mark_dispatched = service.queue.mark_dispatched

            def recording(job_id, node, lease):  # observe the real queue's dispatch order
                order.append(job_id)
                return mark_dispatched(job_id, node, lease)

            service.queue.mark_dispatched = recording
            flood = [service.submit("flooder", f"PRINT({i})")["id"] for i in range(1000)]
            await wait_until(lambda: len(order) >= 20)
            alice = service.submit("alice", "PRINT(1)")["id"]
            dispatched_before = len(order)
            await wait_until(lambda: alice in order)
            waited = order.index(alice) - dispatched_before
            refused = service.submit("flooder", "PRINT(1)")  # still within the share: queued
            return waited, refused, len(flood)

    waited, refused, flooded = asyncio.run(scenario())
    assert flooded == 1000
    assert waited <= 4  # at most one job per free slot went first
    assert refused["status"] == "queued"


def test_over_the_share_is_rejected_with_a_clear_status(broker, tmp_path):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, per_user_queued=3, per_user_rate=1000,
                                    per_user_burst=1000) as cluster:
            answers = [cluster.service.submit("flooder", "SLEEP(2)") for _ in range(8)]
            return [a["status"] for a in answers], answers[-1]["error"]["message"]

    statuses, message = asyncio.run(scenario())
    assert statuses.count("rejected") >= 3 and statuses[0] == "queued"
    assert message.startswith("queue share: user 'flooder' already has")


def test_sim_and_submit_from_another_terminal(tmp_path):
    port, http_port = free_port(), free_port()
    sim = subprocess.Popen([sys.executable, "-m", "pidaemon", "sim", "--state-dir", str(tmp_path / "sim-state"), "--workers", "2", "--listen",
                            f"127.0.0.1:{port}", "--http", f"127.0.0.1:{http_port}"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        wait_for_port(port, timeout=20)
        wait_for_port(http_port, timeout=20)
        submit = subprocess.run([sys.executable, "-m", "pidaemon", "submit", '#pi{FOR(i=0;i<3;i++){PRINT(i)}}',
                                 "--wait", "--broker", f"mqtt://127.0.0.1:{port}", "--timeout", "30"],
                                capture_output=True, text=True, timeout=60)
        failing = subprocess.run([sys.executable, "-m", "pidaemon", "submit", "x=1/0", "--wait", "--broker",
                                  f"mqtt://127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    finally:
        sim.send_signal(signal.SIGINT)
        output = sim.communicate(timeout=20)[0]
    assert submit.returncode == 0, submit.stderr + output
    assert submit.stdout.splitlines() == ["0", "1", "2"]
    assert failing.returncode == 1
    assert "error: line 1, column 4: division by zero" in failing.stderr


def test_reply_topics_cannot_point_into_the_cluster(broker, observer, tmp_path):
    """A submission may not make the server publish on a worker's job topic or a node's status."""
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path) as cluster:
            for target in ("picluster/nodes/worker-1/cmd/warble", "picluster/nodes/worker-1/status", "a/+/b"):
                await asyncio.to_thread(observer.publish, "picluster/warble/submit",
                                        json.dumps({"user": "mallory", "source": "PRINT(1)", "reply_to": target}))
            await asyncio.to_thread(observer.publish, "picluster/warble/submit",
                                    json.dumps({"user": "ok", "source": "PRINT(2)", "reply_to": "picluster/replies/ok"}))
            await wait_until(lambda: len([m for m in observer.messages if m.topic == "picluster/replies/ok"]) >= 2)
            await wait_until(lambda: len(cluster.service.history("mallory")) == 3
                             and all(j["state"] == "done" for j in cluster.service.history("mallory")))

    asyncio.run(scenario())
    misdirected = [m for m in observer.messages if m.topic in ("picluster/nodes/worker-1/status",)
                   and m.payload not in (b"online", b"offline")]
    jobs_to_worker = [json.loads(m.payload) for m in observer.messages
                      if m.topic == "picluster/nodes/worker-1/cmd/warble"]
    assert not misdirected
    assert all("source" in job for job in jobs_to_worker)  # only real jobs, no results


def test_sim_lamp_and_speaker_follow_a_program(tmp_path):
    """LIGHTS and PLAYSOUND in a submitted program reach the simulated lamp and speaker of `pidaemon sim`."""
    port = free_port()
    sim = subprocess.Popen([sys.executable, "-m", "pidaemon", "sim", "--state-dir", str(tmp_path / "sim-state"), "--workers", "1", "--listen",
                            f"127.0.0.1:{port}", "--http", "off"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        wait_for_port(port, timeout=20)
        watcher = Observer(port, topics=["picluster/lights/state", "picluster/sound/played",
                                         "picluster/nodes/+/status"], protocol=mqtt.MQTTv311)
        for node in ("sim-worker-0001", "sim-lights", "sim-audio"):
            watcher.wait_for(f"picluster/nodes/{node}/status", "online", timeout=20)
        submit = subprocess.run([sys.executable, "-m", "pidaemon", "submit", "--user", "ada", "--wait", "--broker",
                                 f"mqtt://127.0.0.1:{port}", 'LIGHTS(0,255,0,0);LIGHTS(23,0,0,255);PLAYSOUND("bell")'],
                                capture_output=True, text=True, timeout=60)
        played = json.loads(watcher.wait_for("picluster/sound/played", timeout=20).payload)
        final_state = None
        for _ in range(100):
            states = [json.loads(m.payload) for m in watcher.messages if m.topic == "picluster/lights/state"]
            if states and states[-1]["pixels"][23] == [0, 0, 255]:
                final_state = states[-1]
                break
            watcher.wait_for("picluster/lights/state", timeout=5, since=len(watcher.messages))
        watcher.close()
    finally:
        sim.send_signal(signal.SIGINT)
        output = sim.communicate(timeout=20)[0]
    assert submit.returncode == 0, submit.stderr + output
    assert played["name"] == "bell" and played["user"] == "ada"
    assert final_state is not None
    assert final_state["pixels"][0] == [255, 0, 0] and final_state["pixels"][1] == [0, 0, 0]
