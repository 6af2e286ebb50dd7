"""Finding and loading plugins through the `pidaemon.plugins` entry-point group.

Built-in plugins are entry points of pidaemon's own distribution, so a built-in
plugin is found and loaded exactly like one a user pip-installed.

A plugin class may offer hooks of its own to other plugins: its `hookspecs`
attribute names a module or class of `@hookspec` functions (the Warble
service's `pidaemon_warble_builtins`, for one), which the daemon adds to its
plugin manager before any plugin is registered (pytest's `pytest_addhooks`).
A hook name is known if the core or any installed plugin declares it; any
other name a plugin implements is reported, with the closest known name, by
`pidaemon config check`, `pidaemon plugins` and `pidaemon run` alike.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Mapping

import pluggy

from . import hookspecs
from .config import PluginUnavailable
from .hooks import describe_error
from .schema import Section, section_of

ENTRY_POINT_GROUP = "pidaemon.plugins"
HOOK_PREFIX = "pidaemon_"

__all__ = ["ENTRY_POINT_GROUP", "PluginCatalog", "PluginRecord", "declared_hooks", "describe_error",
           "implemented_hooks", "new_plugin_manager"]


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
    hook_errors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": self.version, "state": self.state}
        if self.error:
            data["error"] = self.error
        if self.hook_errors:
            data["hook_errors"] = self.hook_errors
        return data


class PluginCatalog:
    """The installed plugins (entry points) and the classes imported so far."""

    def __init__(self, entry_points: Mapping[str, metadata.EntryPoint] | None = None):
        self.clashes: dict[str, list[str]] = {}  # a name two distributions provide: which ones
        if entry_points is None:
            entry_points = {}
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in entry_points and entry_points[ep.name].value != ep.value:
                    self.clashes.setdefault(ep.name, [_provider(entry_points[ep.name])]).append(_provider(ep))
                entry_points.setdefault(ep.name, ep)
        self.entry_points = dict(entry_points)
        self._classes: dict[str, type] = {}
        self._installed_hooks: set[str] | None = None

    def names(self) -> list[str]:
        return sorted(self.entry_points)

    def version(self, name: str) -> tuple[str, str]:
        """(distribution name, version) of the distribution that provides the plugin."""
        dist = getattr(self.entry_points[name], "dist", None)
        if dist is None:
            return "?", "?"
        return dist.metadata["Name"], dist.version

    def name_of(self, plugin_class: type) -> str | None:
        """The entry-point name under which `plugin_class` is installed, if it is."""
        target = f"{plugin_class.__module__}:{plugin_class.__qualname__}"
        for name, entry_point in self.entry_points.items():
            if entry_point.value in (target, plugin_class) or self._classes.get(name) is plugin_class:
                return name
        return None

    def load(self, name: str) -> type:
        """Import the plugin's class; raise PluginUnavailable naming the plugin."""
        if name in self._classes:
            return self._classes[name]
        entry_point = self.entry_points.get(name)
        if entry_point is None:
            raise PluginUnavailable(f'no plugin named "{name}" is installed', installed=self.names())
        if name in self.clashes:
            raise PluginUnavailable(f'plugin name "{name}" is provided by several installed distributions '
                                    f'({", ".join(self.clashes[name])}): uninstall all but one')
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
        """The plugin's declared config section (a PluginSchemaLookup for `load_config`).

        Also checks the names of the hooks it implements: a misspelled hook is
        a configuration problem, found before anything runs.
        """
        plugin_class = self.load(name)
        self.check_hooks(name, plugin_class)
        schema = getattr(plugin_class, "config_schema", None)
        if schema is None:
            return Section({})
        try:
            return section_of(schema)
        except TypeError as exc:
            raise PluginUnavailable(f'plugin "{name}": {exc}') from None

    def check_hooks(self, name: str, plugin: Any, known: set[str] | None = None) -> None:
        """Raise PluginUnavailable if `plugin` (class or instance) implements a hook nobody declares."""
        known = set(core_hooks()) | declared_hooks(getattr(plugin, "hookspecs", None)) | (known or set())
        unknown = [hook for hook in implemented_hooks(plugin) if hook not in known and not _optional(plugin, hook)]
        if unknown:
            known |= self.installed_hooks()
            unknown = [hook for hook in unknown if hook not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            raise PluginUnavailable(f'plugin "{name}" implements unknown hook "{unknown[0]}"{hint}')

    def installed_hooks(self) -> set[str]:
        """Every hook declared by an installed plugin (imports them all, once, when first asked)."""
        if self._installed_hooks is None:
            hooks: set[str] = set()
            for name in self.names():
                try:
                    hooks |= declared_hooks(getattr(self.load(name), "hookspecs", None))
                except PluginUnavailable:
                    continue  # reported where that plugin is configured
            self._installed_hooks = hooks
        return self._installed_hooks


def _provider(entry_point: metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    return f"{dist.metadata['Name']} {dist.version}" if dist is not None else entry_point.value


def new_plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def core_hooks() -> list[str]:
    return sorted(declared_hooks(hookspecs))


def declared_hooks(namespace: Any) -> set[str]:
    """Names of the `@hookspec` functions of a module or class (None: no hooks)."""
    if namespace is None:
        return set()
    marker = hookspecs.PROJECT + "_spec"
    return {name for name, member in inspect.getmembers(namespace)
            if name.startswith(HOOK_PREFIX) and getattr(member, marker, None) is not None}


def implemented_hooks(plugin: Any) -> list[str]:
    """Names of the hooks a plugin class or instance implements."""
    return sorted(
        name for name, member in inspect.getmembers(plugin)
        if name.startswith(HOOK_PREFIX) and callable(member)
        and getattr(member, hookspecs.PROJECT + "_impl", None) is not None
    )


def _optional(plugin: Any, hook: str) -> bool:
    """`@hookimpl(optionalhook=True)`: the author says the hook may be declared nowhere."""
    options = getattr(getattr(plugin, hook), hookspecs.PROJECT + "_impl", None) or {}
    return bool(options.get("optionalhook"))
