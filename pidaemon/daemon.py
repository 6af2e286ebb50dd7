"""The daemon: one node of the cluster, its plugins and its bus, from start to stop.

A Daemon holds all of its state on the instance (no module-level mutable
state), so that many can run on one event loop: the simulator runs a thousand.

Start-up order: create and register the plugins, `pidaemon_configure`, the
embedded broker if configured, find the broker, start the bus (connecting in
the background), `pidaemon_startup` for each plugin, then READY=1 to systemd.
Shutdown runs each plugin's `pidaemon_shutdown` in isolation, cancels the tasks
plugins spawned, publishes `offline` and disconnects.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Iterable

from . import __version__
from .bus import Bus, BusSettings, Message, Subscription, topic_matches
from .config import BrokerAddress, Config, PluginUnavailable, parse_broker_url, render_node_id
from .embedded_broker import EmbeddedBroker
from .logs import NodeLogAdapter
from .nodeinfo import machine_facts
from .plugins import PluginCatalog, PluginRecord, describe_error, implemented_hooks, new_plugin_manager
from .systemd import SystemdNotifier
from .topics import Topics

INFO_SCHEMA_VERSION = 1


class DaemonError(Exception):
    """The daemon cannot run: a core part or a required plugin failed."""


class Daemon:
    embedded_broker_hint = ("Use that broker with --broker mqtt://{host}:{port} --set broker.embedded=false, "
                            "or choose another port with --set broker.listen=HOST:PORT")

    def __init__(self, config: Config, *, catalog: PluginCatalog | None = None,
                 facts: dict[str, Any] | None = None, notifier: SystemdNotifier | None = None,
                 services: dict[str, Any] | None = None):
        self.config = config
        # Objects that the program embedding this daemon lends to its plugins, e.g. the
        # simulator's one Warble runner shared by a thousand simulated workers.
        self.services: dict[str, Any] = dict(services or {})
        self.role: str = config["node"]["role"]
        broker = config["mqtt"]["broker"]
        self.facts = facts if facts is not None else machine_facts(broker.host if broker else None)
        self.id = render_node_id(config["node"]["id"], hostname=self.facts["hostname"], mac=self.facts["mac"])
        self.topics = Topics(config["mqtt"]["prefix"])
        self.log = NodeLogAdapter(logging.getLogger("pidaemon.node"), {"node": self.id})
        self.catalog = catalog or PluginCatalog()
        self.plugin_manager = new_plugin_manager()
        self.plugins: dict[str, Any] = {}
        self.records: dict[str, PluginRecord] = {}
        self.bus: Bus | None = None
        self.broker: BrokerAddress | None = None
        self.embedded_broker: EmbeddedBroker | None = None
        self.notifier = notifier or SystemdNotifier()
        self.started_at: float | None = None
        self._routes: list[tuple[str, str]] = []  # (topic filter, plugin name)
        self._tasks: set[asyncio.Task] = set()
        self._stop_requested = asyncio.Event()
        self._stopped = False

    # ------------------------------------------------------------ for plugins

    @property
    def state_dir(self) -> Path:
        return Path(self.config["node"]["state_dir"])

    def topic(self, *levels: str) -> str:
        """A full topic under the configured prefix: `node.topic("nodes", node.id, "cmd", "#")`."""
        return self.topics.join(*levels)

    def plugin(self, name: str) -> Any | None:
        return self.plugins.get(name)

    def publish(self, topic: str, payload: Any, qos: int = 0, retain: bool = False, **properties) -> bool:
        """Publish on the bus (see `Bus.publish`); keyword arguments become MQTT v5 properties."""
        if self.bus is None:
            return False
        props = self.bus.properties(**properties) if properties else None
        return self.bus.publish(topic, payload, qos, retain, props)

    def spawn(self, coro: Awaitable, name: str | None = None) -> asyncio.Task:
        """Run a background task that the daemon cancels at shutdown; its crash is logged."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def retarget_broker(self, broker: BrokerAddress | str) -> None:
        """Use another broker from the next connection on (discovery saw the server move)."""
        self.broker = parse_broker_url(broker)
        if self.bus is not None:
            self.bus.retarget(self.broker)

    def stop(self) -> None:
        """Ask the daemon to shut down (safe from a signal handler on the loop)."""
        self._stop_requested.set()

    def call_hook(self, hook_name: str, **kwargs) -> list[tuple[str, Any]]:
        """Call a hook on every plugin, one failure logged without stopping the others.

        For plugins that offer an extension point of their own (e.g. the Warble
        service calling `pidaemon_warble_intake`).  Returns (plugin, result) pairs.
        """
        return self._call_each_sync(hook_name, **kwargs)

    def collect_telemetry(self) -> dict[str, Any]:
        """Every plugin's `pidaemon_telemetry` readings merged into one mapping."""
        readings: dict[str, Any] = {}
        for plugin, result in self._call_each_sync("pidaemon_telemetry"):
            for key, value in (result or {}).items():
                if key in readings:
                    self.log.warning('plugin "%s" reports telemetry "%s" that another plugin already set',
                                     plugin, key)
                    continue
                readings[key] = value
        return readings

    def collect_warble_builtins(self) -> list[Any]:
        builtins: list[Any] = []
        for _, result in self._call_each_sync("pidaemon_warble_builtins"):
            builtins.extend(result or ())
        return builtins

    def info(self) -> dict[str, Any]:
        """The retained `info` message: who this node is and what it runs."""
        info: dict[str, Any] = {
            "schema": INFO_SCHEMA_VERSION, "id": self.id, "role": self.role, "version": __version__,
            **self.facts, "started": self.started_at,
            "plugins": {name: record.to_dict() for name, record in self.records.items()},
            "capabilities": [],
        }
        for plugin, extra in self._call_each_sync("pidaemon_info"):
            for key, value in (extra or {}).items():
                if key == "capabilities":
                    info["capabilities"] += [c for c in value if c not in info["capabilities"]]
                elif key in info:
                    self.log.warning('plugin "%s" tried to replace info field "%s"', plugin, key)
                else:
                    info[key] = value
        return info

    def status(self) -> dict[str, Any]:
        """Local view of the node (also what tests and `pidaemon sim` look at)."""
        return {
            "id": self.id, "role": self.role,
            "connected": bool(self.bus and self.bus.connected),
            "broker": self.broker.url if self.broker else None,
            "plugins": {name: record.to_dict() for name, record in self.records.items()},
            "failed_plugins": sorted(n for n, r in self.records.items() if r.state == "failed"),
            "bus": dict(self.bus.stats, queued=self.bus.queued, unacknowledged=self.bus.unacknowledged)
            if self.bus else {},
        }

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Start, serve until `stop()`, shut down.  Raises DaemonError if it cannot start."""
        starting = asyncio.get_running_loop().create_task(self.start(), name=f"start:{self.id}")
        stop_requested = asyncio.get_running_loop().create_task(self._stop_requested.wait())
        try:
            # A stop request during a slow start-up (a plugin waiting on hardware)
            # cancels the start-up rather than waiting for it.
            await asyncio.wait([starting, stop_requested], return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()  # raises DaemonError if the start failed
                await stop_requested
        finally:
            for task in (starting, stop_requested):
                task.cancel()
            await asyncio.gather(starting, stop_requested, return_exceptions=True)
            await self.shutdown()

    async def start(self) -> None:
        self.started_at = round(time.time(), 3)
        self._load_plugins()
        await self._call_each("pidaemon_configure")
        await self._start_embedded_broker()
        self.broker = await self._find_broker()
        self._start_bus()
        await self._startup_plugins()
        if self.bus.connected:  # plugin states changed while connected: republish
            self._publish_presence()
        self.notifier.ready(f"node {self.id} ({self.role})")
        if self.notifier.watchdog_interval:
            self.spawn(self._watchdog(self.notifier.watchdog_interval), name="systemd-watchdog")

    async def shutdown(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.notifier.stopping()
        timeout = self.config["lifecycle"]["shutdown_timeout"]
        try:
            await asyncio.wait_for(self._call_each("pidaemon_shutdown"), timeout)
        except asyncio.TimeoutError:
            self.log.error("plugin shutdown took longer than %s s; going offline anyway", timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=0.5)
        for record in self.records.values():
            if record.state == "running":
                record.state = "stopped"
        if self.bus is not None:
            await self.bus.stop(final=[(self.topics.status(self.id), "offline", 1, True)], timeout=1.0)
        if self.embedded_broker is not None:
            await self.embedded_broker.stop()
        self.log.info("stopped")

    # ------------------------------------------------------------ plugins

    def _load_plugins(self) -> None:
        for name, section in self.config.plugin_sections.items():
            record = PluginRecord(name=name, required=section["required"])
            self.records[name] = record
            if name in self.catalog.entry_points:
                record.distribution, record.version = self.catalog.version(name)
            if not section["enabled"]:
                record.state = "disabled"
                continue
            try:
                plugin_class = self.catalog.load(name)
                options = {k: v for k, v in section.items() if k not in ("enabled", "required")}
                instance = plugin_class(self, options)
                self._check_hook_names(name, instance)
                self.plugin_manager.register(instance, name=name)
            except Exception as exc:
                message = str(exc) if isinstance(exc, PluginUnavailable) else (
                    f'plugin "{name}" failed to load: {describe_error(exc)}')
                self._plugin_failed(record, message)
                continue
            self.plugins[name] = instance
            record.hooks = implemented_hooks(instance)

    def _check_hook_names(self, name: str, instance: Any) -> None:
        known = [n for n in dir(self.plugin_manager.hook) if n.startswith("pidaemon_")]
        for hook in implemented_hooks(instance):
            if hook not in known:
                close = difflib.get_close_matches(hook, known, n=1)
                hint = f'; did you mean "{close[0]}"?' if close else ""
                raise PluginUnavailable(f'plugin "{name}" implements unknown hook "{hook}"{hint}')

    def _plugin_failed(self, record: PluginRecord, message: str) -> None:
        record.state, record.error = "failed", message
        instance = self.plugins.pop(record.name, None)
        if instance is not None and self.plugin_manager.is_registered(instance):
            self.plugin_manager.unregister(instance)
        self._routes = [(f, p) for f, p in self._routes if p != record.name]
        if record.required:
            raise DaemonError(f'required plugin "{record.name}" failed: {message}')
        self.log.error("%s (optional plugin: the node keeps running without it)", message)

    async def _startup_plugins(self) -> None:
        timeout = self.config["lifecycle"]["startup_timeout"]
        for impl in self._hookimpls("pidaemon_startup"):
            record = self.records[impl.plugin_name]
            try:
                result = impl.function(node=self)
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, timeout)
            except Exception as exc:
                if isinstance(exc, asyncio.TimeoutError):
                    exc = TimeoutError(f"startup took longer than {timeout} s")
                self._plugin_failed(record, f'plugin "{record.name}" failed to start: {describe_error(exc)}')
                continue
            record.state = "running"
        for record in self.records.values():
            if record.state == "configured":
                record.state = "running"

    def _hookimpls(self, hook_name: str):
        """A hook's implementations in plugin (configuration) order."""
        return getattr(self.plugin_manager.hook, hook_name).get_hookimpls()

    def _call_each_sync(self, hook_name: str, **kwargs) -> list[tuple[str, Any]]:
        results = []
        for impl in self._hookimpls(hook_name):
            try:
                results.append((impl.plugin_name, impl.function(node=self, **kwargs)))
            except Exception as exc:
                self.log.error('plugin "%s" failed in %s: %s', impl.plugin_name, hook_name, describe_error(exc))
        return results

    async def _call_each(self, hook_name: str, **kwargs) -> None:
        """Call a hook on each plugin in turn, awaiting coroutines; one failure does not skip the others.

        A failure is logged; in `pidaemon_configure` it marks the plugin failed (fatal if required).
        """
        for impl in self._hookimpls(hook_name):
            try:
                result = impl.function(node=self, **kwargs)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                message = f'plugin "{impl.plugin_name}" failed in {hook_name}: {describe_error(exc)}'
                if hook_name == "pidaemon_configure":
                    self._plugin_failed(self.records[impl.plugin_name], message)
                else:
                    self.log.error(message)

    # ------------------------------------------------------------ broker and bus

    async def _start_embedded_broker(self) -> None:
        if not self.config["broker"]["embedded"]:
            return
        host, port = self.config["broker"]["listen"]
        self.embedded_broker = EmbeddedBroker(host, port, port_taken_hint=self.embedded_broker_hint)
        try:
            await self.embedded_broker.start()
        except Exception as exc:
            self.embedded_broker = None
            raise DaemonError(f"cannot start the embedded broker: {exc}") from exc
        self.log.info("embedded MQTT broker (amqtt, MQTT 3.1.1) listening on %s:%d", host, port)

    async def _find_broker(self) -> BrokerAddress:
        configured = self.config["mqtt"]["broker"]
        if configured is not None:
            return configured
        if self.embedded_broker is not None:
            host = self.embedded_broker.host
            return BrokerAddress("127.0.0.1" if host in ("0.0.0.0", "") else host, self.embedded_broker.port, False)
        answer = self.plugin_manager.hook.pidaemon_find_broker(node=self)
        if inspect.isawaitable(answer):
            answer = await answer
        if answer is None:
            raise DaemonError("no broker: set mqtt.broker in the config, pass --broker mqtt://HOST:PORT, "
                              "or enable a discovery plugin")
        return parse_broker_url(answer)

    def _start_bus(self) -> None:
        mqtt_config = self.config["mqtt"]
        password = mqtt_config["password"]
        if mqtt_config["password_file"]:
            try:
                password = Path(mqtt_config["password_file"]).read_text().strip()
            except OSError as exc:
                raise DaemonError(f"mqtt.password_file: cannot read {mqtt_config['password_file']}: {exc}") from None
        settings = BusSettings.from_config(mqtt_config, client_id=self.id, broker=self.broker,
                                           will_topic=self.topics.status(self.id), password=password)
        self.bus = Bus(settings, on_message=self._route_message, on_connected=self._bus_connected,
                       on_disconnected=self._bus_disconnected, log=self.log)
        for plugin, declared in self._call_each_sync("pidaemon_subscriptions"):
            for subscription in declared or ():
                if isinstance(subscription, str):
                    subscription = Subscription(subscription)
                self._routes.append((subscription.topic, plugin))
                self.bus.subscribe(subscription.topic, subscription.qos)
        self.bus.start()

    def _publish_presence(self) -> None:
        self.bus.publish(self.topics.status(self.id), "online", qos=1, retain=True)
        self.bus.publish(self.topics.info(self.id), self.info(), qos=1, retain=True)

    def _bus_connected(self) -> None:
        self._publish_presence()
        self.spawn(self._call_each("pidaemon_connected"), name="hook:connected")

    def _bus_disconnected(self) -> None:
        self.spawn(self._call_each("pidaemon_disconnected"), name="hook:disconnected")

    def _route_message(self, message: Message) -> None:
        receivers = {plugin for topic_filter, plugin in self._routes if topic_matches(topic_filter, message.topic)}
        if not receivers:
            return
        for impl in self._hookimpls("pidaemon_message"):
            if impl.plugin_name not in receivers:
                continue
            try:
                result = impl.function(node=self, message=message)
                if inspect.isawaitable(result):
                    self.spawn(self._await_handler(impl.plugin_name, message.topic, result))
            except Exception as exc:
                self._log_handler_error(impl.plugin_name, message.topic, exc)

    async def _await_handler(self, plugin: str, topic: str, awaitable: Awaitable) -> None:
        try:
            await awaitable
        except Exception as exc:
            self._log_handler_error(plugin, topic, exc)

    def _log_handler_error(self, plugin: str, topic: str, exc: Exception) -> None:
        self.log.error('plugin "%s" could not handle a message on %s: %s', plugin, topic, describe_error(exc))

    # ------------------------------------------------------------ tasks

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("task %s crashed: %s", task.get_name(), describe_error(task.exception()))

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

