"""Plugins in tests: in-test classes as if installed, and real packages installed with pip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from pidaemon.plugins import PluginCatalog


class StaticEntryPoint:
    """Stands in for an importlib entry point of an in-test plugin class."""

    def __init__(self, name, value):
        self.name, self.value, self.dist = name, value, None

    def load(self):
        return self.value


def catalog_with(**classes) -> PluginCatalog:
    """The installed plugins plus in-test plugin classes, by name."""
    catalog = PluginCatalog()
    catalog.entry_points.update({name: StaticEntryPoint(name, cls) for name, cls in classes.items()})
    return catalog


def pip_install(source: Path, target: Path, build: Path) -> dict[str, str]:
    """pip-install the package at `source` into the directory `target` (not the test venv).

    Returns an environment whose PYTHONPATH makes it importable, for child processes.
    """
    copy = build / source.name
    shutil.copytree(source, copy)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(copy)], check=True)
    return {**os.environ, "PYTHONPATH": str(target)}
