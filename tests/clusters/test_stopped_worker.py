"""A worker stopped (SIGSTOP) until its job runs elsewhere, then continued (SIGCONT), acts once (issue 10, item 11).

Processes as on a cluster: mosquitto, a server, two workers.  The stopped
worker's run of the job is a stale attempt when the worker comes back: its
LIGHTS and its SAVE must not happen a second time, even though another job of
the same user runs on that worker by then.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.support.mosquitto import Mosquitto
from tests.support.nodes import start_node_process, write_config
from tests.support.observer import Observer
from tests.support.warble_cluster import server_config, worker_config

ROOT = Path(__file__).resolve().parents[2]
WAITING = ("queued", "dispatched", "running")  # a job's progress, not its result
COUNTER = 'SLEEP(8);LIGHTS(0,0,0,255);x=LOAD("n");x++;SAVE("n",x);PRINT(x)'


def messages(observer, topic):
    return [json.loads(m.payload) for m in observer.messages if m.topic == topic]


def wait(observer, what, condition, timeout=60.0):
    """Poll `condition()` until truthy: a bound on hangs, not a timing claim."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not within {timeout} s; last messages: "
                       f"{[(m.topic, m.payload[:80]) for m in observer.messages[-8:]]}")


@pytest.mark.timeout(300)
def test_a_stopped_worker_that_comes_back_does_not_act_twice(tmp_path):
    broker = Mosquitto(tmp_path / "broker", cluster_config=ROOT / "config" / "mosquitto.conf").start()
    (tmp_path / "server").mkdir()
    processes = {"server": start_node_process(write_config(tmp_path / "server.yaml", server_config(
        "server", broker.url, tmp_path / "server", max_running_per_user=4)))}
    for name in ("worker-1", "worker-2"):
        processes[name] = start_node_process(write_config(tmp_path / f"{name}.yaml",
                                                          worker_config(name, broker.url, slots=2, time_limit=30)))
    observer = Observer(broker.port)
    stopped = None
    try:
        for name in processes:
            observer.wait_for(f"picluster/nodes/{name}/health", timeout=60)
        wait(observer, "every node healthy", lambda: all(
            messages(observer, f"picluster/nodes/{name}/health")[-1]["state"] == "online" for name in processes))
        observer.publish("picluster/warble/submit", json.dumps({"id": "count", "user": "ada", "source": COUNTER}))
        running = wait(observer, "the job running", lambda: [
            m for m in observer.messages if m.topic.endswith("/reply/warble") and b'"running"' in m.payload])
        holder = json.loads(running[0].payload)["node"]
        other = "worker-2" if holder == "worker-1" else "worker-1"

        processes[holder].send_signal(signal.SIGSTOP)
        stopped = holder
        wait(observer, "the job handed to the other worker", lambda: [
            job for job in messages(observer, f"picluster/nodes/{other}/cmd/warble") if job["id"] == "count"])
        processes[holder].send_signal(signal.SIGCONT)
        stopped = None
        wait(observer, f"{holder} healthy again",
             lambda: messages(observer, f"picluster/nodes/{holder}/health")[-1]["state"] == "online")
        # Another job of the same user on the worker that came back.
        observer.publish("picluster/warble/submit", json.dumps({"id": "other", "user": "ada", "source": "SLEEP(15)"}))
        wait(observer, f"the other job on {holder}", lambda: [
            job for job in messages(observer, f"picluster/nodes/{holder}/cmd/warble") if job["id"] == "other"])
        result = wait(observer, "the job's result", lambda: [
            a for a in messages(observer, "picluster/warble/results/count") if a["status"] not in WAITING])
        time.sleep(3)  # the stale run has reached its LIGHTS, LOAD and SAVE long since: whatever it sent arrives
        observer.publish("picluster/warble/submit", json.dumps({"id": "read", "user": "ada",
                                                                "source": 'PRINT(LOAD("n"))'}))
        counter = wait(observer, "the counter read", lambda: [
            a for a in messages(observer, "picluster/warble/results/read") if a["status"] not in WAITING])
    finally:
        if stopped:
            processes[stopped].send_signal(signal.SIGCONT)
        observer.close()
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            process.wait(20)
        broker.stop()

    assert result[0]["status"] == "ok" and result[0]["output"] == ["1"] and result[0]["node"] == other
    assert counter[0]["output"] == ["1"]                        # the SAVE happened once
    lights = [(m["node"], m.get("attempt")) for m in messages(observer, "picluster/lights/set") if m["job"] == "count"]
    assert lights == [(other, 2)]                               # and the LIGHTS
    holder_log = Path(processes[holder].log_path).read_text()
    assert "job count (attempt 1) revoked" in holder_log or "effects stop" in holder_log
