"""Nothing acknowledged is lost: 500 jobs, 5 users, 4 worker processes, a worker and the server killed.

The broker runs with the cluster's shipped configuration (config/mosquitto.conf).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.support.mosquitto import Mosquitto
from tests.support.nodes import start_node_process, write_config
from tests.support.observer import Observer
from tests.support.warble_cluster import server_config, worker_config

ROOT = Path(__file__).resolve().parents[2]
USERS = [f"user{i}" for i in range(5)]
JOBS_PER_USER = 100


class Submitter:
    """An ordinary MQTT client that submits jobs and records acknowledgements and results."""

    def __init__(self, port: int):
        self.acks: set[str] = set()
        self.results: dict[str, list[dict]] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"submitter-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe("picluster/warble/results/+", 1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10)

    def _on_message(self, client, userdata, message):
        answer = json.loads(message.payload)
        with self.lock:
            if answer["status"] == "queued":
                self.acks.add(answer["id"])
            elif answer["status"] not in ("dispatched", "running"):  # progress, not a result
                self.results.setdefault(answer["id"], []).append(answer)

    def submit(self, job_id: str, user: str, source: str) -> None:
        payload = json.dumps({"id": job_id, "user": user, "source": source})
        self.client.publish("picluster/warble/submit", payload, qos=1).wait_for_publish(10)

    def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if condition():
                    return
            time.sleep(0.05)
        with self.lock:
            raise AssertionError(f"{what}: {len(self.acks)} acknowledged, {len(self.results)} results")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.timeout(400)
def test_500_jobs_survive_a_killed_worker_and_a_killed_server(tmp_path):
    broker = Mosquitto(tmp_path / "broker", cluster_config=ROOT / "config" / "mosquitto.conf").start()
    server_state = tmp_path / "server"
    server_state.mkdir()
    server_yaml = server_config("server", broker.url, server_state, job_time_limit=5, lease_margin=3,
                                per_user_rate=1000, per_user_burst=1000, per_user_queued=1000)
    server_yaml["mqtt"]["keepalive"] = 2
    server_path = write_config(tmp_path / "server.yaml", server_yaml)
    processes = {"server": start_node_process(server_path)}
    for i in range(1, 5):
        config = worker_config(f"worker-{i}", broker.url, slots=2)
        config["mqtt"].update(keepalive=2, session_expiry=600)
        processes[f"worker-{i}"] = start_node_process(write_config(tmp_path / f"worker-{i}.yaml", config))
    observer = Observer(broker.port, topics=["picluster/nodes/+/status"])
    for name in processes:  # `online` comes once a node's subscriptions are in place
        observer.wait_for(f"picluster/nodes/{name}/status", "online", timeout=30)
    observer.close()
    submitter = Submitter(broker.port)
    expected: dict[str, str] = {}
    try:
        for n in range(JOBS_PER_USER):
            for user in USERS:
                job_id = f"{user}-{n:03d}"
                expected[job_id] = str(n * 7 + len(user))
                submitter.submit(job_id, user, f"PRINT({n}*7+{len(user)})")
        submitter.wait(lambda: len(submitter.results) >= 120, 120, "first results")

        processes["worker-2"].send_signal(signal.SIGKILL)
        processes["worker-2"].wait()
        results_at_worker_kill = len(submitter.results)
        submitter.wait(lambda: len(submitter.results) >= 250, 120, "results after the worker died")

        processes["server"].send_signal(signal.SIGKILL)
        processes["server"].wait()
        results_at_server_kill = len(submitter.results)
        acknowledged_before_crash = set(submitter.acks)
        time.sleep(1)
        processes["server"] = start_node_process(server_path, log_path=tmp_path / "server-restarted.log")

        # Every acknowledged job ends with one stored result.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if _stored(server_state, acknowledged_before_crash, expected, complete_only=True):
                break
            time.sleep(0.5)
    finally:
        submitter.close()
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(15)
        broker.stop()

    print(f"results seen: {results_at_worker_kill} at the worker's kill, {results_at_server_kill} at the server's")
    assert results_at_worker_kill < 500 and results_at_server_kill < 500  # the kills hit work in progress
    assert len(acknowledged_before_crash) >= 250
    assert acknowledged_before_crash <= set(expected)
    stored = _stored(server_state, set(expected), expected)
    missing = [job_id for job_id in acknowledged_before_crash if job_id not in stored]
    assert not missing, f"{len(missing)} acknowledged jobs have no stored result, e.g. {missing[:5]}"
    wrong = {j: r for j, r in stored.items() if r["status"] != "ok" or r["output"] != [expected[j]]}
    assert not wrong, f"wrong results: {list(wrong.items())[:3]}"
    # A result is announced at most once, whatever was retried.
    assert all(len(results) == 1 for results in submitter.results.values())


def _stored(state_dir: Path, job_ids: set[str], expected: dict[str, str], complete_only: bool = False):
    """Results in the server's queue file for `job_ids` (read-only; the server may be running)."""
    db = sqlite3.connect(f"file:{state_dir / 'jobs.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT id, state, result FROM jobs").fetchall()
    except sqlite3.OperationalError:
        return {} if not complete_only else False
    finally:
        db.close()
    results = {job_id: json.loads(result) for job_id, state, result in rows if state == "done" and job_id in job_ids}
    if complete_only:
        return len(results) == len(job_ids)
    return results
