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
to a REST endpoint (see `forwarder.py`); `database.py` holds the SQLite side.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

from pidaemon import hookimpl
from pidaemon.bus import Message, PayloadError, Subscription
from pidaemon.schema import Integer, MapOf, Number, String, settings

from .database import TelemetryStore
from .forwarder import RestForwarder


@settings
class ForwardSettings:
    url: str | None = String(default=None, doc="REST endpoint (http:// or https://); null: no forwarding")
    interval: float = Number(min=0.01, default=10, doc="seconds between two posts when all is well")
    batch_size: int = Integer(min=1, default=500, doc="readings per request")
    buffer_limit: int = Integer(min=1, default=100000, doc="readings kept while the endpoint fails")
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
    forward: ForwardSettings


class TelemetryStorePlugin:
    config_schema = TelemetryStoreSettings

    def __init__(self, node, config: TelemetryStoreSettings):
        self.node = node
        self.config = config
        self.store = TelemetryStore(Path(config.db) if config.db else node.state_dir / "telemetry.sqlite3")
        forward = config.forward
        self.forwarder: RestForwarder | None = None
        if forward.url:
            if not forward.url.startswith(("http://", "https://")):
                raise ValueError(f"forward.url must be http:// or https://, got {forward.url!r}")
            self.forwarder = RestForwarder(
                forward.url, interval=forward.interval, batch_size=min(forward.batch_size, forward.buffer_limit),
                buffer_limit=forward.buffer_limit, max_backoff=forward.max_backoff,
                timeout=forward.timeout, headers=dict(forward.headers), source=node.id, log=node.log)
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
            await asyncio.sleep(self.config.flush_interval)
            await self._flush()

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.maintenance_interval)
            try:
                self.folded += await self._in_writer(self.store.downsample, time.time(), self.config.raw_retention,
                                                     self.config.rollup_interval, self.config.rollup_retention)
            except sqlite3.Error as exc:
                self.node.log.error("telemetry store: downsampling failed: %s", exc)
