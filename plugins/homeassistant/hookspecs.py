"""The `homeassistant` plugin's extension point: entities that other plugins of the node add.

Declared by the `homeassistant` plugin (`hookspecs = pidaemon_plugins.homeassistant.hookspecs`),
so the hook is known on every node that loads it; a plugin that may also run
where it is not loaded marks its implementation `@hookimpl(optionalhook=True)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from pidaemon import hookspec

if TYPE_CHECKING:  # pragma: no cover
    from pidaemon.daemon import Daemon

    from .entities import Entity


@hookspec
def pidaemon_homeassistant_entities(node: "Daemon") -> Iterable["Entity"] | None:
    """Home Assistant entities for this plugin's device, as `pidaemon_plugins.homeassistant.Entity`s.

    Asked whenever the node (re)publishes its discovery: on every connection,
    when the node's `info` changes and when Home Assistant comes online.  Give
    the component (`sensor`, `switch`, ...), an object id (letters, digits,
    `_`, `-`; unique on the node) and Home Assistant's keys for that component;
    the `homeassistant` plugin adds the node's `device` block, its availability
    and a unique id, and retracts an entity that is no longer returned.
    Synchronous and quick.
    """
