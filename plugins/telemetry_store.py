"""The server's telemetry sink: every node's readings into SQLite, downsampled, optionally forwarded.

Receives `<prefix>/nodes/+/telemetry`.  A sample older than or as old as the
last one stored for its node (the retained copy sent again after a reconnect)
is skipped.  Samples are written in batches every `flush_interval` by one
writer thread of the plugin's own (SQLite never runs on the event loop here:
with a thousand nodes it is ~200 rows a second plus the downsampling).

Retention: raw samples are kept `raw_retention` seconds; older ones are
folded into `rollup_interval` buckets per node (mean, min and max of every
numeric reading, nested names joined with dots), kept `rollup_retention`
seconds.  The `forward` section, when it has a `url`, also sends every sample
to a REST endpoint (see `rest_forwarder.py`).
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pidaemon import hookimpl
from pidaemon.bus import Message, PayloadError, Subscription
from pidaemon.schema import Integer, MapOf, Number, Section, String

from .rest_forwarder import RestForwarder


def flatten_numbers(value: Any, prefix: str = "", out: dict[str, float] | None = None) -> dict[str, float]:
    """Numeric leaves of nested readings: {"memory": {"percent": 5}} -> {"memory.percent": 5}."""
    out = {} if out is None else out
    if isinstance(value, bool):
        return out
    if isinstance(value, (int, float)):
        if math.isfinite(value):
            out[prefix] = float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            flatten_numbers(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            flatten_numbers(item, f"{prefix}.{index}" if prefix else str(index), out)
    return out


def merge_rollup(into: dict[str, list[float]], values: dict[str, list[float]]) -> dict[str, list[float]]:
    """Combine two rollups {name: [mean, min, max, n]} of one bucket."""
    merged = dict(into)
    for name, (mean, low, high, n) in values.items():
        if name in merged:
            m0, l0, h0, n0 = merged[name]
            total = n0 + n
            merged[name] = [(m0 * n0 + mean * n) / total, min(l0, low), max(h0, high), total]
        else:
            merged[name] = [mean, low, high, n]
    return merged


class TelemetryStore:
    """The SQLite side; every method runs in the plugin's writer thread."""

    def __init__(self, path: Path):
        self.path = path
        self.db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS samples (node TEXT NOT NULL, time REAL NOT NULL, "
                        "payload TEXT NOT NULL)")
        self.db.execute("CREATE INDEX IF NOT EXISTS samples_time ON samples (time)")
        self.db.execute("CREATE INDEX IF NOT EXISTS samples_node_time ON samples (node, time)")
        self.db.execute("CREATE TABLE IF NOT EXISTS rollups (node TEXT NOT NULL, bucket REAL NOT NULL, "
                        "count INTEGER NOT NULL, readings TEXT NOT NULL, PRIMARY KEY (node, bucket))")

    def last_times(self) -> dict[str, float]:
        return dict(self.db.execute("SELECT node, MAX(time) FROM samples GROUP BY node"))

    def insert(self, rows: list[tuple[str, float, str]]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO samples (node, time, payload) VALUES (?, ?, ?)", rows)

    def downsample(self, now: float, raw_retention: float, interval: float, rollup_retention: float) -> int:
        """Fold raw samples older than the retention into rollups; drop expired rollups.  Rows folded."""
        cutoff = now - raw_retention
        buckets: dict[tuple[str, float], tuple[dict[str, list[float]], int]] = {}
        folded = 0
        for node, sample_time, payload in self.db.execute(
                "SELECT node, time, payload FROM samples WHERE time < ?", (cutoff,)):
            folded += 1
            try:
                readings = json.loads(payload).get("readings", {})
            except (ValueError, AttributeError):
                continue
            key = (node, math.floor(sample_time / interval) * interval)
            values, count = buckets.get(key, ({}, 0))
            single = {name: [v, v, v, 1] for name, v in flatten_numbers(readings).items()}
            buckets[key] = (merge_rollup(values, single), count + 1)
        with self.db:
            self.db.execute("BEGIN")
            for (node, bucket), (values, count) in buckets.items():
                row = self.db.execute("SELECT count, readings FROM rollups WHERE node = ? AND bucket = ?",
                                      (node, bucket)).fetchone()
                if row:
                    values = merge_rollup(json.loads(row[1]), values)
                    count += row[0]
                self.db.execute("INSERT OR REPLACE INTO rollups (node, bucket, count, readings) VALUES (?, ?, ?, ?)",
                                (node, bucket, count, json.dumps(values, separators=(",", ":"))))
            self.db.execute("DELETE FROM samples WHERE time < ?", (cutoff,))
            self.db.execute("DELETE FROM rollups WHERE bucket < ?", (now - rollup_retention,))
        return folded

    def samples(self, node: str, since: float = 0.0) -> list[dict[str, Any]]:
        return [json.loads(p) for (p,) in self.db.execute(
            "SELECT payload FROM samples WHERE node = ? AND time >= ? ORDER BY time", (node, since))]

    def rollups(self, node: str, since: float = 0.0) -> list[dict[str, Any]]:
        return [{"bucket": b, "count": c, "readings": json.loads(r)} for b, c, r in self.db.execute(
            "SELECT bucket, count, readings FROM rollups WHERE node = ? AND bucket >= ? ORDER BY bucket",
            (node, since))]

    def counts(self) -> tuple[int, int]:
        return (self.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0],
                self.db.execute("SELECT COUNT(*) FROM rollups").fetchone()[0])

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


