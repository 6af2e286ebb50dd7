"""Discovery and registration end to end: a server, workers with no broker configured, the registry."""

from __future__ import annotations

import asyncio
import json

from pidaemon import nodeinfo
from tests.support.control_plane import (
    SECRET,
    announce_section,
    config_mapping,
    daemon,
    discovery_section,
    free_udp_port,
    registry_nodes,
    registry_section,
    stop_all,
    wait_until,
)
from tests.support.nodes import start_node_process, write_config


def worker_processes(tmp_path, udp_port, count, **discovery):
    """Worker processes configured like config/worker.yaml: the cluster's secret in a file of mode 600."""
    secret_file = tmp_path / "cluster-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    discovery = {"secret": None, "secret_file": str(secret_file), **discovery}
    processes = []
    for i in range(1, count + 1):
        node_id = f"w{i}"
        plugins = {"ping": {}, "telemetry": {"interval": 1}, "discovery": discovery_section(udp_port, **discovery)}
        data = config_mapping(node_id, None, tmp_path / node_id, plugins=plugins)
        processes.append(start_node_process(write_config(tmp_path / f"{node_id}.yaml", data)))
    return processes





def test_three_workers_without_broker_address_register_with_ip_and_mac(broker, observer, tmp_path):
    """Acceptance: server + 3 workers on loopback, workers configured with no broker: registered within 10 s."""
    udp_port = free_udp_port()
    expected_mac = nodeinfo.mac_address(nodeinfo.interface_for_ip(nodeinfo.primary_ip()))

    async def scenario():
        server = daemon("server", broker.url, tmp_path / "server", role="server", plugins={
            "ping": {}, "registry": registry_section(tmp_path), "announce": announce_section(udp_port)})
        await server.start()
        assert await server.bus.wait_connected(10)
        processes = worker_processes(tmp_path, udp_port, 3)
        try:
            def registered():
                nodes = registry_nodes(observer)
                ready = [nodes.get(f"w{i}") for i in (1, 2, 3)]
                return ready if all(r and r["state"] == "online" and r["ip"] for r in ready) else None
            # The issue's bound: registered within 10 s of the workers' start (a failure bound).
            records = await wait_until(registered, timeout=10, what="three workers registered")
            info = json.loads(observer.wait_for("picluster/nodes/w1/info").payload)
        finally:
            stop_all(processes)
            await server.shutdown()
        return records, info, [open(p.log_path).read() for p in processes]

    records, info, logs = asyncio.run(scenario())
    for record in records:
        assert record["ip"] == "127.0.0.1", record
        assert record["mac"] == expected_mac, record
        assert record["role"] == "worker"
    assert info["discovery"] == {"cluster": "testcluster", "server": "server", "broker": broker.url, "via": "udp"}
    assert all("found the broker" in log for log in logs), logs[0][-2000:]
