"""The whole plugin API of pidaemon: every hook a plugin may implement.

A plugin is a class published under the `pidaemon.plugins` entry-point group
and named in the `plugins:` section of a node's configuration:

    # pyproject.toml of the plugin's distribution
    [project.entry-points."pidaemon.plugins"]
    co2 = "pidaemon_co2:CO2Plugin"

The daemon imports the class, validates the plugin's config section against
its `config_schema` (a `pidaemon.schema.Section`; optional), then creates one
instance per daemon as `PluginClass(node, config)`, where `node` is the
`pidaemon.daemon.Daemon` and `config` the plugin's validated section (a dict).
Its methods marked with `@hookimpl` are then called as the hooks below fire.
Since several daemons may run in one process (the cluster simulator runs a
thousand), keep state on the instance, never in module globals.

Hooks whose description says "may be a coroutine" may be written as
`async def`; the daemon awaits them.  An exception in a hook is logged with the
plugin's name and never stops other plugins' hooks; an exception in
`pidaemon_startup` marks the plugin failed (stopping the daemon if the plugin's
section says `required: true`).
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

    Fires once, in plugin order.  Use it to look at other plugins
    (`node.plugin("name")`) or prepare state that needs all of them.
    Synchronous.
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


@hookspec
def pidaemon_warble_builtins(node: "Daemon") -> Iterable[Any] | None:
    """Warble built-in functions this plugin provides, as `pidaemon.warble.Builtin`s.

    Collected by `node.collect_warble_builtins()` for every job a worker runs.
    The `warble_worker` plugin adds `LIGHTS` and `PLAYSOUND` this way (as MQTT
    commands to the lamp and the speaker); a sensor plugin could add
    `TEMPERATURE()`.  `validate` runs in the sandbox and must be picklable;
    an effect built-in's `perform` runs in the daemon (see docs/warble.md).
    """


@hookspec
def pidaemon_warble_intake(node: "Daemon", submit_post) -> None:
    """The Warble service on this node takes posts from feeds (social networks, chats).

    Fires once on the server, when the `warble_server` plugin has started.
    Keep `submit_post(post_id, user, text) -> dict` and call it (on the event
    loop) for every post that arrives: it finds the `#pi{...}` program in the
    text, queues it and returns the acknowledgement or the rejection.  A
    `post_id` seen before is taken once, so re-reading a timeline is harmless.
    """
