"""A whole cluster in one process: a server, N simulated workers, the lamp and the speaker, on one loop.

Used by `pidaemon sim` (the README's first command).  What each node runs is
data, not code: the roles and their plugins come from `sim.yaml` beside this
module, with a user's file of the same shape merged over it (`--config`) and
single plugins added to a role (`--plugin NAME[:ROLE]`).  With no `--broker`,
the server hosts the embedded broker (amqtt); otherwise every node connects
to the given broker (mosquitto in production-like trials).

The nodes keep their state (registry, queue) under the user's state directory
(`$XDG_STATE_HOME/pidaemon/sim`, by default `~/.local/state/pidaemon/sim`),
never in the working directory; `fresh=True` starts from nothing.  A plugin
that signs what it sends (announce, discovery) runs with `insecure: true`
unless the user's file sets its secret: a desk cluster has no secret to share.

The server's dashboard gets a placement file, `<state_dir>/placement.yaml`,
written at every start: the workers in order, rack 1 bank 1 slot 1, slot 2,
... (1,050 workers fill the box; more, the server and the devices are in the
tray), unless the user's file gives the dashboard a placement of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Iterable, Mapping

import yaml

from .config import (BrokerAddress, Config, ConfigError, config_from_mapping, deep_merge, load_yaml_file,
                     parse_listen_address)
from .daemon import Daemon
from .placement import placement_for, write_placement
from .plugins import PluginCatalog
from .warble import Limits, Runner

log = logging.getLogger("pidaemon.sim")

SERVER_ROLE, WORKER_ROLE = "server", "worker"
REGISTRY_NODE_STATE = "registry:node_state"  # the registry's event (plugins/registry), by its name
OFFLINE_WAIT = 3.0   # seconds the server waits at a stop to hear the other nodes go offline
PLACEMENT_FILE = "placement.yaml"
DEFAULT_HTTP_LISTEN = "127.0.0.1:8080"  # the `http` plugin's default


def worker_id(index: int) -> str:
    """The id of simulated worker `index` (1-based)."""
    return f"sim-worker-{index:04d}"


def default_roles() -> dict[str, Any]:
    """The desk cluster of `sim.yaml`: {role: {"plugins": {...}, "id"?: node id}}."""
    return yaml.safe_load(resources.files(__package__).joinpath("sim.yaml").read_text())


def roles_with(extra_file: str | Path | None = None, plugins: Iterable[str] = (),
               overrides: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[tuple, str]]:
    """The default roles, with a user's file merged over them and `NAME[:ROLE]` plugins added
    (required: a plugin asked for by name that cannot load stops the simulator).  Also returns
    where each setting came from, `file:line` or the `--plugin` option, keyed by (role, ...) paths."""
    roles, locations = default_roles(), {}
    if extra_file is not None:
        data, locations = load_yaml_file(extra_file)
        roles = deep_merge(roles, data)
    for spec in plugins:
        name, _, role = spec.partition(":")
        role = role or WORKER_ROLE
        if role not in roles:
            raise ConfigError([f"--plugin {spec}: no role {role!r} in the simulated cluster "
                               f"(roles: {', '.join(sorted(roles))})"])
        roles[role].setdefault("plugins", {}).setdefault(name, {}).setdefault("required", True)
        locations.setdefault((role, "plugins", name), f"--plugin {spec}")
    return deep_merge(roles, overrides or {}), locations


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "pidaemon" / "sim"


def shared_runner(worker_config: Config | None, max_jobs: int) -> Runner:
    """The runner the simulated workers share, with the worker role's `warble_worker` settings
    (each worker also passes its own limits with every job)."""
    section = (worker_config.plugin_sections if worker_config else {}).get("warble_worker") or {}
    per_child = {"jobs_per_child": section["jobs_per_child"]} if "jobs_per_child" in section else {}
    return Runner(section.get("limits") or Limits(), max_jobs=max_jobs, **per_child)


def simulated_facts(index: int, node_id: str) -> dict[str, Any]:
    """Distinct, clearly fake machine facts for simulated node `index` (0 is the server)."""
    return {"hostname": node_id, "ip": "127.0.0.1", "mac": f"02:00:00:00:{index >> 8:02x}:{index & 0xff:02x}",
            "os": "simulated", "machine": "simulated", "cpu_count": 4}


class SimulatedCluster:
    def __init__(self, workers: int, *, broker: BrokerAddress | None = None, listen: str = "127.0.0.1:1883",
                 prefix: str = "picluster", roles: Mapping[str, Any] | None = None, devices: bool = True,
                 state_dir: str | Path | None = None, fresh: bool = False, runner_jobs: int = 4,
                 locations: Mapping[tuple, str] | None = None):
        self.catalog = PluginCatalog()
        self.broker = broker
        self.listen = listen
        self.prefix = prefix
        self.roles = dict(default_roles() if roles is None else roles)
        self.locations = dict(locations or {})
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        if fresh and self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        self.placement_file = self._place_workers(workers)
        host, _, port = listen.rpartition(":")
        self.worker_broker = broker or BrokerAddress(host if host not in ("0.0.0.0", "") else "127.0.0.1",
                                                     int(port), False)
        server_config = self._config(0, "sim-server", SERVER_ROLE)
        worker_configs = [self._config(i, worker_id(i), WORKER_ROLE) for i in range(1, workers + 1)]
        device_roles = [r for r in self.roles if r not in (SERVER_ROLE, WORKER_ROLE)] if devices else []
        device_configs = [self._config(workers + 1 + i, self.roles[role].get("id") or f"sim-{role}", role)
                          for i, role in enumerate(device_roles)]
        # One sandboxed Warble runner lent to every simulated worker (`node.lookup(Runner)`): a zygote
        # per worker would mean a thousand processes.  Jobs still run in sandbox processes of their own,
        # under the worker role's own limits.
        self.runner = shared_runner(worker_configs[0][1] if worker_configs else None, runner_jobs)
        self.server = self._daemon(*server_config)
        self.workers = [self._daemon(*c) for c in worker_configs]
        self.devices = [self._daemon(*c) for c in device_configs]
        self.server.embedded_broker_hint = ("Use that broker with --broker mqtt://{host}:{port}, "
                                            "or choose another port with --listen HOST:PORT")
        self.nodes = [self.server, *self.workers, *self.devices]

    def _server_plugin(self, name: str) -> dict[str, Any] | None:
        """The server role's section of plugin `name` ({} when given without settings); None: not enabled."""
        plugins = self.roles.get(SERVER_ROLE, {}).get("plugins") or {}
        if name not in plugins:
            return None
        section = plugins[name] or {}
        return None if section.get("enabled", True) is False else section

    def _place_workers(self, workers: int) -> Path | None:
        """Write the placement of the workers for the server's dashboard, and give it to the dashboard;
        None when the server runs no dashboard, or the user's file gives it a placement."""
        section = self._server_plugin("dashboard")
        if section is None or section.get("placement"):
            return None
        ids = [worker_id(i) for i in range(1, workers + 1)]
        path = write_placement(self.state_dir / PLACEMENT_FILE, placement_for(ids),
                               comment="Written by `pidaemon sim` at every start: the simulated workers in order.\n"
                                       "Give the dashboard a file of your own with --config (dashboard: placement).")
        self.roles = deep_merge(self.roles, {SERVER_ROLE: {"plugins": {"dashboard": {"placement": str(path)}}}})
        return path

    @property
    def dashboard_url(self) -> str | None:
        """The address of the server's dashboard page, when the server runs the dashboard and `http`."""
        if self._server_plugin("dashboard") is None or (http := self._server_plugin("http")) is None:
            return None
        host, port = parse_listen_address(http.get("listen", DEFAULT_HTTP_LISTEN))
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def _plugin_sections(self, role: str) -> dict[str, Any]:
        """The role's plugins; one that can sign (announce, discovery) is told it may not, on a desk,
        unless the user's file configures its signing."""
        sections = {name: dict(section or {}) for name, section in (self.roles[role].get("plugins") or {}).items()}
        for name, section in sections.items():
            if name in self.catalog.entry_points and section.get("enabled", True) is not False \
                    and "insecure" in self.catalog.schema(name).fields \
                    and not {"secret", "secret_file", "insecure"} & set(section):
                section["insecure"] = True
        return sections

    def _config(self, index: int, node_id: str, role: str) -> tuple[int, Config]:
        hosts_broker = role == SERVER_ROLE and self.broker is None
        config: dict[str, Any] = {
            "node": {"role": role, "id": node_id, "state_dir": str(self.state_dir / node_id)},
            "mqtt": {"broker": None if hosts_broker else self.worker_broker.url, "prefix": self.prefix,
                     "protocol": "5" if self.broker else "3.1.1", "keepalive": 30,
                     "reconnect": {"min_delay": 0.2, "max_delay": 5}},
            "plugins": self._plugin_sections(role),
        }
        if hosts_broker:
            config["broker"] = {"embedded": True, "listen": self.listen}
        # Errors point at the user's file (or --plugin): its (role, "plugins", ...) is the node's ("plugins", ...).
        where = {("plugins", *path[2:]): place for path, place in self.locations.items()
                 if path[:2] == (role, "plugins")}
        return index, config_from_mapping(config, origin=f"<sim {node_id}, role {role}>",
                                          plugin_schema=self.catalog.schema, locations=where)

    def _daemon(self, index: int, config: Config) -> Daemon:
        return Daemon(config, catalog=self.catalog, facts=simulated_facts(index, config["node"]["id"]),
                      lend=[self.runner])

    async def start(self) -> None:
        await asyncio.to_thread(self.runner.start)
        await self.server.start()  # first: it may host the broker
        for node in [*self.workers, *self.devices]:
            await node.start()
        if self.dashboard_url and self.server.plugin("dashboard") and self.server.plugin("http"):
            log.info("dashboard: %s", self.dashboard_url)

    async def wait_online(self, timeout: float = 30) -> bool:
        results = await asyncio.gather(*(n.bus.wait_connected(timeout) for n in self.nodes if n.bus))
        return all(results) and all(n.bus for n in self.nodes)

    async def shutdown(self) -> None:
        others = [*self.workers, *self.devices]
        heard = self._offline_heard({node.id for node in others if node.bus is not None and node.bus.connected})
        await asyncio.gather(*(n.shutdown() for n in others))
        await heard
        await self.server.shutdown()  # last: it may host the broker
        await asyncio.to_thread(self.runner.close)

    def _offline_heard(self, ids: set[str]) -> Awaitable[None]:
        """Waits (at most OFFLINE_WAIT s) until the server's registry has seen nodes `ids` go offline,
        so that the registry it saves at its own stop says so (a next start then shows them offline)."""
        events = self.server.events
        if REGISTRY_NODE_STATE not in events.declared or not ids or not (self.server.bus and self.server.bus.connected):
            return asyncio.sleep(0)
        pending, all_heard = set(ids), asyncio.Event()

        def changed(record=None, **_: Any) -> None:
            if getattr(record, "state", None) == "offline":
                pending.discard(getattr(record, "id", None))
                if not pending:
                    all_heard.set()

        stop_listening = events.on(REGISTRY_NODE_STATE, changed)

        async def wait() -> None:
            try:
                await asyncio.wait_for(all_heard.wait(), OFFLINE_WAIT)
            except asyncio.TimeoutError:
                log.debug("the registry did not hear %d nodes go offline: %s", len(pending), sorted(pending)[:5])
            finally:
                stop_listening()
        return wait()
