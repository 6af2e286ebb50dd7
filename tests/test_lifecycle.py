"""A node as a real process: signals, the last will, systemd notification, logs, the embedded broker."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.support.mosquitto import free_port, wait_for_port
from tests.support.nodes import node_config, start_node_process, write_config
from tests.support.observer import Observer


@pytest.fixture
def node_process(tmp_path, broker):
    processes = []

    def start(node_id, *args, env=None, **config):
        path = write_config(tmp_path / f"{node_id}.yaml", node_config(node_id, broker.url, **config))
        process = start_node_process(path, *args, env=env)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def log_of(process) -> str:
    return open(process.log_path, encoding="utf-8", errors="replace").read()


def test_sigkill_leaves_the_last_will_offline(node_process, observer):
    """keepalive 2 s: the broker declares the node gone after 1.5 x keepalive and publishes its will."""
    process = node_process("killed", keepalive=2)
    observer.wait_for("picluster/nodes/killed/status", "online")
    mark = len(observer.messages)
    process.send_signal(signal.SIGKILL)
    process.wait()
    will = observer.wait_for("picluster/nodes/killed/status", "offline", since=mark, timeout=3 * 1.5 + 5)
    assert will.payload == b"offline"


def test_sigterm_publishes_offline_and_exits_cleanly(node_process, observer):
    process = node_process("termed", keepalive=60)  # the will would take 90 s: offline must come from the node
    observer.wait_for("picluster/nodes/termed/status", "online")
    mark = len(observer.messages)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    observer.wait_for("picluster/nodes/termed/status", "offline", since=mark, timeout=2)
    assert "stopped" in log_of(process)


def test_sigint_also_shuts_down_cleanly(node_process, observer):
    process = node_process("interrupted", keepalive=60)
    observer.wait_for("picluster/nodes/interrupted/status", "online")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 0
    observer.wait_for("picluster/nodes/interrupted/status", "offline", timeout=2)


def test_systemd_notify_ready_and_watchdog(node_process, tmp_path):
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(15)
        process = node_process("notified", env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"})
        received = [notify.recv(4096).decode() for _ in range(3)]
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        received.append(notify.recv(4096).decode())
        while True:  # drain watchdog pings until STOPPING=1
            if "STOPPING=1" in received[-1]:
                break
            received.append(notify.recv(4096).decode())
    assert received[0].startswith("READY=1")
    assert "WATCHDOG=1" in received[1:3]
    assert received[-1] == "STOPPING=1"


def test_json_logs(node_process, observer):
    process = node_process("jsonlog", "--log-format", "json")
    observer.wait_for("picluster/nodes/jsonlog/status", "online")
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=10)
    lines = [json.loads(line) for line in log_of(process).splitlines() if line.strip()]
    assert any(entry["message"].endswith("connected to broker " + f"mqtt://127.0.0.1:{observer.client._port}")
               for entry in lines)
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)
    assert any(entry.get("node") == "jsonlog" for entry in lines)


def test_broker_flag_overrides_the_config(tmp_path, broker, observer):
    config = node_config("flagged", "mqtt://127.0.0.1:1")  # nothing listens on port 1
    path = write_config(tmp_path / "flagged.yaml", config)
    process = start_node_process(path, "--broker", broker.url)
    try:
        observer.wait_for("picluster/nodes/flagged/status", "online")
    finally:
        process.terminate()
        process.wait(10)


def test_embedded_broker_serves_a_node_and_other_clients(tmp_path):
    port = free_port()
    config = node_config("desk", None, protocol="3.1.1")
    config["broker"] = {"embedded": True, "listen": f"127.0.0.1:{port}"}
    process = start_node_process(write_config(tmp_path / "desk.yaml", config))
    try:
        wait_for_port(port, timeout=20)
        import paho.mqtt.client as mqtt
        observer = Observer(port, topics=["picluster/nodes/desk/status"], protocol=mqtt.MQTTv311)
        observer.wait_for("picluster/nodes/desk/status", "online", timeout=15)
        observer.close()
    finally:
        process.terminate()
        assert process.wait(10) == 0, log_of(process)


def test_embedded_broker_port_taken_says_what_to_do(tmp_path, broker):
    config = node_config("desk2", None, protocol="3.1.1")
    config["broker"] = {"embedded": True, "listen": f"127.0.0.1:{broker.port}"}
    process = start_node_process(write_config(tmp_path / "desk2.yaml", config))
    assert process.wait(20) == 1
    log = log_of(process)
    assert f"port 127.0.0.1:{broker.port} is already taken" in log
    assert f"--broker mqtt://127.0.0.1:{broker.port}" in log


def test_no_broker_and_no_discovery_is_a_clear_error(tmp_path):
    process = start_node_process(write_config(tmp_path / "lost.yaml", node_config("lost", None)))
    assert process.wait(20) == 1
    assert "no broker: set mqtt.broker" in log_of(process)


def test_plugins_command_lists_builtins_with_version_and_hooks():
    out = subprocess.run([sys.executable, "-m", "pidaemon", "plugins"], capture_output=True, text=True, check=True).stdout
    ping_line = next(line for line in out.splitlines() if line.startswith("ping "))
    assert "pidaemon" in ping_line and "message, shutdown, subscriptions" in ping_line
    from pidaemon import __version__
    assert __version__ in ping_line


def test_sim_runs_a_server_and_workers_on_the_embedded_broker(tmp_path):
    import paho.mqtt.client as mqtt
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pidaemon", "sim", "--state-dir", str(tmp_path / "sim-state"),
                                "--workers", "2", "--listen", f"127.0.0.1:{port}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        wait_for_port(port, timeout=20)
        observer = Observer(port, topics=["picluster/nodes/+/status"], protocol=mqtt.MQTTv311)
        for node in ("sim-server", "sim-worker-0001", "sim-worker-0002", "sim-lights", "sim-audio"):
            observer.wait_for(f"picluster/nodes/{node}/status", "online", timeout=20)
        observer.close()
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=15)[0]
    assert process.returncode == 0, output
    assert "cluster online: 1 server, 2 workers and sim-lights, sim-audio" in output


def test_sim_on_a_taken_port_says_to_use_that_broker(broker, tmp_path):
    result = subprocess.run([sys.executable, "-m", "pidaemon", "sim", "--state-dir", str(tmp_path / "sim-state"),
                             "--listen", f"127.0.0.1:{broker.port}"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert (f"port 127.0.0.1:{broker.port} is already taken (is a broker such as mosquitto running there?). "
            f"Use that broker with --broker mqtt://127.0.0.1:{broker.port}, or choose another port with --listen") \
        in result.stderr


def test_sim_against_mosquitto(broker, observer, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "pidaemon", "sim", "--state-dir", str(tmp_path / "sim-state"),
                                "--workers", "3", "--broker", broker.url],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for node in ("sim-server", "sim-worker-0001", "sim-worker-0002", "sim-worker-0003"):
            observer.wait_for(f"picluster/nodes/{node}/status", "online", timeout=20)
        telemetry = json.loads(observer.wait_for("picluster/nodes/sim-worker-0002/telemetry", timeout=20).payload)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
    assert process.returncode == 0
    # Simulated workers report readings of a simulated Pi (`pidaemon status` shows them), marked as such.
    readings = telemetry["readings"]
    assert readings["simulated"] is True
    assert 0 <= readings["cpu_percent"] <= 100 and 0 < readings["memory"]["percent"] < 100
    assert 30 < readings["cpu_temperature"] < 80
    for node in ("sim-server", "sim-worker-0003"):
        observer.wait_for(f"picluster/nodes/{node}/status", "offline", timeout=5)


def test_ctrl_c_stops_sim_at_once_when_the_broker_is_unreachable(tmp_path):
    """Before: Ctrl-C was ignored for the 30 s of waiting, then the command said "still trying" and exited 0."""
    unreachable = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    process = subprocess.Popen([sys.executable, "-m", "pidaemon", "sim", "--state-dir", str(tmp_path / "sim-state"),
                                "--workers", "1", "--http", "off", "--broker", unreachable],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_printed(process, "cannot reach broker", timeout=20)
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=15)[0]  # a bound on failure: the wait was 30 s
    assert process.returncode == 1, output
    assert f"stopped without ever reaching the broker {unreachable}" in output
    assert "still trying" not in output and "Traceback" not in output


def wait_until_printed(process, text: str, timeout: float) -> None:
    """Read the child's output line by line until `text` appears (or fail after `timeout` s)."""
    import selectors
    deadline = time.monotonic() + timeout
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if selector.select(timeout=0.2) and text in process.stdout.readline():
            return
    raise TimeoutError(f"{text!r} not printed within {timeout} s")


