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
import inspect
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, TypeVar

from . import __version__
from .bus import Bus, BusSettings, Message, Subscription, topic_matches
from .config import BrokerAddress, Config, PluginUnavailable, parse_broker_url, render_node_id
from .embedded_broker import EmbeddedBroker
from .events import Events
from .hooks import Call, HookRunner, describe_error, tracing_requested
from .logs import NodeLogAdapter
from .nodeinfo import machine_facts
from .plugins import PluginCatalog, PluginRecord, implemented_hooks, new_plugin_manager
from .schema import is_settings
from .systemd import SystemdNotifier
from .topics import Topics

T = TypeVar("T")
_NO_DEFAULT: Any = object()

INFO_SCHEMA_VERSION = 1
RESTART_DELAY_MIN, RESTART_DELAY_MAX = 0.5, 30.0  # seconds before a crashed supervised task runs again
RESTART_HEALTHY_AFTER = 60.0                       # seconds of running that reset the delay


class DaemonError(Exception):
    """The daemon cannot run: a core part or a required plugin failed."""


class PluginMissing(LookupError):
    """`node.lookup(SomePlugin)`: no plugin (nor lent object) of that type on this node."""


class CoreHooks:
    """The core hooks, one typed method each (tox 4's `MANAGER.tox_add_option(parser)` style).

    Every call goes through pluggy, one plugin at a time (see `pidaemon.hooks`).
    """

    def __init__(self, runner: HookRunner, node: "Daemon"):
        self.runner = runner
        self.node = node

    async def configure(self) -> list[Call]:
        return await self.runner.each_awaited("pidaemon_configure", report=False, node=self.node)

    async def startup(self, timeout: float) -> list[Call]:
        return await self.runner.each_awaited("pidaemon_startup", timeout=timeout, report=False, node=self.node)

    async def shutdown(self) -> None:
        await self.runner.each_awaited("pidaemon_shutdown", node=self.node)

    async def connected(self) -> None:
        await self.runner.each_awaited("pidaemon_connected", node=self.node)

    async def disconnected(self) -> None:
        await self.runner.each_awaited("pidaemon_disconnected", node=self.node)

    def subscriptions(self) -> list[tuple[str, Subscription]]:
        """(plugin, Subscription) for every filter a plugin declares."""
        declared = []
        for call in self.runner.each("pidaemon_subscriptions", node=self.node):
            for subscription in call.result or ():
                declared.append((call.plugin, Subscription(subscription) if isinstance(subscription, str)
                                 else subscription))
        return declared

    def message(self, plugin: str, message: Message) -> Any:
        """One plugin's `pidaemon_message`: its result, maybe awaitable.  Raises what the plugin raises."""
        return self.runner.call("pidaemon_message", plugin, node=self.node, message=message)

    def find_broker(self) -> Any:
        return self.node.plugin_manager.hook.pidaemon_find_broker(node=self.node)

    def info(self) -> list[Call]:
        return self.runner.each("pidaemon_info", node=self.node)

    def telemetry(self) -> list[Call]:
        return self.runner.each("pidaemon_telemetry", node=self.node)


