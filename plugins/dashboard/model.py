"""The dashboard's picture of the cluster, and what changed in it since the last push.

Fed with checked facts (`messages.py`): each node's status, info, health and
readings, the lamp, the leaderboard and the Warble jobs.  It answers two
questions, in the shapes of docs/dashboard.md: the whole picture
(`snapshot`, for a page that connects) and what changed since the last
question (`take_update`, for the pages already there).  Changes are only
marked as they come (a node id in a set, a flag); views are built and compared
when an update is taken, at most a few times a second, so that a thousand
nodes sending telemetry every 5 s cost a dictionary lookup each.

A node's state is the registry's (its `health` topic) when there is one, else
its own retained status; `unknown` until either is known.  A node leaves the
model when its retained status is cleared (the registry forgets it).  A place
holds one node: a node placed by its id takes it from one placed by its MAC;
otherwise the first keeps it, and the other (two nodes saying the same MAC)
is shown in the tray.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

from pidaemon.placement import Placement

from .messages import ENDED, Health, JobFacts, NodeFacts, Readings

NODE_STATES = ("online", "unhealthy", "offline", "unknown")
RATE_WINDOW = 10.0    # seconds over which warbles_per_s is counted


@dataclass(eq=False)
class NodeEntry:
    id: str
    status: str | None = None          # its own retained status
    health: Health | None = None       # the registry's word on it
    facts: NodeFacts = field(default_factory=NodeFacts)
    readings: Readings = field(default_factory=Readings)
    place: list[int] | None = None
    jobs: list[str] = field(default_factory=list)  # Warble jobs running on it now, oldest first
    sent: dict[str, Any] | None = None  # its view as last pushed

    @property
    def state(self) -> str:
        if self.health is not None:
            return self.health.state
        return self.status or "unknown"

    def view(self) -> dict[str, Any]:
        readings = self.readings
        return {"id": self.id, "role": self.facts.role, "place": self.place, "state": self.state,
                "cpu": readings.cpu, "temp": readings.temp, "mem": readings.mem,
                "warble": self.jobs[-1] if self.jobs else None,
                "simulated": self.facts.simulated or readings.simulated}


class ClusterModel:
    def __init__(self, server_id: str, placement: Placement, *, feed_size: int = 50, max_nodes: int = 5000,
                 history_points: int = 120):
        self.server_id = server_id
        self.placement = placement
        self.max_nodes = max_nodes
        self.nodes: dict[str, NodeEntry] = {}
        self._occupant: dict[tuple[int, int, int], str] = {}  # place: the node shown there
        self.refused_nodes = 0                     # messages about nodes beyond max_nodes
        self.lamp: dict[str, Any] | None = None
        self.leaderboard: dict[str, Any] | None = None
        self.feed: deque[Mapping[str, Any]] = deque(maxlen=feed_size)
        self.history: deque[dict[str, Any]] = deque(maxlen=history_points)
        self.queue = 0
        self.running: dict[str, str | None] = {}   # job id: the node it runs on
        self.done = 0
        self._finished: deque[float] = deque()     # (monotonic) times jobs ended as done, the last RATE_WINDOW
        # Changes since the last update.
        self._changed: set[str] = set()
        self._new_feed: list[Mapping[str, Any]] = []
        self._new_history: list[dict[str, Any]] = []
        self._lamp_changed = self._leaderboard_changed = False
        self._sent_totals: dict[str, Any] | None = None

    # ------------------------------------------------------------ nodes

    def _entry(self, node_id: str) -> NodeEntry | None:
        entry = self.nodes.get(node_id)
        if entry is None:
            if len(self.nodes) >= self.max_nodes:
                self.refused_nodes += 1
                return None
            entry = self.nodes[node_id] = NodeEntry(node_id)
            self._place(entry)
        self._changed.add(node_id)
        return entry

    def _place(self, entry: NodeEntry) -> None:
        self._vacate(entry)
        wanted = self.placement.place_of(entry.id, entry.facts.mac)
        if wanted is None:
            return
        key = (wanted.rack, wanted.bank, wanted.slot)
        holder = self._occupant.get(key)
        if holder is not None:
            if entry.id not in self.placement.by_id or holder in self.placement.by_id:
                return  # the place is taken: in the tray
            self.nodes[holder].place = None  # there by its MAC: the node placed by its id takes the place
            self._changed.add(holder)
        self._occupant[key] = entry.id
        entry.place = list(key)

    def _vacate(self, entry: NodeEntry) -> None:
        if entry.place is not None:
            key = (entry.place[0], entry.place[1], entry.place[2])
            if self._occupant.get(key) == entry.id:
                del self._occupant[key]
            entry.place = None

    def set_status(self, node_id: str, status: str | None) -> None:
        if status is None:  # its retained status was cleared: it left the cluster
            self.forget(node_id)
        elif (entry := self._entry(node_id)) is not None:
            entry.status = status

    def set_info(self, node_id: str, facts: NodeFacts | None) -> None:
        if facts is None and node_id not in self.nodes:
            return
        if (entry := self._entry(node_id)) is not None:
            entry.facts = facts or NodeFacts()
            self._place(entry)

    def set_health(self, node_id: str, health: Health | None) -> None:
        if health is None and node_id not in self.nodes:
            return
        if (entry := self._entry(node_id)) is not None:
            entry.health = health

    def set_readings(self, node_id: str, readings: Readings | None) -> None:
        if readings is None and node_id not in self.nodes:
            return
        if (entry := self._entry(node_id)) is not None:
            entry.readings = readings or Readings()

    def forget(self, node_id: str) -> None:
        entry = self.nodes.pop(node_id, None)
        if entry is not None:
            self._vacate(entry)
            self._changed.add(node_id)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(NODE_STATES, 0)
        for entry in self.nodes.values():
            counts[entry.state] += 1
        return counts

    # ------------------------------------------------------------ lamp, leaderboard

    def set_lamp(self, lamp: dict[str, Any] | None) -> None:
        self.lamp, self._lamp_changed = lamp, True

    def set_leaderboard(self, leaderboard: dict[str, Any] | None) -> None:
        self.leaderboard, self._leaderboard_changed = leaderboard, True

    # ------------------------------------------------------------ Warble jobs

    def job_changed(self, job: JobFacts, queued: int | None, now: float) -> None:
        """A job was queued, runs on a node, went back to the queue or ended (`now`: monotonic seconds)."""
        if queued is not None:
            self.queue = queued
        previous = self.running.pop(job.id, None)
        if previous is not None and previous in self.nodes:
            jobs = self.nodes[previous].jobs
            if job.id in jobs:
                jobs.remove(job.id)
                self._changed.add(previous)
        if job.state == "running":
            self.running[job.id] = job.node
            if job.node in self.nodes:
                self.nodes[job.node].jobs.append(job.id)
                self._changed.add(job.node)
        elif job.state in ENDED:
            self.feed.append(job.item)
            self._new_feed.append(job.item)
            if job.state == "done":
                self.done += 1
                self._finished.append(now)

    def warbles_per_s(self, now: float) -> float:
        while self._finished and self._finished[0] <= now - RATE_WINDOW:
            self._finished.popleft()
        return round(len(self._finished) / RATE_WINDOW, 2)

    # ------------------------------------------------------------ totals, history

    def totals(self, now: float) -> dict[str, Any]:
        return {"nodes": self.counts(), "queue": self.queue, "running": len(self.running),
                "warbles_per_s": self.warbles_per_s(now), "done": self.done}

    def add_history_point(self, wall_time: float, now: float) -> None:
        point = {"time": round(wall_time, 3), "warbles_per_s": self.warbles_per_s(now), "queue": self.queue,
                 "online": sum(1 for entry in self.nodes.values() if entry.state == "online")}
        self.history.append(point)
        self._new_history.append(point)

    # ------------------------------------------------------------ for the pages

    def snapshot(self, wall_time: float, now: float) -> dict[str, Any]:
        """The whole picture; call `take_update` first, so that nothing in it comes again in the next update."""
        return {"type": "snapshot", "time": round(wall_time, 3), "server": self.server_id,
                "layout": self.placement.layout.as_dict(),
                "nodes": {node_id: entry.view() for node_id, entry in self.nodes.items()},
                "lamp": self.lamp, "feed": list(self.feed), "leaderboard": self.leaderboard,
                "totals": self.totals(now), "history": list(self.history)}

    def take_update(self, wall_time: float, now: float) -> dict[str, Any] | None:
        """What changed since the last call (None: nothing), in the shape of an `update` message."""
        nodes: dict[str, Any] = {}
        for node_id in self._changed:
            entry = self.nodes.get(node_id)
            if entry is None:
                nodes[node_id] = None
                continue
            view = entry.view()
            if view != entry.sent:
                nodes[node_id] = entry.sent = view
        self._changed.clear()
        update: dict[str, Any] = {"type": "update", "time": round(wall_time, 3), "nodes": nodes}
        if self._lamp_changed:
            update["lamp"] = self.lamp
        if self._new_feed:
            update["feed"] = self._new_feed
        if self._leaderboard_changed:
            update["leaderboard"] = self.leaderboard
        totals = self.totals(now)
        if totals != self._sent_totals:
            update["totals"] = self._sent_totals = totals
        if self._new_history:
            update["history"] = self._new_history
        self._new_feed, self._new_history = [], []
        self._lamp_changed = self._leaderboard_changed = False
        return update if nodes or len(update) > 3 else None
