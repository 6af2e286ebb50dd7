"""Hardware backends found by name: a device plugin's own, or one another distribution adds.

A device plugin (the lamp, the speaker, the relays) drives its hardware
through one small interface, one class per kind of hardware, chosen by its
`backend:` setting.  Its own backends are named by `module:Class` and imported
only when chosen (a worker never imports a hardware library); another
distribution adds one under the plugin's entry-point group, with nothing to
change in the plugin:

    [project.entry-points."pidaemon.lights_backends"]
    dmx = "pidaemon_dmx_lamp:DmxStrip"

A backend class may declare `config_schema`, a `@settings` class for the
plugin's `options:` mapping; `backend_options` checks the mapping against it
and reports every problem with its dotted path.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any, Mapping

from .schema import Problem, section_of


class BackendError(RuntimeError):
    """A backend cannot be found or cannot drive its hardware (library missing, bad options); says why."""


class Backends:
    """The backends of one kind of device: `what` ("lights") names them in errors."""

    def __init__(self, what: str, group: str, base: type, builtins: Mapping[str, str]):
        self.what = what
        self.group = group            # the entry-point group other distributions register in
        self.base = base              # the interface every backend class implements
        self.builtins = dict(builtins)  # name: "module:Class", imported when chosen

    def installed(self) -> dict[str, metadata.EntryPoint]:
        """Backends registered by other distributions, by name (not imported)."""
        return {entry.name: entry for entry in metadata.entry_points(group=self.group)}

    def names(self) -> list[str]:
        return sorted({*self.builtins, *self.installed()})

    def check_name(self, value: Any) -> str:
        """The `backend` setting: the name of a built-in or installed backend (ValueError, listing them, if not)."""
        if not isinstance(value, str):
            raise ValueError("give the backend's name")
        if value not in self.builtins and value not in self.installed():
            raise ValueError(f"installed: {', '.join(self.names())}")
        return value

    def load(self, name: str) -> type:
        """The class of backend `name`, imported now; BackendError says why it cannot be had."""
        if name in self.builtins:
            module, _, attribute = self.builtins[name].partition(":")
            return getattr(importlib.import_module(module), attribute)
        entry = self.installed().get(name)
        if entry is None:
            raise BackendError(f'no {self.what} backend "{name}" is installed (known: {", ".join(self.names())})')
        try:
            backend = entry.load()
        except Exception as exc:  # third-party code: any import failure
            raise BackendError(f'{self.what} backend "{name}" ({entry.value}) cannot be imported: '
                               f"{type(exc).__name__}: {exc}") from exc
        if not (isinstance(backend, type) and issubclass(backend, self.base)):
            raise BackendError(f'{self.what} backend "{name}" ({entry.value}) is not a {self.base.__name__} class')
        return backend


def check_options(backends: Backends, values: Mapping[str, Any], path: tuple[str, ...],
                  problems: list[Problem]) -> None:
    """A device plugin's `check_whole`: the `options:` of a built-in backend against its `config_schema`,
    so that `pidaemon config check` reports them.  A backend of another distribution is not imported to
    check a file; its options are checked when it starts (`backend_options`)."""
    name = values.get("backend")
    if name not in backends.builtins:
        return
    backend = backends.load(name)
    schema = getattr(backend, "config_schema", None)
    options, where = _plain(values.get("options") or {}), path + ("options",)
    if schema is None:
        if options:
            problems.append(Problem(where, f'the "{name}" backend takes no options, got {", ".join(sorted(options))}'))
        return
    section_of(schema).validate(options, where, problems)


def backend_options(backend: type, options: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """`options` checked against the backend's `config_schema`: its settings instance (None without one).

    Raises BackendError listing every problem with its dotted path.
    """
    options = _plain(options or {})
    schema = getattr(backend, "config_schema", None)
    if schema is None:
        if options:
            raise BackendError(f'{".".join(path)}: the "{backend.name}" backend takes no options, '
                               f'got {", ".join(sorted(options))}')
        return None
    problems: list[Problem] = []
    values = section_of(schema).validate(options, path, problems)
    if problems:
        raise BackendError("; ".join(f"{p.dotted}: {p.message}" for p in problems))
    return schema.from_mapping(values)


def _plain(value: Any) -> Any:
    """Read-only settings (mapping proxies, tuples) back to what a section validates (dicts, lists)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
