"""Running pidaemon nodes in tests: as real processes, or as Daemon objects on one loop."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pidaemon.config import config_from_mapping
from pidaemon.daemon import Daemon
from pidaemon.plugins import PluginCatalog

# Each test node's own state directory, under one that goes when the test run ends.
_STATE_ROOT = tempfile.TemporaryDirectory(prefix="pidaemon-test-state-")
STATE_ROOT = _STATE_ROOT.name

FAKE_FACTS = {"hostname": "testhost", "ip": "127.0.0.1", "mac": "02:00:00:00:00:01", "os": "Linux test",
              "machine": "x86_64", "cpu_count": 4}


def node_config(node_id: str, broker_url: str, *, role: str = "worker", plugins=None, **mqtt) -> dict:
    """A small valid configuration mapping for tests (reconnect delays kept short)."""
    return {
        "node": {"role": role, "id": node_id, "state_dir": tempfile.mkdtemp(prefix=f"{node_id}-", dir=STATE_ROOT)},
        "mqtt": {"broker": broker_url, "keepalive": 5, "reconnect": {"min_delay": 0.1, "max_delay": 1.0}, **mqtt},
        "lifecycle": {"shutdown_timeout": 2},
        "plugins": {"ping": {}} if plugins is None else plugins,
    }


def make_daemon(node_id: str, broker_url: str, catalog: PluginCatalog | None = None, **kw) -> Daemon:
    catalog = catalog or PluginCatalog()
    config = config_from_mapping(node_config(node_id, broker_url, **kw), plugin_schema=catalog.schema)
    return Daemon(config, catalog=catalog, facts=dict(FAKE_FACTS))


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def start_node_process(config_path: Path, *args: str, env: dict | None = None, log_path: Path | None = None):
    """`python -m pidaemon run --config FILE ARGS...` as a child process, its log in a file."""
    log_path = log_path or config_path.with_suffix(".log")
    environment = {**os.environ, **(env or {})}
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "pidaemon", "run", "--config", str(config_path), *args],
                               stdout=log, stderr=subprocess.STDOUT, env=environment)
    process.log_path = log_path
    return process


def wait_for_log(process, text: str, timeout: float = 15.0) -> None:
    """Wait until `text` appears in the log of a node started by start_node_process.

    Raises TimeoutError (with the log) after `timeout` s or if the process ends first:
    a bound on failure, not a timing claim.
    """
    deadline = time.monotonic() + timeout
    while text not in open(process.log_path).read():
        if process.poll() is not None or time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not logged (process {'ended' if process.poll() is not None else 'running'}):"
                               f"\n{open(process.log_path).read()}")
        time.sleep(0.05)