class Daemon:
    embedded_broker_hint = ("Use that broker with --broker mqtt://{host}:{port} --set broker.embedded=false, "
                            "or choose another port with --set broker.listen=HOST:PORT")

    def __init__(self, config: Config, *, catalog: PluginCatalog | None = None,
                 facts: dict[str, Any] | None = None, notifier: SystemdNotifier | None = None,
                 lend: Iterable[Any] = (), trace_plugins: bool | None = None):
        self.config = config
        # Objects that the program embedding this daemon lends to its plugins, found by
        # type with `lookup`: e.g. the simulator's one Warble runner for a thousand workers.
        self.lent: list[Any] = list(lend)
        self.role: str = config["node"]["role"]
        broker = config["mqtt"]["broker"]
        self.facts = facts if facts is not None else machine_facts(broker.host if broker else None)
        self.id = render_node_id(config["node"]["id"], hostname=self.facts["hostname"], mac=self.facts["mac"])
        self.topics = Topics(config["mqtt"]["prefix"])
        self.log = NodeLogAdapter(logging.getLogger("pidaemon.node"), {"node": self.id})
        self.catalog = catalog or PluginCatalog()
        self.plugin_manager = new_plugin_manager()
        self.hook_runner = HookRunner(self.plugin_manager, self.log, on_first_failure=self._hook_started_failing)
        if tracing_requested() if trace_plugins is None else trace_plugins:
            self.hook_runner.trace()
        self.hooks = CoreHooks(self.hook_runner, self)
        self.events = Events(self.log, spawn=self.spawn)
        self.plugins: dict[str, Any] = {}
        self.records: dict[str, PluginRecord] = {}
        self.bus: Bus | None = None
        self.broker: BrokerAddress | None = None
        self.embedded_broker: EmbeddedBroker | None = None
        self.notifier = notifier or SystemdNotifier()
        self.started_at: float | None = None
        self._routes: list[tuple[str, str]] = []  # (topic filter, plugin name)
        self._tasks: set[asyncio.Task] = set()
        self.task_restarts: dict[str, int] = {}  # supervised task name: restarts after a crash
        self._stop_requested = asyncio.Event()
        self._stopped = False

    # ------------------------------------------------------------ for plugins

    @property
    def state_dir(self) -> Path:
        """The node's writable directory (`node.state_dir`, `~` meaning the user's home)."""
        return Path(self.config["node"]["state_dir"]).expanduser()

    def topic(self, *levels: str) -> str:
        """A full topic under the configured prefix: `node.topic("nodes", node.id, "cmd", "#")`."""
        return self.topics.join(*levels)

    def lookup(self, kind: type[T], default: Any = _NO_DEFAULT) -> T:
        """The plugin of type `kind` on this node, or the object of that type lent by the embedding program.

            registry = node.lookup(RegistryPlugin)        # in pidaemon_configure

        Raises PluginMissing (naming the plugin to add) unless a `default` is given.
        """
        for candidate in [*self.plugins.values(), *self.lent]:
            if isinstance(candidate, kind):
                return candidate
        if default is not _NO_DEFAULT:
            return default
        name = self.catalog.name_of(kind)
        wanted = f'the "{name}" plugin' if name else f"a {kind.__name__}"
        raise PluginMissing(f"needs {wanted} on the same node (configured plugins: "
                            f"{', '.join(self.plugins) or 'none'})")

    def plugin(self, name: str) -> Any | None:
        """A plugin by its configured name (for tools and tests; plugins use `lookup`)."""
        return self.plugins.get(name)

    def __repr__(self) -> str:
        return f"<Daemon {self.id} ({self.role})>"

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

    def supervise(self, make: Callable[[], Awaitable], name: str) -> asyncio.Task:
        """Run a task that must not die: `make()` is awaited again after an unexpected exception.

        For a plugin's long-running loops (health pings, dispatch).  Each crash is
        logged with where it happened and counted in the node's telemetry
        (`task_restarts`); the pause before a restart grows from 0.5 s to 30 s
        and is back to 0.5 s once the task has run a minute without failing.
        """
        return self.spawn(self._supervised(make, name), name=name)

    async def _supervised(self, make: Callable[[], Awaitable], name: str) -> None:
        loop = asyncio.get_running_loop()
        delay = RESTART_DELAY_MIN
        while True:
            started = loop.time()
            try:
                await make()
                return
            except Exception as exc:
                self.task_restarts[name] = self.task_restarts.get(name, 0) + 1
                if loop.time() - started > RESTART_HEALTHY_AFTER:
                    delay = RESTART_DELAY_MIN
                self.log.error("task %s crashed: %s; restarting it in %.1f s (%d restarts)", name,
                               describe_error(exc), delay, self.task_restarts[name])
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_DELAY_MAX)

    def retarget_broker(self, broker: BrokerAddress | str) -> None:
        """Use another broker from the next connection on (discovery saw the server move)."""
        self.broker = parse_broker_url(broker)
        if self.bus is not None:
            self.bus.retarget(self.broker)

    def stop(self) -> None:
        """Ask the daemon to shut down (safe from a signal handler on the loop)."""
        self._stop_requested.set()

    def collect_telemetry(self) -> dict[str, Any]:
        """Every plugin's `pidaemon_telemetry` readings merged into one mapping."""
        readings: dict[str, Any] = {"task_restarts": dict(self.task_restarts)} if self.task_restarts else {}
        for call in self.hooks.telemetry():
            for key, value in (call.result or {}).items():
                if key in readings:
                    self.log.warning('plugin "%s" reports telemetry "%s" that another plugin already set',
                                     call.plugin, key)
                    continue
                readings[key] = value
        return readings

    def info(self) -> dict[str, Any]:
        """The retained `info` message: who this node is and what it runs."""
        info: dict[str, Any] = {
            "schema": INFO_SCHEMA_VERSION, "id": self.id, "role": self.role, "version": __version__,
            **self.facts, "started": self.started_at, "capabilities": [],
        }
        calls = self.hooks.info()  # before the plugins' states: a failure here shows in them
        info["plugins"] = self._plugin_states()
        for call in calls:
            plugin, extra = call.plugin, call.result
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
            "plugins": self._plugin_states(),
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
        self._make_state_dir()
        self.load_plugins()
        self.log.info("plugins: %s", self._plugins_line())
        for call in await self.hooks.configure():
            if call.error is not None:
                message = f'plugin "{call.plugin}" failed in pidaemon_configure: {describe_error(call.error)}'
                self._plugin_failed(self.records[call.plugin], message)
        for warning in self.events.undeclared():
            self.log.warning("%s", warning)
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
            await asyncio.wait_for(self.hooks.shutdown(), timeout)
        except asyncio.TimeoutError:
            self.log.error("plugin shutdown took longer than %s s; going offline anyway", timeout)
        self.events.clear()
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

    def _make_state_dir(self) -> None:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            probe = self.state_dir / f".write-test-{self.id}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise DaemonError(f"node.state_dir {self.state_dir} is not a writable directory "
                              f"({exc.strerror or exc}): create it for the daemon's user, or choose another "
                              f"with --set node.state_dir=DIR") from None

    # ------------------------------------------------------------ plugins

    def load_plugins(self) -> None:
        """Create and register every enabled plugin, after adding every plugin's own hookspecs.

        `start()` does this first; a tool that only wants the plugins' contributions
        (`pidaemon warble run --plugin NAME`) calls it alone, with no bus.
        """
        created: list[tuple[PluginRecord, type, dict]] = []
        added_specs: list[Any] = []
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
                namespace = getattr(plugin_class, "hookspecs", None)
                if namespace is not None and namespace not in added_specs:  # several plugins may share one
                    self.plugin_manager.add_hookspecs(namespace)
                    added_specs.append(namespace)
            except Exception as exc:
                self._plugin_failed(record, self._load_failure(name, exc))
                continue
            created.append((record, plugin_class, section))
        known = {name for name in vars(self.plugin_manager.hook) if name.startswith("pidaemon_")}
        for record, plugin_class, section in created:
            try:
                self.catalog.check_hooks(record.name, plugin_class, known)
                instance = plugin_class(self, self._plugin_settings(plugin_class, section))
                self.plugin_manager.register(instance, name=record.name)
            except Exception as exc:
                self._plugin_failed(record, self._load_failure(record.name, exc))
                continue
            self.plugins[record.name] = instance
            record.hooks = implemented_hooks(instance)

    def _plugins_line(self) -> str:
        """`ping 0.1.0, example_sensor 1.2.3 (pidaemon-example-sensor); disabled: sound` for the start-up log."""
        own = self.catalog.version("ping")[0] if "ping" in self.catalog.entry_points else None
        loaded, other = [], []
        for name, record in self.records.items():
            if record.state == "configured":
                origin = "" if record.distribution in (own, "?") else f" ({record.distribution})"
                loaded.append(f"{name} {record.version}{origin}")
            else:
                other.append(f"{name} {record.state}")
        return (", ".join(loaded) or "none") + (f"; {', '.join(other)}" if other else "")

    @staticmethod
    def _plugin_settings(plugin_class: type, section: dict) -> Any:
        """What the plugin's constructor gets: its settings object, or (a plain Section) a dict."""
        options = {k: v for k, v in section.items() if k not in ("enabled", "required")}
        schema = getattr(plugin_class, "config_schema", None)
        return schema.from_mapping(options) if is_settings(schema) else options

    @staticmethod
    def _load_failure(name: str, exc: Exception) -> str:
        if isinstance(exc, PluginUnavailable):
            return str(exc)
        return f'plugin "{name}" failed to load: {describe_error(exc)}'

    def _plugin_failed(self, record: PluginRecord, message: str) -> None:
        record.state, record.error = "failed", message
        instance = self.plugins.pop(record.name, None)
        if instance is not None and self.plugin_manager.is_registered(instance):
            self.plugin_manager.unregister(instance)
            self.hook_runner.forget(record.name)
        self._routes = [(f, p) for f, p in self._routes if p != record.name]
        if record.required:
            raise DaemonError(f'required plugin "{record.name}" failed: {message}')
        self.log.error("%s (optional plugin: the node keeps running without it)", message)

    def _plugin_states(self) -> dict[str, dict[str, Any]]:
        for name, record in self.records.items():
            record.hook_errors = self.hook_runner.failures(name)
        return {name: record.to_dict() for name, record in self.records.items()}

    def _hook_started_failing(self, plugin: str, hook: str) -> None:
        """A plugin's hook failed for the first time: tell the cluster (the retained info) once."""
        if self.bus is not None and self.bus.connected and hook != "pidaemon_info":
            self.bus.publish(self.topics.info(self.id), self.info(), qos=1, retain=True)

    async def _startup_plugins(self) -> None:
        timeout = self.config["lifecycle"]["startup_timeout"]
        for call in await self.hooks.startup(timeout):
            record = self.records[call.plugin]
            if call.error is not None:
                self._plugin_failed(record, f'plugin "{record.name}" failed to start: {describe_error(call.error)}')
                continue
            record.state = "running"
        for record in self.records.values():
            if record.state == "configured":
                record.state = "running"

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
        # Under systemd the unit stays "activating" until READY=1; say why in `systemctl status`.
        self.notifier.notify("STATUS=looking for the broker (no mqtt.broker set: waiting for the server's "
                             "announcement)")
        answer = self.hooks.find_broker()
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
        for plugin, subscription in self.hooks.subscriptions():
            self._routes.append((subscription.topic, plugin))
            self.bus.subscribe(subscription.topic, subscription.qos, subscription.retain_as_published)
        self.bus.start()

    def _publish_presence(self) -> None:
        self.bus.publish(self.topics.status(self.id), "online", qos=1, retain=True)
        self.bus.publish(self.topics.info(self.id), self.info(), qos=1, retain=True)

    def _bus_connected(self) -> None:
        self._publish_presence()
        self.spawn(self.hooks.connected(), name="hook:connected")

    def _bus_disconnected(self) -> None:
        self.spawn(self.hooks.disconnected(), name="hook:disconnected")

    def _route_message(self, message: Message) -> None:
        receivers = {plugin for topic_filter, plugin in self._routes if topic_matches(topic_filter, message.topic)}
        if not receivers:
            return
        for plugin in self.hook_runner.implementers("pidaemon_message"):
            if plugin not in receivers:
                continue
            try:
                result = self.hooks.message(plugin, message)
                if inspect.isawaitable(result):
                    self.spawn(self._await_handler(plugin, message, result))
                    continue
            except Exception as exc:
                self._handler_failed(plugin, message, exc)
                continue
            self.hook_runner.succeeded(plugin, "pidaemon_message")

    async def _await_handler(self, plugin: str, message: Message, awaitable: Awaitable) -> None:
        try:
            await self.hook_runner.awaited("pidaemon_message", plugin, awaitable)
        except Exception as exc:
            self._handler_failed(plugin, message, exc)

    def _handler_failed(self, plugin: str, message: Message, exc: Exception) -> None:
        self.hook_runner.failed(plugin, "pidaemon_message", exc, what=f"could not handle a message on {message.topic}")

    # ------------------------------------------------------------ tasks

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("task %s crashed: %s", task.get_name(), describe_error(task.exception()))

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

