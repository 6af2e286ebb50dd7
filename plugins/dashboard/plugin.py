"""The `dashboard` plugin: the cluster's live picture in a browser, served by the server itself.

It keeps a model of the cluster (`model.py`) from what the bus says anyway:
every node's retained `status`, `info`, `health` (the registry's) and
`telemetry`, the lamp's `lights/state` and the `warble/leaderboard`; and from
the `warble:job` events of the Warble server on the same node (the feed, what
runs where, the queue).  Every message is checked where it enters
(`messages.py`); one that cannot be used is dropped with a rate-limited log
line and counted.  The page (`static/`) and its live WebSocket are routes of
the node's `http` plugin (`routes.py`); changes are pushed to every page at
most every `push_interval` seconds (`live.py`).  A node's place in the box
comes from the placement file (`placement`, see docs/dashboard.md); without
one every node is in the tray.  A node's panel reads its recent readings from
the telemetry store of the same node, when there is one.
"""

from __future__ import annotations

import time
from typing import Any

from pidaemon import hookimpl
from pidaemon.bus import Message, Subscription
from pidaemon.logs import LimitedLog
from pidaemon.placement import Placement, PlacementError, load_placement
from pidaemon.schema import Integer, Number, Problem, String, settings
from pidaemon.telemetry_history import TelemetryHistory

from .live import LiveHub
from .messages import (Invalid, parse_health, parse_info, parse_job, parse_lamp, parse_leaderboard, parse_readings,
                       parse_status)
from .model import ClusterModel
from .routes import DashboardRoutes
from .values import name, whole

# Emitted by the Warble server of the same node (plugins/warble/server.py, WARBLE_JOB).
WARBLE_JOB = "warble:job"
NODE_KINDS = ("status", "info", "health", "telemetry")


@settings
class DashboardSettings:
    placement: str | None = String(default=None,
                                   doc="placement file: where each node sits in the box (docs/dashboard.md); "
                                       "null: every node in the tray")
    push_interval: float = Number(min=0.05, max=10, default=0.25,
                                  doc="seconds between two pushes of the changes to the open pages")
    max_clients: int = Integer(min=1, default=100, doc="live pages open at once; more are refused (503)")
    max_client_backlog: int = Integer(min=16 * 1024, default=4 << 20,
                                      doc="bytes waiting for one page; a page further behind is disconnected")
    feed_size: int = Integer(min=1, max=1000, default=50, doc="finished Warbles in the feed")
    history_interval: float = Number(min=0.1, default=5, doc="seconds between two points of the totals' plots")
    history_length: float = Number(min=1, default=600, doc="seconds of plots kept (and sent to a new page)")
    detail_window: float = Number(min=1, default=900, doc="seconds of readings in a node's panel")
    max_nodes: int = Integer(min=1, default=5000, doc="nodes the dashboard shows at most; others are ignored")

    @staticmethod
    def config_warnings(config, path):
        """`config check` reads the placement file too (a mistake in it would stop the dashboard at start),
        and says when no `http` plugin serves the page."""
        found = []
        http = config["plugins"].get("http")
        if http is None or not http.get("enabled", True):
            found.append(Problem(path, 'its page is served by the "http" plugin, which this configuration does '
                                       'not enable: add `http: {listen: "HOST:PORT"}` under plugins'))
        placement = config["plugins"][path[-1]]["placement"]
        if placement:
            try:
                load_placement(placement)
            except PlacementError as exc:
                found.extend(Problem(path + ("placement",), f"the dashboard will not start: {message}")
                             for message in exc.messages)
        return found


