"""`pidaemon sim` configured by the user: their limits hold, their mistakes are refused with a place."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

from tests.support.mosquitto import free_port, wait_for_port
from tests.support.observer import Observer


def sim(tmp_path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pidaemon", "sim", "--state-dir", str(tmp_path / "sim-state"), "--http", "off",
            *args]


def test_simulated_workers_run_programs_under_the_limits_of_their_role(tmp_path):
    """Before: the runner the simulated workers share had the default limits, whatever the file said."""
    extra = tmp_path / "limits.yaml"
    extra.write_text("worker:\n  plugins:\n    warble_worker:\n      limits: {time_limit: 1}\n")
    port = free_port()
    process = subprocess.Popen(sim(tmp_path, "--workers", "1", "--listen", f"127.0.0.1:{port}", "--config",
                                   str(extra)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, timeout=20)
        submit = subprocess.run([sys.executable, "-m", "pidaemon", "submit", "SLEEP(4);PRINT(1)", "--wait",
                                 "--broker", f"mqtt://127.0.0.1:{port}", "--timeout", "30"],
                                capture_output=True, text=True, timeout=60)
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=20)[0]
    assert submit.returncode == 1, submit.stdout + submit.stderr + output
    assert "time limit of 1 s reached" in submit.stderr
    assert submit.stdout == ""


def test_a_plugin_asked_for_by_name_that_is_not_installed_stops_the_simulator(tmp_path):
    """Before: an ERROR per worker ("the node keeps running without it"), then "cluster online"."""
    result = subprocess.run(sim(tmp_path, "--plugin", "telemtry", "--listen", f"127.0.0.1:{free_port()}"),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert '--plugin telemtry: plugins.telemtry: no plugin named "telemtry" is installed' in result.stderr
    assert 'did you mean "telemetry"?' in result.stderr
    assert "cluster online" not in result.stderr


def test_a_mistake_in_the_users_file_is_reported_at_its_line(tmp_path):
    extra = tmp_path / "mine.yaml"
    extra.write_text("worker:\n  plugins:\n    warble_worker:\n      slots: 1\n      slotz: 2\n")
    result = subprocess.run(sim(tmp_path, "--config", str(extra), "--listen", f"127.0.0.1:{free_port()}"),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"{extra}:5: plugins.warble_worker.slotz: unknown key" in result.stderr


def test_the_simulator_stops_when_its_server_cannot_serve(tmp_path):
    """Before: a damaged job queue left the server without its Warble service, and the simulator said
    "cluster online"; every submission then went unanswered."""
    queue = tmp_path / "sim-state" / "sim-server" / "warble-jobs.sqlite3"
    queue.parent.mkdir(parents=True)
    queue.write_bytes(b"this is not a database, " * 100)
    result = subprocess.run(sim(tmp_path, "--workers", "1", "--listen", f"127.0.0.1:{free_port()}"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "warble_server" in result.stderr and str(queue) in result.stderr
    assert "cluster online" not in result.stderr


def test_after_ctrl_c_the_saved_registry_has_every_stopped_node_offline(tmp_path):
    """Before: the server saved its registry and stopped while most workers' `offline` was still on its way;
    the next start showed 40 stopped workers online until they missed their pings."""
    import paho.mqtt.client as mqtt
    workers = [f"sim-worker-{i:04d}" for i in range(1, 41)]
    port = free_port()
    process = subprocess.Popen(sim(tmp_path, "--workers", str(len(workers)), "--listen", f"127.0.0.1:{port}"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, timeout=20)
        observer = Observer(port, topics=["picluster/nodes/+/health"], protocol=mqtt.MQTTv311)
        deadline = time.monotonic() + 30  # a bound on failure
        while not {f"picluster/nodes/{node}/health" for node in workers} <= {
                m.topic for m in list(observer.messages) if json.loads(m.payload)["state"] == "online"}:
            assert time.monotonic() < deadline, "not every worker online in the registry within 30 s"
            time.sleep(0.1)
        observer.close()
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    with sqlite3.connect(tmp_path / "sim-state" / "sim-server" / "registry.sqlite3") as db:
        states = {node: json.loads(record)["state"] for node, record in db.execute("SELECT id, record FROM nodes")}
    assert {node: states.get(node) for node in workers} == {node: "offline" for node in workers}


def test_the_simulator_stops_when_its_http_port_is_taken(tmp_path):
    """Before: the simulator ran on without HTTP and said "cluster online"; its address showed another's page."""
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http_port = taken.getsockname()[1]
        command = [arg for arg in sim(tmp_path, "--workers", "1", "--listen", f"127.0.0.1:{free_port()}")
                   if arg not in ("--http", "off")] + ["--http", f"127.0.0.1:{http_port}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{http_port}" in result.stderr and "--http HOST:PORT" in result.stderr
    assert "cluster online" not in result.stderr
