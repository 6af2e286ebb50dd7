"""The newcomer's first command: the desk cluster on the embedded broker (amqtt), with nothing else installed."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import paho.mqtt.client as mqtt

from tests.support.mosquitto import free_port, wait_for_port
from tests.support.observer import Observer


def wait_for_output(process, log_path, text: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        output = log_path.read_text()
        if text in output:
            return output
        if process.poll() is not None or time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not printed:\n{output}")
        time.sleep(0.1)


# CONNECT: protocol "MQTT" level 5, clean start, keepalive 60, no properties, empty client id.
MQTT5_CONNECT = bytes([0x10, 13, 0, 4, *b"MQTT", 5, 0x02, 0, 60, 0, 0, 0])


def test_desk_cluster_on_the_embedded_broker_starts_cleanly_and_delivers_only_subscribed_topics(tmp_path):
    port = free_port()
    log_path = tmp_path / "sim.log"
    with open(log_path, "wb") as log:
        sim = subprocess.Popen([sys.executable, "-m", "pidaemon", "sim", "--workers", "3", "--listen",
                                f"127.0.0.1:{port}", "--http", "off", "--state-dir", str(tmp_path / "state")],
                               stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for_port(port, timeout=30)
        # What the README suggests a newcomer runs in another terminal.
        watcher = Observer(port, topics=["picluster/warble/results/#"], protocol=mqtt.MQTTv311)
        try:
            wait_for_output(sim, log_path, "cluster online")
            watcher.publish("picluster/warble/submit", '#pi{PRINT("hello cluster")}')
            result = watcher.wait_for("picluster/warble/results/+", timeout=30, since=0)
            deadline = time.monotonic() + 30
            while b'"ok"' not in b"".join(m.payload for m in watcher.messages) and time.monotonic() < deadline:
                time.sleep(0.1)
            topics = {m.topic for m in watcher.messages}
            # An MQTT 5 client (`pidaemon submit --protocol 5`) is refused: one line in the log, no traceback.
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(MQTT5_CONNECT)
                client.recv(16)
            wait_for_output(sim, log_path, "Invalid protocol", timeout=30)
        finally:
            watcher.close()
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(30)
    output = log_path.read_text()
    assert "Traceback" not in output, output
    assert "password-file" not in output, output   # amqtt's warning about a file the embedded broker never uses
    assert "lost connection" not in output, output
    assert result.topic.startswith("picluster/warble/results/")
    assert all(topic.startswith("picluster/warble/results/") for topic in topics), sorted(topics)
    assert any(b'"ok"' in m.payload and b"hello cluster" in m.payload for m in watcher.messages)
    assert sim.returncode == 0