class DashboardPlugin:
    config_schema = DashboardSettings

    def __init__(self, node, config: DashboardSettings):
        self.node = node
        self.config = config
        # A placement file with a mistake stops the plugin here, naming the file and line (not the daemon:
        # the dashboard is optional).
        self.placement = load_placement(config.placement) if config.placement else Placement()
        self.model = ClusterModel(node.id, self.placement, feed_size=config.feed_size, max_nodes=config.max_nodes,
                                  history_points=max(1, round(config.history_length / config.history_interval)))
        self.hub = LiveHub(self.model, node.log, push_interval=config.push_interval,
                           history_interval=config.history_interval, max_pages=config.max_clients,
                           max_backlog=config.max_client_backlog)
        self.routes = DashboardRoutes(self.model, self.hub, self._history, detail_window=config.detail_window,
                                      max_backlog=config.max_client_backlog, log=node.log)
        self.dropped: dict[str, int] = {}            # kind of message: messages dropped
        self._limited_log = LimitedLog(node.log)

    def _history(self) -> TelemetryHistory | None:
        return self.node.lookup(TelemetryHistory, default=None)

    # ------------------------------------------------------------ hooks

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topic("nodes", "+", "status")),
                Subscription(node.topic("nodes", "+", "info")),
                Subscription(node.topic("nodes", "+", "health")),
                Subscription(node.topic("nodes", "+", "telemetry"), qos=0),
                Subscription(node.topic("lights", "state"), qos=0),
                Subscription(node.topic("warble", "leaderboard"))]

    @hookimpl
    def pidaemon_startup(self, node):
        if WARBLE_JOB in node.events.declared:
            node.events.on(WARBLE_JOB, self._job_changed)
        else:
            node.log.info("dashboard: no Warble server on this node: the feed and the queue stay empty")
        if not hasattr(node.plugin_manager.hook, "pidaemon_http_routes"):
            node.log.warning('dashboard: no "http" plugin on this node: nothing serves the dashboard\'s page')
        node.supervise(self.hub.run, "dashboard:push")
        placed = f"{len(self.placement)} places from {self.placement.source}" if self.placement.source else \
            "no placement file: every node in the tray"
        node.log.info("dashboard: %s; pushing changes every %g s to at most %d pages", placed,
                      self.config.push_interval, self.config.max_clients)

    @hookimpl(optionalhook=True)
    def pidaemon_http_routes(self, node):
        return self.routes.route_defs()

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        levels = message.topic[len(node.topics.prefix) + 1:].split("/")
        kind = levels[-1] if len(levels) == 3 and levels[0] == "nodes" else "/".join(levels)
        try:
            if len(levels) == 3 and levels[0] == "nodes" and levels[2] in NODE_KINDS:
                node_id = name(levels[1])
                if node_id is None:
                    raise Invalid(f"node id {levels[1][:64]!r} is not a valid name")
                self._on_node_message(node_id, levels[2], message)
            elif levels == ["lights", "state"]:
                self.model.set_lamp(parse_lamp(message))
            elif levels == ["warble", "leaderboard"]:
                self.model.set_leaderboard(parse_leaderboard(message))
        except Invalid as problem:
            self._drop(kind, message.topic, str(problem))

    def _on_node_message(self, node_id: str, kind: str, message: Message) -> None:
        model = self.model
        if kind == "status":
            model.set_status(node_id, parse_status(message))
        elif kind == "info":
            model.set_info(node_id, parse_info(node_id, message))
        elif kind == "health":
            model.set_health(node_id, parse_health(node_id, message))
        else:
            model.set_readings(node_id, parse_readings(node_id, message))

    def _job_changed(self, job: Any = None, queued: Any = None, **_: Any) -> None:
        try:
            facts = parse_job(job)
        except Invalid as problem:
            self._drop("warble:job", WARBLE_JOB, str(problem))
            return
        self.model.job_changed(facts, whole(queued, 0, 2 ** 53), time.monotonic())

    def _drop(self, kind: str, topic: str, problem: str) -> None:
        self.dropped[kind] = self.dropped.get(kind, 0) + 1
        self._limited_log.log(f"drop:{kind}", "dashboard: dropped a message (%s) on %s: %s", kind, topic[:120],
                              problem)

    @hookimpl
    def pidaemon_telemetry(self, node):
        return {"dashboard": {"pages": len(self.hub.pages), "nodes": len(self.model.nodes), **self.hub.stats,
                              "dropped_messages": dict(self.dropped), "refused_nodes": self.model.refused_nodes}}

    @hookimpl
    async def pidaemon_shutdown(self, node):
        await self.hub.close()
