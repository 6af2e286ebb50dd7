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
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from pidaemon import hookimpl
from pidaemon.bus import Message, PayloadError, Subscription
from pidaemon.schema import Boolean, Integer, Number, String, settings
from pidaemon.sqlite import connect
from pidaemon.topics import MAX_PING_SPREAD

from .record import INFO_FIELDS, STATES, NodeRecord
from .telemetry_summary import summarize_telemetry

# The event other plugins listen to (`node.events.on(NODE_STATE, handler)`):
# handler(record=NodeRecord, old_state=str), after each change of a node's state.
NODE_STATE = "registry:node_state"
REGISTRY_SCHEMA_VERSION = 1


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
                                        doc="drop a node offline for this many seconds; null: keep")


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
        counts = {state: 0 for state in STATES}
        for rec in self.records.values():
            counts[rec.state] += 1
        return {"schema": REGISTRY_SCHEMA_VERSION, "server": self.node.id, "time": round(time.time(), 3),
                "counts": counts, "nodes": {i: self.records[i].to_dict() for i in sorted(self.records)}}

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
            Subscription(self._pong_topic(), qos=0),
        ]

    @hookimpl
    def pidaemon_startup(self, node):
        node.spawn(self._health_loop(), name="registry:health")
        node.spawn(self._flush_loop(), name="registry:flush")
        node.spawn(self._refresh_loop(), name="registry:refresh")

    @hookimpl
    def pidaemon_connected(self, node):
        self._publish_registry()

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        levels = message.topic[len(node.topics.prefix) + 1:].split("/")
        if message.topic == self._pong_topic() or levels[-2:] == ["reply", "ping"]:
            self._on_pong(message)
        elif len(levels) == 3 and levels[0] == "nodes":
            handler = {"status": self._on_status, "info": self._on_info,
                       "telemetry": self._on_telemetry}.get(levels[2])
            if handler is not None:
                handler(levels[1], message)

    @hookimpl
    def pidaemon_telemetry(self, node):
        counts = {state: 0 for state in STATES}
        for rec in self.records.values():
            counts[rec.state] += 1
        return {"registry": {"nodes": len(self.records), **{k: v for k, v in counts.items() if k != "unknown"}}}

    @hookimpl
    def pidaemon_info(self, node):
        return {"capabilities": ["registry"]}

    @hookimpl
    def pidaemon_shutdown(self, node):
        if self._publish_handle is not None:
            self._publish_handle.cancel()
            self._publish_handle = None
        self._flush(everything=True)
        if self._db is not None:
            self._db.close()
            self._db = None

    # ------------------------------------------------------------ messages

    def _pong_topic(self) -> str:
        return self.node.topic(self.config.topic, "pong", self.node.id)

    def _get(self, node_id: str, create: bool = True) -> NodeRecord | None:
        rec = self.records.get(node_id)
        if rec is None and create:
            rec = NodeRecord(id=node_id, since=round(time.time(), 3), expect_from_seq=self.seq + 1)
            self.records[node_id] = rec
            self._forgotten.discard(node_id)
            self._dirty_db.add(node_id)
        return rec

    def _on_status(self, node_id: str, message: Message) -> None:
        text = message.payload.decode("utf-8", "replace").strip()
        if not text:  # the retained status was cleared: the node left the cluster for good
            self._forget(node_id, "its retained status was cleared")
            return
        if text not in ("online", "offline"):
            raise PayloadError(f"{message.topic}: expected online or offline, got {text[:40]!r}")
        rec = self._get(node_id)
        if not message.retain:
            self._seen(rec)
        if text == "offline":
            self._set_state(rec, "offline", "status offline")
        elif rec.state == "unhealthy" and message.retain:
            pass  # an old retained "online" does not cure a node that stopped answering
        else:
            self._set_state(rec, "online", "status online")

    def _on_info(self, node_id: str, message: Message) -> None:
        if not message.payload:
            return
        info = message.json()
        if not isinstance(info, dict):
            raise PayloadError(f"{message.topic}: expected a JSON object")
        rec = self._get(node_id)
        for name in INFO_FIELDS:
            if name in info:
                setattr(rec, name, info[name])
        caps = info.get("capabilities")
        rec.capabilities = [str(c) for c in caps] if isinstance(caps, list) else []
        plugins = info.get("plugins")
        rec.failed_plugins = sorted(n for n, p in plugins.items() if isinstance(p, dict) and p.get("state") == "failed"
                                    ) if isinstance(plugins, dict) else []
        if not message.retain:
            self._seen(rec)
        self._changed(rec)

    def _on_telemetry(self, node_id: str, message: Message) -> None:
        if not message.payload:
            return
        payload = message.json()
        if not isinstance(payload, dict):
            raise PayloadError(f"{message.topic}: expected a JSON object")
        rec = self._get(node_id)
        rec.telemetry = summarize_telemetry(payload)
        if not message.retain:
            self._seen(rec)
        self._dirty_db_minor.add(node_id)
        self._minor_changes = True

    def _on_pong(self, message: Message) -> None:
        answer = message.json()
        if not isinstance(answer, dict) or not isinstance(answer.get("node"), str):
            raise PayloadError(f"{message.topic}: expected a ping answer with a node id")
        rec = self._get(answer["node"])
        self._seen(rec)
        seq = answer.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            rec.answered_seq = max(rec.answered_seq, seq)
        rec.misses = 0
        if rec.state in ("unhealthy", "unknown"):
            self._set_state(rec, "online", "answers pings")

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
        if self.config.health_topics:
            self.node.publish(self.node.topic("nodes", node_id, "health"), b"", qos=1, retain=True)
        self._schedule_publish()

    # ------------------------------------------------------------ health

    async def _health_loop(self) -> None:
        while True:
            self.seq += 1
            ping = {"seq": self.seq, "server": self.node.id, "spread": round(self.ping_spread, 3)}
            sent = self.node.publish(self.node.topics.broadcast("ping"), ping, qos=0,
                                     response_topic=self._pong_topic())
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
            self._forget(rec.id, f"offline for more than {self.config.forget_after} s")

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
        self._db = connect(self.db_path)
        self._db.execute("CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, record TEXT NOT NULL, "
                         "updated REAL NOT NULL)")
        loaded = 0
        for node_id, text in self._db.execute("SELECT id, record FROM nodes"):
            try:
                self.records[node_id] = NodeRecord.from_dict(json.loads(text))
                loaded += 1
            except (ValueError, TypeError) as exc:
                self.node.log.warning("registry: skipping unreadable record of %s in %s: %s", node_id,
                                      self.db_path, exc)
        if loaded:
            self.node.log.info("registry: %d nodes loaded from %s", loaded, self.db_path)

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
