"""A small Warble cluster for tests: a server (registry + warble_server) and workers, on one loop or as processes."""

from __future__ import annotations

import asyncio
import json

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.nodes import make_daemon, node_config
from tests.support.waiting import wait_until

FAST_REGISTRY = {"ping_interval": 0.5, "missed_pings": 3, "publish_delay": 0.1, "flush_interval": 0.2}


def server_plugins(tmp_path, **warble) -> dict:
    return {
        "ping": {},
        "registry": {**FAST_REGISTRY, "db": str(tmp_path / "registry.sqlite3")},
        "warble_server": {"db": str(tmp_path / "jobs.sqlite3"), "store_db": str(tmp_path / "store.sqlite3"),
                          "cpu_threshold": 101, **warble},  # every worker shares this machine's CPU
    }


def worker_plugins(slots=2, options=None, **limits) -> dict:
    return {"ping": {}, "warble_worker": {"slots": slots, "limits": {"time_limit": 5, **limits}, **(options or {})}}


def server_config(node_id, broker_url, tmp_path, **warble) -> dict:
    config = node_config(node_id, broker_url, role="server", plugins=server_plugins(tmp_path, **warble),
                         session_expiry=600)
    config["node"]["state_dir"] = str(tmp_path)
    return config


def worker_config(node_id, broker_url, slots=2, **limits) -> dict:
    return node_config(node_id, broker_url, plugins=worker_plugins(slots, **limits))



class InProcessCluster:
    def __init__(self, broker_url, tmp_path, workers=2, slots=2, http_listen=None, more_plugins=None,
                 worker_options=None, **warble):
        plugins = {**server_plugins(tmp_path, **warble), **(more_plugins or {})}
        if http_listen:  # the Warble HTTP API: its routes (warble_http) on the node's HTTP server (http)
            plugins["http"] = {"listen": http_listen, **plugins.get("http", {})}
            plugins["warble_http"] = {}
        self.broker_url, self.tmp_path, self.server_plugins = broker_url, tmp_path, plugins
        self.server = self.new_server()
        self.workers = [make_daemon(f"worker-{i}", broker_url, plugins=worker_plugins(slots, worker_options))
                        for i in range(1, workers + 1)]

    def new_server(self):
        """A server daemon as this cluster's (same id, state and settings): to stand in for one that stopped."""
        server = make_daemon("server", self.broker_url, role="server", plugins=self.server_plugins, session_expiry=600)
        server.config["node"]["state_dir"] = str(self.tmp_path)
        return server

    @property
    def service(self):
        return self.server.plugin("warble_server")

    async def __aenter__(self):
        await self.server.start()
        for worker in self.workers:
            await worker.start()
        registry = self.server.plugin("registry")
        # Connected means subscribed (SUBACK): a submission from now on reaches the server, workers or none.
        await wait_until(lambda: self.server.bus.connected, 30, what="server connected")
        await wait_until(lambda: len(registry.healthy_nodes("warble")) == len(self.workers), 30, what="workers healthy")
        return self

    async def __aexit__(self, *exc):
        await asyncio.gather(*(w.shutdown() for w in self.workers))
        await self.server.shutdown()


# ---------------------------------------------------------------- clients of the service

def props(response_topic=None, correlation=None, **user_properties) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    if response_topic is not None:
        properties.ResponseTopic = response_topic
    if correlation is not None:
        properties.CorrelationData = correlation
    if user_properties:
        properties.UserProperty = list(user_properties.items())
    return properties


async def submit(observer, payload, properties=None, topic="picluster/warble/submit"):
    payload = payload if isinstance(payload, str) else json.dumps(payload)
    await asyncio.to_thread(observer.publish, topic, payload, 1, False, properties)


def on(observer, topic):
    return [m for m in observer.messages if m.topic == topic]


def is_answer(message) -> bool:
    """Something the server says about a job or a history (not a submission, not a node's status)."""
    try:
        data = json.loads(message.payload)
    except ValueError:
        return False
    return isinstance(data, dict) and ("status" in data or "jobs" in data)
