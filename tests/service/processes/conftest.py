"""Tests that start whole clusters of processes (mosquitto, a server, workers), each a minute or more.

The default suite (`scripts/test`, CI) skips them, so that it stays short; run
them by naming this folder, or one of its files:

    scripts/test tests/service/processes

or anywhere with PIDAEMON_PROCESS_TESTS=1 in the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _asked_for(config) -> bool:
    if os.environ.get("PIDAEMON_PROCESS_TESTS") == "1":
        return True
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        path = (base / arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config, items):
    if _asked_for(config):
        return
    skip = pytest.mark.skip(reason="starts a whole cluster of processes: scripts/test tests/service/processes")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)
