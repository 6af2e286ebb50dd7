"""The server's registry of nodes: who is in the cluster, what each can do, and whether it is healthy.

Built from what every node publishes anyway: its retained `status` (`online`,
or `offline` from a clean exit or its last will), its retained `info` and its
`telemetry`; plus health pings.  Every `ping_interval` one broadcast ping
(`<prefix>/broadcast/ping`, `{"seq": n, "spread": s}`, with an MQTT v5 response
topic) goes to all nodes; the `ping` plugin of each answers, after a random
delay of up to `ping_spread` seconds.  A node that has not answered
within `ping_timeout` has missed that ping; after `missed_pings` misses in a
row an `online` node becomes `unhealthy` and leaves `healthy_nodes()`, until
it answers again.  `offline` from the status topic always wins.

States: `online`, `unhealthy`, `offline` (and `unknown` for a node seen only
through a stale message, until its status arrives); `since` is the time of
the last change.  The registry is published retained on `<prefix>/registry`
(JSON, see docs/control-plane.md): within `publish_delay` of a change of state
or info, and every `refresh_interval` for the telemetry summaries and
`last_seen`; each node's state also goes retained to `<prefix>/nodes/<id>/health`.

Records are kept in SQLite (`db`, default `<state_dir>/registry.sqlite3`),
reloaded at start.  Writes are batched and run on the event loop: changes of
state or info every `flush_interval` (a few rows), telemetry summaries and
`last_seen` every `persist_interval`.

Nothing a node sends is trusted: every message is checked where it enters
(`messages.py`, one function per kind), and so is every record loaded from
SQLite; what fails is dropped with one log line (`rejections.py`).  A node
leaves the registry when its retained status is cleared, on a forget command
(`<prefix>/<topic>/forget`, `pidaemon nodes forget`), or after `forget_after`
seconds offline; its retained status, info, telemetry and health are then
cleared, so that they do not bring it back.  The health, flush and refresh
loops are supervised (`node.supervise`): a crash restarts them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

from pidaemon import hookimpl
from pidaemon.bus import Message, Subscription
from pidaemon.names import topic_name_problem
from pidaemon.schema import Boolean, Integer, Number, String, settings
from pidaemon.sqlite import connect_or_start_afresh
from pidaemon.topics import MAX_PING_SPREAD

from .fields import Invalid, Rejected, json_object, shorten
from .messages import (MAX_REPLY_TOPIC, node_id as check_node_id, parse_forget, parse_info, parse_ping_answer,
                       parse_status, parse_telemetry)
from .record import STATES, NodeRecord
from .rejections import Rejections

# The event other plugins listen to (`node.events.on(NODE_STATE, handler)`):
# handler(record=NodeRecord, old_state=str), after each change of a node's state.
NODE_STATE = "registry:node_state"
REGISTRY_SCHEMA_VERSION = 1
SHOWN_PROBLEMS = 3  # invalid records of the SQLite file named in the start-up line


class RegistryFull(Rejected):
    """A message about a node the registry has no room for (`max_nodes`)."""


@settings
class RegistrySettings:
    db: str | None = String(default=None, doc="SQLite file; default: <node.state_dir>/registry.sqlite3")
    topic: str = String(default="registry", doc="topic (under the prefix) of the retained registry")
    ping_interval: float = Number(min=0.05, default=5, doc="seconds between two health pings")
    ping_timeout: float | None = Number(min=0.05, default=None,
                                        doc="seconds a node has to answer a ping; default: ping_interval")
    missed_pings: int = Integer(min=1, default=3, doc="misses in a row that make an online node unhealthy")
    ping_spread: float | None = Number(min=0, default=None,
                                       doc="nodes answer after a random delay of up to this many seconds, so that "
                                           "their answers do not all arrive at once; default: ping_timeout / 5, "
                                           "at most 1 s; never more than ping_timeout / 2 nor 30 s")
    publish_delay: float = Number(min=0, default=1, doc="seconds changes are gathered before the registry is published")
    refresh_interval: float = Number(min=0.1, default=10,
                                     doc="seconds between publications for telemetry summaries and last_seen alone")
    health_topics: bool = Boolean(default=True, doc="publish each node's state retained on nodes/<id>/health")
    flush_interval: float = Number(min=0.05, default=1, doc="seconds between two writes of changed records")
    persist_interval: float = Number(min=0.1, default=30, doc="seconds between two writes of telemetry summaries")
    forget_after: float | None = Number(min=0, default=None,
                                        doc="forget a node offline for this many seconds (its retained topics are "
                                            "cleared); null: keep offline nodes until `pidaemon nodes forget`")
    max_nodes: int = Integer(min=1, default=5000,
                             doc="nodes the registry holds at most; messages about further nodes are dropped")


class RegistryPlugin:
    config_schema = RegistrySettings

    def __init__(self, node, config: RegistrySettings):
        self.node = node
        self.config = config
        self.db_path = Path(config.db) if config.db else node.state_dir / "registry.sqlite3"
        self.ping_interval = config.ping_interval
        self.ping_timeout = min(config.ping_timeout or self.ping_interval, self.ping_interval)
        spread = config.ping_spread
        self.ping_spread = min(min(1.0, self.ping_timeout / 5) if spread is None else spread,
                               self.ping_timeout / 2, MAX_PING_SPREAD)
        self.records: dict[str, NodeRecord] = {}
        self.seq = 0
        self.publications = 0
        node.events.declare(NODE_STATE, "a node's health state changed: record (NodeRecord), old_state (str)")
        self._db: sqlite3.Connection | None = None
        self._dirty_db: set[str] = set()        # state or info changed: written at the next flush
        self._dirty_db_minor: set[str] = set()  # telemetry or last_seen: written every persist_interval
        self._forgotten: set[str] = set()
        self._publish_handle: asyncio.TimerHandle | None = None
        self._minor_changes = False
        self.rejections = Rejections(node.log)

    # ------------------------------------------------------------ for the scheduler and other plugins

    def healthy_nodes(self, capability: str | None = None, role: str | None = None) -> list[str]:
        """Ids of the nodes that are `online` (answering pings), optionally with a capability or role."""
        return sorted(r.id for r in self.records.values()
                      if r.state == "online" and (capability is None or capability in r.capabilities)
                      and (role is None or r.role == role))

    def record(self, node_id: str) -> dict[str, Any] | None:
        """A copy of what the registry knows of a node, as published."""
        rec = self.records.get(node_id)
        return rec.to_dict() if rec else None

    def node_record(self, node_id: str) -> NodeRecord | None:
        """The registry's own record of a node, without a copy (a scheduler reads it for every job): never change it."""
        return self.records.get(node_id)

    def snapshot(self) -> dict[str, Any]:
        """The registry as published on `<prefix>/registry`."""
        return {"schema": REGISTRY_SCHEMA_VERSION, "server": self.node.id, "time": round(time.time(), 3),
                "refresh_interval": self.config.refresh_interval,
                "counts": self.counts(), "forget_after": self.config.forget_after,
                "rejected": dict(self.rejections.counts),
                "nodes": {i: self.records[i].to_dict() for i in sorted(self.records)}}

    def counts(self) -> dict[str, int]:
        """How many nodes the registry holds in each state (`offline` ones included, until forgotten)."""
        counts = {state: 0 for state in STATES}
        for rec in self.records.values():
            counts[rec.state] += 1
        return counts

    def forget(self, node_ids: Iterable[str], force: bool = False) -> dict[str, Any]:
        """Forget nodes that left for good, and clear their retained topics (`pidaemon nodes forget`).

        An `online` node is refused unless `force`: it is running, and would come back at its next message.
        Returns `{"forgotten": [ids], "refused": {id: reason}, "unknown": [ids]}`.
        """
        result: dict[str, Any] = {"forgotten": [], "refused": {}, "unknown": []}
        for node_id in node_ids:
            rec = self.records.get(node_id)
            if rec is None:
                result["unknown"].append(node_id)
            elif rec.state == "online" and not force:
                result["refused"][node_id] = "online"
            else:
                self._forget(node_id, "forget command" + (" (forced)" if rec.state == "online" else ""))
                result["forgotten"].append(node_id)
        return result

    # ------------------------------------------------------------ hooks

    @hookimpl
    def pidaemon_configure(self, node):
        self._open_db()  # before the bus starts: messages may arrive before pidaemon_startup

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [
            Subscription(node.topic("nodes", "+", "status")),
            Subscription(node.topic("nodes", "+", "info")),
            Subscription(node.topic("nodes", "+", "telemetry"), qos=0),
            Subscription(node.topic("nodes", "+", "reply", "ping"), qos=0),
            Subscription(self._forget_topic(), retain_as_published=True),
        ]

    @hookimpl
    def pidaemon_startup(self, node):
        node.supervise(self._health_loop, "registry:health")
        node.supervise(self._flush_loop, "registry:flush")
        node.supervise(self._refresh_loop, "registry:refresh")

    @hookimpl
    def pidaemon_connected(self, node):
        self._publish_registry()

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        levels = message.topic[len(node.topics.prefix) + 1:].split("/")
        kind = "other"
        try:
            if len(levels) == 4 and levels[0] == "nodes" and levels[2:] == ["reply", "ping"]:
                kind = "ping_answer"
                self._on_pong(message, levels[1])
            elif message.topic == self._forget_topic():
                kind = "forget"
                self._on_forget(message)
            elif len(levels) == 3 and levels[0] == "nodes" and levels[2] in ("status", "info", "telemetry"):
                kind = levels[2]
                handler = {"status": self._on_status, "info": self._on_info, "telemetry": self._on_telemetry}
                handler[kind](check_node_id(levels[1]), message)
        except Rejected as problem:
            self.rejections.report(kind, message.topic, problem)

    @hookimpl
    def pidaemon_telemetry(self, node):
        counts = self.counts()
        return {"registry": {"nodes": len(self.records), **{k: v for k, v in counts.items() if k != "unknown"}}}

    @hookimpl
    def pidaemon_info(self, node):
        return {"capabilities": ["registry"]}

    @hookimpl
    def pidaemon_shutdown(self, node):
        if self._publish_handle is not None:
            self._publish_handle.cancel()
            self._publish_handle = None
        # The retained registry outlives this server: say, in it, that it is no longer kept up to date,
        # so that a client that may not read the server's status topic (the ACL) knows at once.
        final = dict(self.snapshot(), stopped=round(time.time(), 3))
        node.publish(node.topic(self.config.topic), final, qos=1, retain=True)
        self._flush(everything=True)
        if self._db is not None:
            self._db.close()
            self._db = None

    # ------------------------------------------------------------ messages

    def _forget_topic(self) -> str:
        return self.node.topic(self.config.topic, "forget")

    def _get(self, node_id: str, create: bool = True) -> NodeRecord | None:
        rec = self.records.get(node_id)
        if rec is None and create:
            if len(self.records) >= self.config.max_nodes:
                raise RegistryFull(f"no room for node {node_id}: the registry holds {len(self.records)} nodes "
                                   f"(max_nodes)")
            rec = NodeRecord(id=node_id, since=round(time.time(), 3), expect_from_seq=self.seq + 1)
            self.records[node_id] = rec
            self._forgotten.discard(node_id)
            self._dirty_db.add(node_id)
        return rec

    def _on_status(self, node_id: str, message: Message) -> None:
        status = parse_status(message.payload)
        if status is None:  # the retained status was cleared: the node left the cluster for good
            self._forget(node_id, "its retained status was cleared")
            return
        rec = self._get(node_id)
        if not message.retain:
            self._seen(rec)
        if status == "offline":
            self._set_state(rec, "offline", "status offline")
        elif rec.state == "unhealthy" and message.retain:
            pass  # an old retained "online" does not cure a node that stopped answering
        else:
            self._set_state(rec, "online", "status online")

    def _on_info(self, node_id: str, message: Message) -> None:
        info = parse_info(node_id, message.payload)
        if info is None:  # cleared
            return
        rec = self._get(node_id)
        rec.apply_info(info)
        if not message.retain:
            self._seen(rec)
        self._changed(rec)

    def _on_telemetry(self, node_id: str, message: Message) -> None:
        summary = parse_telemetry(node_id, message.payload)
        if summary is None:  # cleared
            return
        rec = self._get(node_id)
        rec.telemetry = summary
        if not message.retain:
            self._seen(rec)
        self._dirty_db_minor.add(node_id)
        self._minor_changes = True

    def _on_pong(self, message: Message, topic_node: str) -> None:
        """A ping answer, on the node's own `nodes/<id>/reply/ping` (which only that client id may write,
        under the shipped ACL): the topic, not the payload, says who answers."""
        answer = parse_ping_answer(message.payload, topic_node)
        rec = self._get(answer.node)
        self._seen(rec)
        if answer.seq is not None and answer.seq <= self.seq:  # a larger one answers someone else's ping
            rec.answered_seq = max(rec.answered_seq, answer.seq)
        rec.misses = 0
        if rec.state in ("unhealthy", "unknown"):
            self._set_state(rec, "online", "answers pings")

    def _on_forget(self, message: Message) -> None:
        if message.retain:  # a command is never retained: it would run again at every subscription
            raise Invalid("retain", True, "a command that is not retained (clear it with an empty retained message)")
        request = parse_forget(message.payload)
        reply_to = self._reply_topic(message.response_topic or request.reply_to)
        result = self.forget(request.nodes, force=request.force)
        if reply_to is not None:
            props = {"correlation_data": message.correlation_data} if message.correlation_data else {}
            self.node.publish(reply_to, {"server": self.node.id, **result}, qos=1, **props)

    def _reply_topic(self, topic: str | None) -> str | None:
        """Where an answer may go: under `<prefix>/replies/`, never on the cluster's own topics nor elsewhere."""
        if topic is None:
            return None
        replies = self.node.topic("replies", "")
        if not topic.startswith(replies) or len(topic) > MAX_REPLY_TOPIC or topic_name_problem(topic) is not None:
            raise Invalid("reply_to", topic, f"a topic under {replies}")
        return topic

    def _seen(self, rec: NodeRecord) -> None:
        rec.last_seen = round(time.time(), 3)
        self._dirty_db_minor.add(rec.id)
        self._minor_changes = True

    def _set_state(self, rec: NodeRecord, state: str, reason: str) -> None:
        if rec.state == state:
            return
        old, rec.state, rec.since = rec.state, state, round(time.time(), 3)
        rec.misses = 0
        if state == "online":
            rec.expect_from_seq = self.seq + 1  # pings sent before it came (back) do not count
        level = "warning" if state == "unhealthy" else "info"
        getattr(self.node.log, level)("registry: node %s is %s (was %s: %s)", rec.id, state, old, reason)
        self._changed(rec)
        if self.config.health_topics and state != "unknown":
            self.node.publish(self.node.topic("nodes", rec.id, "health"),
                              {"node": rec.id, "state": state, "since": rec.since, "reason": reason,
                               "server": self.node.id}, qos=1, retain=True)
        self.node.events.emit(NODE_STATE, record=rec, old_state=old)

    def _changed(self, rec: NodeRecord) -> None:
        self._dirty_db.add(rec.id)
        self._schedule_publish()

    def _forget(self, node_id: str, reason: str) -> None:
        if self.records.pop(node_id, None) is None:
            return
        self.node.log.info("registry: forgot node %s (%s)", node_id, reason)
        self._forgotten.add(node_id)
        self._dirty_db.discard(node_id)
        self._dirty_db_minor.discard(node_id)
        # Its retained messages go too: an old `offline` status or info would otherwise bring the node
        # back at the server's next subscription (a restart, a reconnection).  Our own empty status
        # comes back to us and finds nothing to forget.
        for kind in ("status", "info", "telemetry", "health"):
            self.node.publish(self.node.topic("nodes", node_id, kind), b"", qos=1, retain=True)
        self._schedule_publish()

    # ------------------------------------------------------------ health

    async def _health_loop(self) -> None:
        while True:
            self.seq += 1
            ping = {"seq": self.seq, "server": self.node.id, "spread": round(self.ping_spread, 3)}
            sent = self.node.publish(self.node.topics.broadcast("ping"), ping, qos=0)
            await asyncio.sleep(self.ping_timeout)
            if sent:  # a ping that did not leave (no connection) is nobody's miss
                self._count_misses(self.seq)
            self._forget_old()
            await asyncio.sleep(self.ping_interval - self.ping_timeout)

    def _count_misses(self, seq: int) -> None:
        for rec in self.records.values():
            if rec.state not in ("online", "unhealthy") or rec.expect_from_seq > seq or rec.answered_seq >= seq:
                continue
            rec.misses += 1
            if rec.state == "online" and rec.misses >= self.config.missed_pings:
                misses = rec.misses
                self._set_state(rec, "unhealthy", f"missed {misses} pings in a row")
                rec.misses = misses

    def _forget_old(self) -> None:
        if self.config.forget_after is None:
            return
        limit = time.time() - self.config.forget_after
        for rec in [r for r in self.records.values() if r.state == "offline" and r.since < limit]:
            self._forget(rec.id, f"offline for more than {self.config.forget_after:g} s (forget_after)")

    # ------------------------------------------------------------ publishing

    def _schedule_publish(self) -> None:
        if self._publish_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._publish_handle = loop.call_later(self.config.publish_delay, self._publish_registry)

    def _publish_registry(self) -> None:
        if self._publish_handle is not None:
            self._publish_handle.cancel()
            self._publish_handle = None
        bus = self.node.bus
        if bus is not None and not bus.connected:
            return  # published on the next connection (pidaemon_connected); do not queue stale copies
        self._minor_changes = False
        if self.node.publish(self.node.topic(self.config.topic), self.snapshot(), qos=1, retain=True):
            self.publications += 1

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_interval)
            if self._minor_changes and self._publish_handle is None:
                self._publish_registry()

    # ------------------------------------------------------------ SQLite

    def _open_db(self) -> None:
        self._db = connect_or_start_afresh(self.db_path, self.node.log, "registry",
                                           "the registry fills again as the nodes report")
        self._db.execute("CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, record TEXT NOT NULL, "
                         "updated REAL NOT NULL)")
        dropped: list[tuple[Any, str]] = []  # (row id, problem)
        for row_id, text in self._db.execute("SELECT id, record FROM nodes").fetchall():
            try:
                rec = NodeRecord.from_stored(json_object(str(text).encode("utf-8", "replace"), 1 << 20, "record"))
                if rec.id != row_id:
                    raise Invalid("id", rec.id, f"the id of its row, {shorten(row_id)}")
            except Rejected as problem:
                dropped.append((row_id, str(problem)))
                continue
            if len(self.records) >= self.config.max_nodes:
                dropped.append((row_id, f"more than max_nodes ({self.config.max_nodes}) records"))
                continue
            self.records[rec.id] = rec
        if dropped:
            # An older registry stored whatever nodes said: its records are checked like messages.
            shown = "; ".join(f"{shorten(i)}: {p}" for i, p in dropped[:SHOWN_PROBLEMS])
            more = f"; and {len(dropped) - SHOWN_PROBLEMS} more" if len(dropped) > SHOWN_PROBLEMS else ""
            self.node.log.warning("registry: dropped %d invalid records from %s: %s%s", len(dropped), self.db_path,
                                  shown, more)
            with self._db:
                self._db.executemany("DELETE FROM nodes WHERE id = ?", [(i,) for i, _ in dropped])
        offline = sum(1 for rec in self.records.values() if rec.state == "offline")
        self.node.log.info("registry: %d nodes loaded from %s, %d of them offline%s", len(self.records),
                           self.db_path, offline,
                           f" (forgotten after {self.config.forget_after:g} s offline)"
                           if self.config.forget_after is not None else
                           " (kept until forgotten: pidaemon nodes forget, or set forget_after)" if offline else "")

    async def _flush_loop(self) -> None:
        ticks_per_persist = max(1, round(self.config.persist_interval / self.config.flush_interval))
        tick = 0
        while True:
            await asyncio.sleep(self.config.flush_interval)
            tick += 1
            try:
                self._flush(everything=tick % ticks_per_persist == 0)
            except sqlite3.Error as exc:
                self.node.log.error("registry: cannot write %s: %s", self.db_path, exc)

    def _flush(self, everything: bool = False) -> int:
        if self._db is None:
            return 0
        ids = set(self._dirty_db)
        if everything:
            ids |= self._dirty_db_minor
            self._dirty_db_minor.clear()
        self._dirty_db.clear()
        forgotten, self._forgotten = self._forgotten, set()
        now = time.time()
        rows = [(i, json.dumps(self.records[i].to_dict(), separators=(",", ":")), now)
                for i in ids if i in self.records]
        if not rows and not forgotten:
            return 0
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO nodes (id, record, updated) VALUES (?, ?, ?) ON CONFLICT(id) "
                                 "DO UPDATE SET record = excluded.record, updated = excluded.updated", rows)
            self._db.executemany("DELETE FROM nodes WHERE id = ?", [(i,) for i in forgotten])
        return len(rows)
