"""The whole plugin API of pidaemon: every hook a plugin may implement.

A plugin is a class published under the `pidaemon.plugins` entry-point group
and named in the `plugins:` section of a node's configuration:

    # pyproject.toml of the plugin's distribution
    [project.entry-points."pidaemon.plugins"]
    co2 = "pidaemon_co2:CO2Plugin"

The daemon imports the class, validates the plugin's config section against
its `config_schema` (a `@pidaemon.schema.settings` class; optional), then
creates one instance per daemon as `PluginClass(node, config)`, where `node`
is the `pidaemon.daemon.Daemon` and `config` an instance of the settings class
(read-only, typed).  Its methods marked with `@hookimpl` are then called as the
hooks below fire.  Since several daemons may run in one process (the cluster
simulator runs a thousand), keep state on the instance, never in module globals.

The daemon calls hooks through pluggy, so an implementation takes any subset
of a hook's arguments, in any order (`def pidaemon_telemetry(self)` is fine).
Hooks whose description says "may be a coroutine" may be written as
`async def`; the daemon awaits them.  An exception in a hook is logged with the
plugin's name (once; repeats are counted, and shown in the node's `info`) and
never stops other plugins' hooks; an exception in `pidaemon_configure` or
`pidaemon_startup` marks the plugin failed (stopping the daemon if the plugin's
section says `required: true`).

Only what every node needs is declared here.  A plugin offers hooks of its own
through its `hookspecs` attribute (see `pidaemon.plugins`): the Warble
service's are in `pidaemon_plugins.warble.hookspecs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from .bus import Message, Subscription
    from .daemon import Daemon

PROJECT = "pidaemon"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------- lifecycle

@hookspec
def pidaemon_configure(node: "Daemon") -> None:
    """Every plugin has been created and registered; the bus is not started.

    Fires once, in plugin order.  Use it to find other plugins
    (`node.lookup(OtherPlugin)`), listen to their events (`node.events.on`)
    or prepare state that needs all of them.  May be a coroutine.  Raising
    marks the plugin failed.
    """


@hookspec
def pidaemon_startup(node: "Daemon") -> None:
    """Start the plugin's work: fires once after the bus has been started.

    The broker may not be reachable yet: do not wait for a connection here (use
    `pidaemon_connected`).  Start long-running work with `node.spawn(coro)`,
    which the daemon cancels at shutdown.  May be a coroutine; it must finish
    within `lifecycle.startup_timeout`.  Raising marks the plugin failed.
    """


@hookspec
def pidaemon_shutdown(node: "Daemon") -> None:
    """The daemon is stopping (SIGTERM, SIGINT or `node.stop()`).

    Fires once, before the node publishes `offline` and disconnects, so the bus
    can still be used.  Each plugin's shutdown is isolated: one that raises or
    hangs does not skip the others.  May be a coroutine; all of them together
    must finish within `lifecycle.shutdown_timeout`.
    """


# ---------------------------------------------------------------- bus

@hookspec
def pidaemon_subscriptions(node: "Daemon") -> Iterable["Subscription | str"]:
    """Topic filters this plugin wants to receive, as `Subscription`s or strings (QoS 1).

    Asked once, after `pidaemon_configure`.  Full topics: build them with
    `node.topic(...)`, which puts the configured prefix in front.  The bus
    subscribes again on every reconnect; matching messages reach this plugin's
    `pidaemon_message`, and no other plugin's.
    """


@hookspec
def pidaemon_message(node: "Daemon", message: "Message") -> None:
    """A message arrived on one of the filters this plugin declared.

    `message.topic`, `message.payload` (bytes), `message.json()` (raises
    `PayloadError` with a clear reason), `message.qos`, `message.retain`,
    `message.response_topic` and `message.correlation_data` (MQTT v5).  Called
    on the event loop: never block; may be a coroutine (run as its own task).
    """


@hookspec
def pidaemon_connected(node: "Daemon") -> None:
    """The bus has (re)connected: subscriptions are restored and `online` is published.

    Fires on every connection, the first included.  Republish retained state
    here.  May be a coroutine.
    """


@hookspec
def pidaemon_disconnected(node: "Daemon") -> None:
    """The bus lost its connection; it reconnects by itself with backoff."""


@hookspec(firstresult=True)
def pidaemon_find_broker(node: "Daemon") -> Any:
    """No broker is configured (`mqtt.broker: null`): return where to find one.

    The first plugin that answers wins.  Return a coroutine that resolves to
    a `BrokerAddress` or a `mqtt://HOST:PORT` string (a discovery plugin
    listens for the server's announcement), or None to pass.
    """


# ---------------------------------------------------------------- contributions

@hookspec
def pidaemon_info(node: "Daemon") -> Mapping[str, Any] | None:
    """Fields to add to the node's retained `info` message.

    Return a mapping; lists under `capabilities` (e.g. `["warble"]`) from every
    plugin are joined, other keys are merged (a later plugin does not silently
    replace an earlier one's key: the clash is logged).
    """


@hookspec
def pidaemon_telemetry(node: "Daemon") -> Mapping[str, Any] | None:
    """Readings to add to this node's telemetry, as `{"name": value}`.

    Called every telemetry interval by `node.collect_telemetry()`; values must
    be JSON-ready.  Omit a reading the machine does not have, never fake it.
    Synchronous and quick: read a cached value if the sensor is slow.
    """
