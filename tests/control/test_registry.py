"""The registry: health state machine, debounced publication, SQLite persistence across a server restart."""

from __future__ import annotations

import asyncio
import json

from pidaemon.bus import Message
from tests.control.helpers import daemon, registry_section, wait_until


def make_registry(tmp_path, **extra):
    server = daemon("server", "mqtt://127.0.0.1:1", tmp_path / "server", role="server",
                    plugins={"registry": registry_section(tmp_path, **extra)})
    server.load_plugins()
    published = []
    server.publish = lambda topic, payload, qos=0, retain=False, **props: published.append(
        (topic, payload, retain)) or True
    registry = server.plugin("registry")
    registry.pidaemon_configure(server)
    return server, registry, published


def deliver(server, topic, payload, retain=False):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    server.plugin("registry").pidaemon_message(server, Message(topic=topic, payload=data, retain=retain))


def info(node_id, **extra):
    return {"id": node_id, "role": "worker", "ip": "10.0.0.7", "mac": "b8:27:eb:00:00:07", "hostname": node_id,
            "capabilities": ["warble"], "plugins": {"ping": {"state": "running"}, "lights": {"state": "failed"}},
            **extra}


def test_health_state_machine(tmp_path):
    async def scenario():
        server, registry, published = make_registry(tmp_path, missed_pings=3)
        deliver(server, "picluster/nodes/pi1/status", b"online")
        deliver(server, "picluster/nodes/pi1/info", info("pi1"))
        rec = registry.records["pi1"]
        steps = [rec.state]
        for seq in (1, 2):  # two misses: still online
            registry.seq = seq
            registry._count_misses(seq)
        steps.append((rec.state, rec.misses))
        registry.seq = 3
        registry._count_misses(3)
        steps.append((rec.state, rec.misses, registry.healthy_nodes()))
        deliver(server, "picluster/nodes/pi1/status", b"online", retain=True)  # stale retained copy
        steps.append(rec.state)
        deliver(server, "picluster/registry/pong/server", {"node": "pi1", "seq": 3})
        steps.append((rec.state, rec.misses, registry.healthy_nodes(capability="warble")))
        deliver(server, "picluster/nodes/pi1/status", b"offline")
        registry.seq = 4
        registry._count_misses(4)  # offline nodes are not pinged
        steps.append((rec.state, rec.misses))
        deliver(server, "picluster/nodes/pi1/status", b"")  # retained status cleared: forgotten
        steps.append("pi1" in registry.records)
        return steps, published, registry

    steps, published, registry = asyncio.run(scenario())
    assert steps == ["online", ("online", 2), ("unhealthy", 3, []), "unhealthy", ("online", 0, ["pi1"]),
                     ("offline", 0), False]
    health = [p["state"] for t, p, r in published if t == "picluster/nodes/pi1/health" and p]
    assert health == ["online", "unhealthy", "online", "offline"]


def test_a_node_that_came_online_after_a_ping_is_not_blamed_for_it(tmp_path):
    async def scenario():
        server, registry, _ = make_registry(tmp_path, missed_pings=1)
        registry.seq = 10  # ping 10 is out
        deliver(server, "picluster/nodes/late/status", b"online")
        registry._count_misses(10)
        return registry.records["late"].state

    assert asyncio.run(scenario()) == "online"


def test_record_fields_and_debounced_publication(tmp_path):
    async def scenario():
        server, registry, published = make_registry(tmp_path, publish_delay=0.2)
        for i in range(500):
            deliver(server, f"picluster/nodes/pi{i}/status", b"online")
            deliver(server, f"picluster/nodes/pi{i}/info", info(f"pi{i}"))
        deliver(server, "picluster/nodes/pi1/telemetry", {"node": "pi1", "time": 5.0, "readings": {
            "cpu_percent": 12.5, "memory": {"total": 1, "available": 1, "percent": 40.0}, "cpu_temperature": 48.3,
            "load_average": [0.5, 0.4, 0.3]}})
        await asyncio.sleep(0.5)
        return [p for t, p, r in published if t == "picluster/registry"]

    registries = asyncio.run(scenario())
    assert len(registries) == 1  # 1000 changes, one publication
    record = registries[0]["nodes"]["pi1"]
    assert registries[0]["counts"]["online"] == 500
    assert {k: record[k] for k in ("id", "role", "ip", "mac", "state", "capabilities", "failed_plugins")} == {
        "id": "pi1", "role": "worker", "ip": "10.0.0.7", "mac": "b8:27:eb:00:00:07", "state": "online",
        "capabilities": ["warble"], "failed_plugins": ["lights"]}
    assert record["telemetry"] == {"time": 5.0, "cpu_percent": 12.5, "memory_percent": 40.0,
                                   "cpu_temperature": 48.3, "load_1m": 0.5}
    assert record["since"] > 0 and record["last_seen"] >= record["since"]


def test_registry_survives_a_server_restart_in_sqlite(broker, observer, tmp_path):
    """The server and the broker restart (retained messages gone): the registry comes back from SQLite."""
    async def scenario():
        server = daemon("server", broker.url, tmp_path / "server", role="server",
                        plugins={"ping": {}, "registry": registry_section(tmp_path)})
        workers = [daemon(n, broker.url, tmp_path / n, plugins={"ping": {}}) for n in ("stays", "leaves")]
        await server.start()
        for w in workers:
            await w.start()
        registry = server.plugin("registry")
        await wait_until(lambda: all((registry.record(n) or {}).get("state") == "online" for n in ("stays", "leaves")),
                         what="registered")
        await workers[1].shutdown()
        await wait_until(lambda: registry.record("leaves")["state"] == "offline", what="offline")
        before = registry.record("leaves")
        await server.shutdown()
        await workers[0].shutdown()
        await asyncio.to_thread(broker.restart)

        mark = len(observer.messages)
        again = daemon("server", broker.url, tmp_path / "server", role="server",
                       plugins={"ping": {}, "registry": registry_section(tmp_path)})
        await again.start()
        loaded = again.plugin("registry").record("leaves")
        first = await asyncio.to_thread(observer.wait_for, "picluster/registry", None, 15, mark)
        await again.shutdown()
        return before, loaded, json.loads(first.payload)

    before, loaded, published = asyncio.run(scenario())
    assert loaded == before
    assert published["nodes"]["leaves"]["state"] == "offline"
    assert published["nodes"]["leaves"]["since"] == before["since"]
    assert "stays" in published["nodes"]