def test_sim_runs_signing_plugins_insecure_unless_told_otherwise(tmp_path):
    """A desk cluster has no shared secret: announce and discovery, added to it, run `insecure: true`."""
    from pidaemon.sim import SimulatedCluster, roles_with

    extra = tmp_path / "extra.yaml"
    extra.write_text("server:\n  plugins:\n    announce: {targets: ['127.255.255.255'], mdns: false}\n"
                     "worker:\n  plugins:\n    discovery: {mdns: false, secret: a-secret-of-our-own}\n")
    roles, locations = roles_with(extra)
    cluster = SimulatedCluster(1, roles=roles, locations=locations, state_dir=tmp_path / "state")
    announce = cluster.server.config.plugin_sections["announce"]
    discovery = cluster.workers[0].config.plugin_sections["discovery"]
    assert announce["insecure"] is True
    assert (discovery["insecure"], discovery["secret"]) == (False, "a-secret-of-our-own")


def test_a_state_directory_that_cannot_be_written_stops_the_daemon_saying_what_to_change(tmp_path):
    """Before: the server's plugins failed one by one ("optional") and the node still said it was online."""
    from pidaemon.daemon import DaemonError
    from tests.support.nodes import make_daemon

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state directory should be")
    node = make_daemon("stateless", "mqtt://127.0.0.1:1")
    node.config["node"]["state_dir"] = str(blocker / "state")

    async def scenario():
        try:
            await node.start()
        finally:
            await node.shutdown()

    with pytest.raises(DaemonError, match=r"node.state_dir .*/not-a-directory/state is not a writable directory "
                                          r"\(.*\): create it for the daemon's user, or choose another with "
                                          r"--set node.state_dir=DIR"):
        asyncio.run(scenario())


def test_systemd_hears_why_a_node_without_a_broker_is_not_ready_yet(tmp_path):
    """A worker that waits for the server's announcement stays "activating" under systemd (READY=1 comes
    once it has a broker): `systemctl status` shows the STATUS line saying so."""
    address = str(tmp_path / "notify.sock")
    config = node_config("waiting", None, plugins={"discovery": {
        "insecure": True, "listen": "127.0.0.1", "port": free_port(), "mdns": False}})
    path = write_config(tmp_path / "waiting.yaml", config)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(30)
        process = start_node_process(path, env={"NOTIFY_SOCKET": address})
        try:
            first = notify.recv(4096).decode()
        finally:
            process.kill()
            process.wait(timeout=10)
    assert first.startswith("STATUS=looking for the broker"), first
