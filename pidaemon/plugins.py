"""Finding and loading plugins through the `pidaemon.plugins` entry-point group.

Built-in plugins are entry points of pidaemon's own distribution, so a built-in
plugin is found and loaded exactly like one a user pip-installed.
"""

from __future__ import annotations

import inspect
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Mapping

import pluggy

from . import hookspecs
from .config import PluginUnavailable
from .schema import Section

ENTRY_POINT_GROUP = "pidaemon.plugins"


@dataclass
class PluginRecord:
    """What the daemon knows of one configured plugin, for status and `pidaemon plugins`."""

    name: str
    version: str = "?"
    distribution: str = "?"
    state: str = "configured"  # configured, running, failed, disabled, stopped
    error: str | None = None
    required: bool = False
    hooks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = {"version": self.version, "state": self.state}
        if self.error:
            data["error"] = self.error
        return data


class PluginCatalog:
    """The installed plugins (entry points) and the classes imported so far."""

    def __init__(self, entry_points: Mapping[str, metadata.EntryPoint] | None = None):
        if entry_points is None:
            entry_points = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
        self.entry_points = dict(entry_points)
        self._classes: dict[str, type] = {}

    def names(self) -> list[str]:
        return sorted(self.entry_points)

    def version(self, name: str) -> tuple[str, str]:
        """(distribution name, version) of the distribution that provides the plugin."""
        dist = getattr(self.entry_points[name], "dist", None)
        if dist is None:
            return "?", "?"
        return dist.metadata["Name"], dist.version

    def load(self, name: str) -> type:
        """Import the plugin's class; raise PluginUnavailable naming the plugin."""
        if name in self._classes:
            return self._classes[name]
        entry_point = self.entry_points.get(name)
        if entry_point is None:
            raise PluginUnavailable(f'no plugin named "{name}" is installed', installed=self.names())
        try:
            plugin_class = entry_point.load()
        except Exception as exc:  # any import failure of third-party code
            raise PluginUnavailable(
                f'error importing plugin "{name}" ({entry_point.value}): {type(exc).__name__}: {exc}'
            ) from exc
        if not inspect.isclass(plugin_class):
            raise PluginUnavailable(
                f'plugin "{name}" ({entry_point.value}) must name a class, not {type(plugin_class).__name__}')
        self._classes[name] = plugin_class
        return plugin_class

    def schema(self, name: str, section: Mapping[str, Any] | None = None) -> Section:
        """The plugin's declared config section (a PluginSchemaLookup for `load_config`)."""
        schema = getattr(self.load(name), "config_schema", None) or Section({})
        if not isinstance(schema, Section):
            raise PluginUnavailable(f'plugin "{name}": config_schema must be a pidaemon.schema.Section')
        return schema


def new_plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def implemented_hooks(plugin: Any) -> list[str]:
    """Names of the hooks a plugin class or instance implements."""
    return sorted(
        name for name, member in inspect.getmembers(plugin)
        if name.startswith("pidaemon_") and callable(member)
        and getattr(member, hookspecs.PROJECT + "_impl", None) is not None
    )


def describe_error(exc: BaseException) -> str:
    """One line for status reports: the exception and where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
