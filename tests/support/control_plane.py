"""Shared pieces of the control-plane tests: configurations, nodes, fake machine parts, retained messages."""

from __future__ import annotations

import json
import signal
import socket
import stat
from pathlib import Path

from pidaemon.config import config_from_mapping
from pidaemon.daemon import Daemon
from pidaemon.plugins import PluginCatalog
from tests.support.nodes import FAKE_FACTS
from tests.support.waiting import wait_until  # noqa: F401  (the control tests import it from here)

SECRET = "test-cluster-secret"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def announce_section(udp_port: int, **extra) -> dict:
    """Loopback only: tests never broadcast on the LAN nor use mDNS outside 127.0.0.1."""
    return {"port": udp_port, "interval": 0.3, "targets": ["127.255.255.255"], "broker_host": "127.0.0.1",
            "cluster": "testcluster", "mdns": False, "secret": SECRET, "query_port": 0, **extra}


def discovery_section(udp_port: int, **extra) -> dict:
    return {"port": udp_port, "listen": "0.0.0.0", "mdns": False, "secret": SECRET, "cluster": "testcluster",
            "follow_after": 0.5, **extra}


def registry_section(tmp_path: Path, **extra) -> dict:
    return {"db": str(tmp_path / "registry.sqlite3"), "ping_interval": 0.5, "missed_pings": 3,
            "publish_delay": 0.1, "refresh_interval": 0.5, "flush_interval": 0.2, "persist_interval": 1, **extra}


def config_mapping(node_id: str, broker_url: str | None, state_dir: Path, *, role: str = "worker",
                   plugins: dict, keepalive: int = 10, prefix: str = "picluster") -> dict:
    return {
        "node": {"role": role, "id": node_id, "state_dir": str(state_dir)},
        "mqtt": {"broker": broker_url, "prefix": prefix, "keepalive": keepalive,
                 "reconnect": {"min_delay": 0.1, "max_delay": 1.0}},
        "lifecycle": {"shutdown_timeout": 3},
        "logging": {"level": "info"},
        "plugins": plugins,
    }


def daemon(node_id: str, broker_url: str | None, state_dir: Path, *, catalog: PluginCatalog | None = None,
           facts: dict | None = None, **kw) -> Daemon:
    catalog = catalog or PluginCatalog()
    state_dir.mkdir(parents=True, exist_ok=True)
    data = config_mapping(node_id, broker_url, state_dir, **kw)
    config = config_from_mapping(data, plugin_schema=catalog.schema)
    return Daemon(config, catalog=catalog, facts=dict(facts or FAKE_FACTS, hostname=node_id))



def latest_json(observer, topic: str):
    """The payload of the last message seen on `topic`, decoded, or None."""
    with observer._lock:
        for message in reversed(observer.messages):
            if message.topic == topic:
                return json.loads(message.payload) if message.payload else None
    return None


def registry_nodes(observer, prefix: str = "picluster") -> dict:
    registry = latest_json(observer, f"{prefix}/registry")
    return registry["nodes"] if registry else {}


def stop_all(processes):
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except Exception:
            process.kill()


def fake_thermal_tree(root: Path) -> Path:
    for index, (kind, millidegrees) in enumerate([("cpu-thermal", 48312), ("gpu-thermal", 45000)]):
        zone = root / f"thermal_zone{index}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(f"{millidegrees}\n")
    (root / "cooling_device0").mkdir()  # not a zone: ignored
    return root


def fake_vcgencmd(path: Path, answer: str = "throttled=0x50005") -> Path:
    path.write_text(f"#!/bin/sh\n[ \"$1\" = get_throttled ] && echo '{answer}' && exit 0\nexit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path
