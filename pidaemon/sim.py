"""A whole cluster in one process: a server, N simulated workers, the lamp and the speaker, on one loop.

Used by `pidaemon sim` (the README's first command) and by benchmarks.  With no
`--broker`, the server hosts the embedded broker (amqtt); otherwise every node
connects to the given broker (mosquitto in production-like trials).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .config import BrokerAddress, config_from_mapping
from .daemon import Daemon
from .plugins import PluginCatalog
from .warble import Limits, Runner

log = logging.getLogger("pidaemon.sim")

SERVER_PLUGINS = {
    "ping": {}, "telemetry": {"interval": 5},
    "registry": {"ping_interval": 2, "publish_delay": 0.5},
    # Simulated workers share this machine's CPU: the 30 % rule of a real cluster would starve them.
    "warble_server": {"cpu_threshold": 101},
}
WORKER_PLUGINS = {"ping": {}, "telemetry": {"interval": 5}, "warble_worker": {"slots": 2}}
# The lamp and the speaker, with simulated hardware.
DEVICE_NODES = {"sim-lights": ("lights", {"ping": {}, "lights": {}}),
                "sim-audio": ("audio", {"ping": {}, "sound": {}})}


def simulated_facts(index: int, node_id: str) -> dict[str, Any]:
    """Distinct, clearly fake machine facts for simulated node `index` (0 is the server)."""
    return {"hostname": node_id, "ip": "127.0.0.1", "mac": f"02:00:00:00:{index >> 8:02x}:{index & 0xff:02x}",
            "os": "simulated", "machine": "simulated", "cpu_count": 4}


def sim_config(node_id: str, role: str, *, broker: BrokerAddress | None, listen: str | None,
               prefix: str, plugins: dict) -> dict[str, Any]:
    config: dict[str, Any] = {
        "node": {"role": role, "id": node_id, "state_dir": ".pidaemon-state/" + node_id},
        "mqtt": {"broker": broker.url if broker else None, "prefix": prefix,
                 "protocol": "5" if broker else "3.1.1", "keepalive": 30,
                 "reconnect": {"min_delay": 0.2, "max_delay": 5}},
        "plugins": dict(plugins),
    }
    if listen:
        config["broker"] = {"embedded": True, "listen": listen}
    return config


class SimulatedCluster:
    def __init__(self, workers: int, *, broker: BrokerAddress | None = None, listen: str = "127.0.0.1:1883",
                 prefix: str = "picluster", http: str | None = "127.0.0.1:8080",
                 server_plugins: dict | None = None, worker_plugins: dict | None = None, devices: bool = True,
                 runner_jobs: int = 4):
        self.catalog = PluginCatalog()
        host, _, port = listen.rpartition(":")
        worker_broker = broker or BrokerAddress(host if host not in ("0.0.0.0", "") else "127.0.0.1", int(port), False)
        # One sandboxed runner for every simulated worker: a zygote per worker would
        # mean a thousand processes.  Jobs still run one child process each.
        self.runner = Runner(Limits(), max_jobs=runner_jobs)
        server_plugins = dict(SERVER_PLUGINS if server_plugins is None else server_plugins)
        if http and "warble_server" in server_plugins:
            server_plugins["warble_http"] = {"listen": http}
        self.server = self._daemon(0, "sim-server", "server", broker=broker, listen=None if broker else listen,
                                   prefix=prefix, plugins=server_plugins)
        self.workers = [
            self._daemon(i, f"sim-worker-{i:04d}", "worker", broker=worker_broker, listen=None, prefix=prefix,
                         plugins=WORKER_PLUGINS if worker_plugins is None else worker_plugins,
                         protocol="5" if broker else "3.1.1")
            for i in range(1, workers + 1)
        ]
        self.devices = [
            self._daemon(len(self.workers) + 1 + i, node_id, role, broker=worker_broker, listen=None, prefix=prefix,
                         plugins=plugins, protocol="5" if broker else "3.1.1")
            for i, (node_id, (role, plugins)) in enumerate(DEVICE_NODES.items())
        ] if devices else []
        self.server.embedded_broker_hint = ("Use that broker with --broker mqtt://{host}:{port}, "
                                            "or choose another port with --listen HOST:PORT")
        self.nodes = [self.server, *self.workers, *self.devices]

    def _daemon(self, index, node_id, role, *, protocol=None, **kw) -> Daemon:
        data = sim_config(node_id, role, **kw)
        if protocol:
            data["mqtt"]["protocol"] = protocol
        config = config_from_mapping(data, origin=f"<sim {node_id}>", plugin_schema=self.catalog.schema)
        return Daemon(config, catalog=self.catalog, facts=simulated_facts(index, node_id),
                      services={"warble_runner": self.runner})

    async def start(self) -> None:
        await asyncio.to_thread(self.runner.start)
        await self.server.start()  # first: it may host the broker
        for node in [*self.workers, *self.devices]:
            await node.start()

    async def wait_online(self, timeout: float = 30) -> bool:
        results = await asyncio.gather(*(n.bus.wait_connected(timeout) for n in self.nodes))
        return all(results)

    async def shutdown(self) -> None:
        await asyncio.gather(*(n.shutdown() for n in [*self.workers, *self.devices]))
        await self.server.shutdown()  # last: it may host the broker
        await asyncio.to_thread(self.runner.close)