class TelemetryStorePlugin:
    config_schema = Section({
        "db": String(default=None, doc="SQLite file; default: <node.state_dir>/telemetry.sqlite3"),
        "flush_interval": Number(min=0.05, default=1, doc="seconds between two batched writes"),
        "raw_retention": Number(min=1, default=3600, doc="seconds raw samples are kept before downsampling"),
        "rollup_interval": Number(min=1, default=300, doc="seconds per downsampled bucket"),
        "rollup_retention": Number(min=1, default=7 * 86400, doc="seconds downsampled buckets are kept"),
        "maintenance_interval": Number(min=0.1, default=60, doc="seconds between two downsampling runs"),
        "forward": Section({
            "url": String(default=None, doc="REST endpoint (http:// or https://); null: no forwarding"),
            "interval": Number(min=0.01, default=10, doc="seconds between two posts when all is well"),
            "batch_size": Integer(min=1, default=500, doc="readings per request"),
            "buffer_limit": Integer(min=1, default=100000, doc="readings kept while the endpoint fails"),
            "max_backoff": Number(min=0.01, default=60, doc="cap of the exponential back-off, in seconds"),
            "timeout": Number(min=0.1, default=10, doc="seconds per request"),
            "headers": MapOf(String(), doc="extra HTTP headers, e.g. Authorization"),
        }),
    })

    def __init__(self, node, config):
        self.node = node
        self.store = TelemetryStore(Path(config["db"]) if config["db"] else node.state_dir / "telemetry.sqlite3")
        self.flush_interval = config["flush_interval"]
        self.raw_retention = config["raw_retention"]
        self.rollup_interval = config["rollup_interval"]
        self.rollup_retention = config["rollup_retention"]
        self.maintenance_interval = config["maintenance_interval"]
        forward = config["forward"]
        self.forwarder: RestForwarder | None = None
        if forward["url"]:
            if not forward["url"].startswith(("http://", "https://")):
                raise ValueError(f"forward.url must be http:// or https://, got {forward['url']!r}")
            self.forwarder = RestForwarder(
                forward["url"], interval=forward["interval"], batch_size=min(forward["batch_size"],
                                                                             forward["buffer_limit"]),
                buffer_limit=forward["buffer_limit"], max_backoff=forward["max_backoff"],
                timeout=forward["timeout"], headers=forward["headers"], source=node.id, log=node.log)
        self.pending: list[tuple[str, float, str]] = []
        self.received = 0
        self.stored = 0
        self.skipped = 0
        self.folded = 0
        self._last_time: dict[str, float] = {}
        self._executor: ThreadPoolExecutor | None = None

    async def _in_writer(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # ------------------------------------------------------------ queries (for dashboards and tests)

    async def samples(self, node_id: str, since: float = 0.0) -> list[dict[str, Any]]:
        return await self._in_writer(self.store.samples, node_id, since)

    async def rollups(self, node_id: str, since: float = 0.0) -> list[dict[str, Any]]:
        return await self._in_writer(self.store.rollups, node_id, since)

    # ------------------------------------------------------------ hooks

    @hookimpl
    def pidaemon_configure(self, node):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"telemetry-store-{node.id}")
        # Opened in the writer thread, the only one that ever uses the connection; waited for here
        # (before the bus starts) so that the last stored times are known before any message arrives.
        self._executor.submit(self.store.open).result()
        self._last_time = self._executor.submit(self.store.last_times).result()

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topic("nodes", "+", "telemetry"), qos=0)]

    @hookimpl
    def pidaemon_startup(self, node):
        node.spawn(self._flush_loop(), name="telemetry-store:flush")
        node.spawn(self._maintenance_loop(), name="telemetry-store:maintenance")
        if self.forwarder is not None:
            node.spawn(self.forwarder.run(), name="telemetry-store:forwarder")

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        if not message.payload:
            return
        payload = message.json()
        node_id = message.topic[len(node.topics.prefix) + 1:].split("/")[1]
        if not isinstance(payload, dict):
            raise PayloadError(f"{message.topic}: expected a JSON object")
        sample_time = payload.get("time")
        if isinstance(sample_time, bool) or not isinstance(sample_time, (int, float)) or not math.isfinite(sample_time):
            raise PayloadError(f"{message.topic}: no numeric 'time'")
        self.received += 1
        if sample_time <= self._last_time.get(node_id, -1.0):
            self.skipped += 1  # the retained copy of a sample already stored
            return
        self._last_time[node_id] = sample_time
        self.pending.append((node_id, float(sample_time), message.payload.decode("utf-8")))
        if self.forwarder is not None:
            self.forwarder.submit({"node": node_id, "time": sample_time, "readings": payload.get("readings", {})})

    @hookimpl
    def pidaemon_telemetry(self, node):
        stats: dict[str, Any] = {"received": self.received, "stored": self.stored, "pending": len(self.pending)}
        if self.forwarder is not None:
            stats["forwarder"] = self.forwarder.stats()
        return {"telemetry_store": stats}

    @hookimpl
    async def pidaemon_shutdown(self, node):
        if self._executor is None:
            return
        try:
            await self._flush()
        finally:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(executor, self.store.close)
            executor.shutdown(wait=False)
        if self.forwarder is not None and self.forwarder.buffered:
            node.log.warning("telemetry store: %d readings not forwarded at shutdown", self.forwarder.buffered)

    # ------------------------------------------------------------ background work

    async def _flush(self) -> None:
        rows, self.pending = self.pending, []
        if not rows:
            return
        try:
            await self._in_writer(self.store.insert, rows)
        except sqlite3.Error as exc:
            self.node.log.error("telemetry store: cannot write %d samples to %s: %s", len(rows), self.store.path, exc)
            return
        self.stored += len(rows)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self._flush()

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(self.maintenance_interval)
            try:
                self.folded += await self._in_writer(self.store.downsample, time.time(), self.raw_retention,
                                                     self.rollup_interval, self.rollup_retention)
            except sqlite3.Error as exc:
                self.node.log.error("telemetry store: downsampling failed: %s", exc)
