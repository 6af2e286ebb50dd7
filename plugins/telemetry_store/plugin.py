"""The server's telemetry sink: every node's readings into SQLite, downsampled, optionally forwarded.

Receives `<prefix>/nodes/+/telemetry`.  Whoever may publish there can send
anything, so a sample is dropped (counted by reason, see `limits.py`) when its
node id is not a valid name, when it is over `max_sample_bytes` (before its
JSON is parsed), when its node sent over `max_samples_per_node` in
`rate_interval` (also before parsing), when it is not a JSON object with a
numeric `time`, when that time is over `max_clock_skew` ahead, when it has over
`max_keys` keys, or when `max_pending_bytes` of samples already wait for the
writer.  A sample older than or as old as the last one stored for its node
(the retained copy sent again after a reconnect) is skipped.  Samples are
written in batches every `flush_interval` by one writer thread of the plugin's
own (SQLite never runs on the event loop here: with a thousand nodes it is
~200 rows a second plus the downsampling).

Retention: raw samples are kept `raw_retention` seconds; older ones are
folded into `rollup_interval` buckets per node (mean, min and max of every
numeric reading, nested names joined with dots), kept `rollup_retention`
seconds.  And by size: the file stays under `max_db_bytes` on disk, the
oldest data deleted first (`database.py`, which holds the SQLite side).  The
`forward` section, when it has a `url`, also sends every sample to a REST
endpoint (see `forwarder.py`).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

from pidaemon import hookimpl
from pidaemon.bus import Message, Subscription
from pidaemon.names import is_name
from pidaemon.schema import Integer, MapOf, Number, String, settings
from pidaemon.telemetry_history import TelemetryHistory

from .database import TelemetryStore
from .forwarder import RestForwarder
from .limits import INVALID_ID, DropLog, NodeRates, count_keys


@settings
class ForwardSettings:
    url: str | None = String(default=None, doc="REST endpoint (http:// or https://); null: no forwarding")
    interval: float = Number(min=0.01, default=10, doc="seconds between two posts when all is well")
    batch_size: int = Integer(min=1, default=500, doc="readings per request")
    buffer_limit: int = Integer(min=1, default=100000, doc="readings kept while the endpoint fails")
    buffer_bytes: int = Integer(min=1024, default=64 << 20,
                                doc="bytes of readings kept while the endpoint fails (their size as received)")
    max_backoff: float = Number(min=0.01, default=60, doc="cap of the exponential back-off, in seconds")
    timeout: float = Number(min=0.1, default=10, doc="seconds per request")
    headers: Mapping[str, str] = MapOf(String(), doc="extra HTTP headers, e.g. Authorization")


@settings
class TelemetryStoreSettings:
    db: str | None = String(default=None, doc="SQLite file; default: <node.state_dir>/telemetry.sqlite3")
    flush_interval: float = Number(min=0.05, default=1, doc="seconds between two batched writes")
    raw_retention: float = Number(min=1, default=3600, doc="seconds raw samples are kept before downsampling")
    rollup_interval: float = Number(min=1, default=300, doc="seconds per downsampled bucket")
    rollup_retention: float = Number(min=1, default=7 * 86400, doc="seconds downsampled buckets are kept")
    maintenance_interval: float = Number(min=0.1, default=60, doc="seconds between two downsampling runs")
    max_db_bytes: int = Integer(min=1 << 20, default=2 << 30,
                                doc="bytes on disk of the SQLite file with its -wal and -shm; past it, the oldest "
                                    "rollups and samples are deleted")
    max_sample_bytes: int = Integer(min=256, default=16384,
                                    doc="bytes of one telemetry message; larger ones are dropped unparsed")
    max_keys: int = Integer(min=8, default=512,
                            doc="keys and list items in one sample, nested ones included; more: dropped")
    max_samples_per_node: int = Integer(min=1, default=120,
                                        doc="samples stored per node in rate_interval (bursts included); "
                                            "more: dropped")
    rate_interval: float = Number(min=0.1, default=60, doc="seconds of max_samples_per_node")
    max_clock_skew: float = Number(min=0, default=600,
                                   doc="seconds a sample's time may be ahead of the server's clock; more: dropped")
    max_nodes: int = Integer(min=1, default=10000,
                             doc="nodes whose rate and last sample time are remembered (least recent forgotten)")
    max_pending_bytes: int = Integer(min=1024, default=16 << 20,
                                     doc="bytes of samples waiting for the writer thread; more: dropped")
    forward: ForwardSettings


class TelemetryStorePlugin(TelemetryHistory):
    config_schema = TelemetryStoreSettings

    def __init__(self, node, config: TelemetryStoreSettings):
        self.node = node
        self.config = config
        self.store = TelemetryStore(Path(config.db) if config.db else node.state_dir / "telemetry.sqlite3",
                                    max_bytes=config.max_db_bytes)
        forward = config.forward
        self.forwarder: RestForwarder | None = None
        if forward.url:
            if not forward.url.startswith(("http://", "https://")):
                raise ValueError(f"forward.url must be http:// or https://, got {forward.url!r}")
            self.forwarder = RestForwarder(
                forward.url, interval=forward.interval, batch_size=min(forward.batch_size, forward.buffer_limit),
                buffer_limit=forward.buffer_limit, buffer_bytes=forward.buffer_bytes, max_backoff=forward.max_backoff,
                timeout=forward.timeout, headers=dict(forward.headers), source=node.id, log=node.log)
        self.pending: list[tuple[str, float, str]] = []
        self.pending_bytes = 0
        self.received = 0
        self.stored = 0
        self.skipped = 0
        self.folded = 0
        self.rates = NodeRates(config.max_samples_per_node, config.rate_interval, config.max_nodes)
        self.drops = DropLog(node.log)
        self._last_time: OrderedDict[str, float] = OrderedDict()  # node: its newest sample's time, least recent first
        self._db_bytes = 0
        self._evicted_logged = 0
        self._last_evict_log = float("-inf")
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
        self._executor.submit(self.store.open, node.log).result()
        for node_id, last in self._executor.submit(self.store.last_times).result().items():
            self._remember(node_id, last)
        self._db_bytes = self.store.size_on_disk()

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topic("nodes", "+", "telemetry"), qos=0)]

    @hookimpl
    def pidaemon_startup(self, node):
        node.supervise(self._flush_loop, name="telemetry-store:flush")
        node.supervise(self._maintenance_loop, name="telemetry-store:maintenance")
        if self.forwarder is not None:
            node.supervise(self.forwarder.run, name="telemetry-store:forwarder")

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        if not message.payload:
            return
        self.received += 1
        config = self.config
        node_id = message.topic[len(node.topics.prefix) + 1:].split("/")[1]
        if not is_name(node_id):
            return self.drops.drop("bad_node_id", INVALID_ID, f"node id {node_id[:80]!a}")
        size = len(message.payload)
        if size > config.max_sample_bytes:
            return self.drops.drop("too_big", node_id, f"{size} bytes from {node_id}")
        if not self.rates.allow(node_id):
            return self.drops.drop("rate", node_id)
        try:
            payload = message.json()
        except (ValueError, RecursionError) as exc:  # PayloadError, the digits limit of int, nesting
            return self.drops.drop("malformed", node_id, f"{node_id}: {str(exc)[:200]}")
        sample_time = payload.get("time") if isinstance(payload, dict) else None
        if isinstance(sample_time, bool) or not isinstance(sample_time, (int, float)) or not math.isfinite(sample_time):
            return self.drops.drop("malformed", node_id, f"{node_id}: not a JSON object with a numeric 'time'")
        if sample_time > time.time() + config.max_clock_skew:
            return self.drops.drop("future", node_id, f"{node_id}: time {sample_time} is ahead of the server's")
        keys = count_keys(payload, config.max_keys)
        if keys > config.max_keys:
            return self.drops.drop("too_many_keys", node_id, f"over {config.max_keys} keys from {node_id}")
        if sample_time <= self._last_time.get(node_id, -1.0):
            self.skipped += 1  # the retained copy of a sample already stored
            return None
        if self.pending_bytes + size > config.max_pending_bytes:
            return self.drops.drop("backlog", node_id)
        self._remember(node_id, sample_time)
        self.pending.append((node_id, float(sample_time), message.payload.decode("utf-8")))
        self.pending_bytes += size
        if self.forwarder is not None:
            self.forwarder.submit({"node": node_id, "time": sample_time, "readings": payload.get("readings", {})},
                                  size=size)
        return None

    def _remember(self, node_id: str, sample_time: float) -> None:
        self._last_time.pop(node_id, None)
        self._last_time[node_id] = sample_time
        if len(self._last_time) > self.config.max_nodes:
            self._last_time.popitem(last=False)

    @hookimpl
    def pidaemon_telemetry(self, node):
        stats: dict[str, Any] = {"received": self.received, "stored": self.stored, "pending": len(self.pending),
                                 "dropped": dict(self.drops.totals), "evicted": self.store.evicted,
                                 "db_bytes": self._db_bytes}
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
        self.drops.maybe_log(now_or_never=True)
        if self.forwarder is not None and self.forwarder.buffered:
            node.log.warning("telemetry store: %d readings not forwarded at shutdown", self.forwarder.buffered)

    # ------------------------------------------------------------ background work

    async def _flush(self) -> None:
        rows, self.pending, self.pending_bytes = self.pending, [], 0
        if not rows or self._executor is None:  # nothing to write, or the store is closed (shutdown)
            return
        try:
            await self._in_writer(self.store.insert, rows)
        except sqlite3.Error as exc:
            self.node.log.error("telemetry store: cannot write %d samples to %s: %s", len(rows), self.store.path, exc)
            return
        finally:
            self._db_bytes = await self._in_writer(self.store.size_on_disk)
            self._log_evictions()
        self.stored += len(rows)

    def _log_evictions(self) -> None:
        """At most once a minute: how much old data went to keep the file under max_db_bytes."""
        evicted = self.store.evicted - self._evicted_logged
        now = time.monotonic()
        if evicted and now - self._last_evict_log >= 60:
            self._last_evict_log, self._evicted_logged = now, self.store.evicted
            self.node.log.warning("telemetry store: %s reached max_db_bytes (%d): deleted its %d oldest rollups "
                                  "and samples", self.store.path, self.config.max_db_bytes, evicted)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            await self._flush()
            self.drops.maybe_log()

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.maintenance_interval)
            if self._executor is None:
                return
            try:
                self.folded += await self._in_writer(self.store.downsample, time.time(), self.config.raw_retention,
                                                     self.config.rollup_interval, self.config.rollup_retention)
            except sqlite3.Error as exc:
                self.node.log.error("telemetry store: downsampling failed: %s", exc)
