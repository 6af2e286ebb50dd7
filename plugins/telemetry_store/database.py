"""The telemetry store's SQLite file: raw samples, and their downsampled rollups.

Every method of `TelemetryStore` runs in the plugin's one writer thread.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

from pidaemon.sqlite import connect


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
        self.db = connect(self.path)
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
