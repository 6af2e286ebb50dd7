"""The telemetry store's SQLite file: raw samples, and their downsampled rollups, within a size on disk.

Every method of `TelemetryStore` runs in the plugin's one writer thread.

With `max_bytes`, the file, its write-ahead log and its shared-memory index
together stay under that size on disk.  The log gets a slice of it (an eighth,
between 128 KiB and 32 MiB): it is checkpointed when half full and truncated
to half after, and every transaction is kept small enough to fit (writes,
downsampling and deletions go in chunks of at most `chunk_bytes`).  The
database file gets the rest, as a hard limit (`PRAGMA max_page_count`); before
it is reached, the oldest data is deleted: from above `HIGH_WATER` of the
limit down to `LOW_WATER`, samples and rollups alike, oldest first (in
practice the oldest rollups, then the oldest raw samples).  Deleted pages are
reused, so the file stops growing; it does not shrink (VACUUM does that).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pidaemon.sqlite import connect_or_start_afresh

HIGH_WATER = 0.9       # of the database file's limit: start deleting the oldest data...
LOW_WATER = 0.75       # ...until this much is used
CHUNK_BYTES = 4 << 20  # payload bytes per transaction without a size limit
ROWS_PER_QUERY = 2000


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

    def __init__(self, path: Path, max_bytes: int | None = None):
        self.path = path
        self.max_bytes = max_bytes
        self.db: sqlite3.Connection | None = None
        self.page_size = 4096
        self.max_pages: int | None = None  # the database file's limit, in pages
        self.chunk_bytes = CHUNK_BYTES
        self.evicted = 0                    # rows deleted to stay under max_bytes

    def open(self, log) -> None:
        self.db = connect_or_start_afresh(self.path, log, "telemetry store",
                                          "the readings stored so far are in the file set aside")
        self.page_size = self.db.execute("PRAGMA page_size").fetchone()[0]
        if self.max_bytes:
            self._limit_size()
        self.db.execute("CREATE TABLE IF NOT EXISTS samples (node TEXT NOT NULL, time REAL NOT NULL, "
                        "payload TEXT NOT NULL)")
        self.db.execute("CREATE INDEX IF NOT EXISTS samples_time ON samples (time)")
        self.db.execute("CREATE INDEX IF NOT EXISTS samples_node_time ON samples (node, time)")
        self.db.execute("CREATE TABLE IF NOT EXISTS rollups (node TEXT NOT NULL, bucket REAL NOT NULL, "
                        "count INTEGER NOT NULL, readings TEXT NOT NULL, PRIMARY KEY (node, bucket))")
        self.db.execute("CREATE INDEX IF NOT EXISTS rollups_bucket ON rollups (bucket)")
        self.enforce_size()  # a file filled under a larger limit

    # ------------------------------------------------------------ size

    def _limit_size(self) -> None:
        wal = min(max(self.max_bytes // 8, 128 << 10), 32 << 20)
        wal_pages = wal // self.page_size
        shm = 32768 * (wal_pages // 4096 + 1)  # the WAL index: 32 KiB per 4096 frames
        self.max_pages = max(16, (self.max_bytes - wal - shm) // self.page_size)
        self.chunk_bytes = max(self.page_size, wal // 8)
        self.db.execute(f"PRAGMA wal_autocheckpoint = {max(1, wal_pages // 2)}")
        self.db.execute(f"PRAGMA journal_size_limit = {wal // 2}")
        # Cannot go below the file's current size: enforce_size() then deletes down to the limit.
        self.db.execute(f"PRAGMA max_page_count = {self.max_pages}")

    def size_on_disk(self) -> int:
        """Bytes of the database file, its write-ahead log and its shared-memory index."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(f"{self.path}{suffix}").st_size
            except FileNotFoundError:
                pass
        return total

    def used_pages(self) -> int:
        return (self.db.execute("PRAGMA page_count").fetchone()[0]
                - self.db.execute("PRAGMA freelist_count").fetchone()[0])

    def enforce_size(self, room_bytes: int = 0) -> int:
        """Delete the oldest data if the file (plus `room_bytes` about to be written) is past its high-water mark.

        Rows deleted.
        """
        if not self.max_pages:
            return 0
        room = room_bytes // self.page_size
        if self.used_pages() + room <= self.max_pages * HIGH_WATER:
            return 0
        deleted = 0
        while self.used_pages() + room > self.max_pages * LOW_WATER:
            rows = self._delete_oldest()
            if not rows:
                break
            deleted += rows
        self.evicted += deleted
        return deleted

    def _delete_oldest(self) -> int:
        """One transaction's worth of the oldest data (rollups or samples, whichever is older).  Rows deleted."""
        oldest_sample = self.db.execute("SELECT MIN(time) FROM samples").fetchone()[0]
        oldest_rollup = self.db.execute("SELECT MIN(bucket) FROM rollups").fetchone()[0]
        if oldest_sample is None and oldest_rollup is None:
            return 0
        if oldest_rollup is not None and (oldest_sample is None or oldest_rollup <= oldest_sample):
            table, query = "rollups", "SELECT rowid, length(readings) FROM rollups ORDER BY bucket LIMIT ?"
        else:
            table, query = "samples", "SELECT rowid, length(payload) FROM samples ORDER BY time LIMIT ?"
        oldest = self._first_chunk(self.db.execute(query, (ROWS_PER_QUERY,)).fetchall(), lambda row: row[1])
        self._run(partial(self.db.executemany, f"DELETE FROM {table} WHERE rowid = ?", [(r,) for r, _ in oldest]))
        return len(oldest)

    def _first_chunk(self, rows: list, size: Callable[[Any], int]) -> list:
        """The first of `rows` that fit in one transaction (`chunk_bytes` of `size(row)`), at least one."""
        total = 0
        for count, row in enumerate(rows):
            total += size(row)
            if count and total > self.chunk_bytes:
                return rows[:count]
        return rows

    def _run(self, write: Callable[[], Any]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            write()

    def _write(self, write: Callable[[], Any], room_bytes: int) -> None:
        """`write()` in one transaction, room made first; once more with more room if the file was full."""
        self.enforce_size(room_bytes)
        try:
            self._run(write)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_FULL or not self.max_pages:
                raise
            self.enforce_size(4 * room_bytes + self.chunk_bytes)
            self._run(write)

    # ------------------------------------------------------------ samples and rollups

    def last_times(self) -> dict[str, float]:
        return dict(self.db.execute("SELECT node, MAX(time) FROM samples GROUP BY node"))

    def insert(self, rows: list[tuple[str, float, str]]) -> None:
        """Store samples (node, time, payload), a chunk per transaction."""
        start = 0
        while start < len(rows):
            chunk = self._first_chunk(rows[start:start + ROWS_PER_QUERY], lambda row: len(row[2]))
            start += len(chunk)
            room = 3 * sum(len(payload) for _, _, payload in chunk)  # with the indexes, and a margin
            self._write(partial(self.db.executemany, "INSERT INTO samples (node, time, payload) VALUES (?, ?, ?)",
                                chunk), room)

    def downsample(self, now: float, raw_retention: float, interval: float, rollup_retention: float) -> int:
        """Fold raw samples older than the retention into rollups; drop expired rollups.  Rows folded."""
        cutoff = now - raw_retention
        folded = 0
        while True:
            room = 3 * self.chunk_bytes  # a rollup takes up to about three times its samples' bytes
            self.enforce_size(room)
            rows = self._first_chunk(self.db.execute(
                "SELECT rowid, node, time, payload FROM samples WHERE time < ? ORDER BY time LIMIT ?",
                (cutoff, ROWS_PER_QUERY)).fetchall(), lambda row: len(row[3]))
            if not rows:
                break
            self._write(partial(self._fold, rows, interval), room)
            folded += len(rows)
        while True:
            expired = self._first_chunk(self.db.execute(
                "SELECT rowid, length(readings) FROM rollups WHERE bucket < ? LIMIT ?",
                (now - rollup_retention, ROWS_PER_QUERY)).fetchall(), lambda row: row[1])
            if not expired:
                break
            self._run(partial(self.db.executemany, "DELETE FROM rollups WHERE rowid = ?", [(r,) for r, _ in expired]))
        return folded

    def _fold(self, rows: list[tuple[int, str, float, str]], interval: float) -> None:
        """Delete samples (rowid, node, time, payload) and fold them into their rollups (inside a transaction)."""
        self.db.executemany("DELETE FROM samples WHERE rowid = ?", [(row[0],) for row in rows])  # pages to reuse
        buckets: dict[tuple[str, float], tuple[dict[str, list[float]], int]] = {}
        for _, node, sample_time, payload in rows:
            try:
                readings = json.loads(payload).get("readings", {})
            except (ValueError, AttributeError, RecursionError):
                continue
            key = (node, math.floor(sample_time / interval) * interval)
            values, count = buckets.get(key, ({}, 0))
            single = {name: [v, v, v, 1] for name, v in flatten_numbers(readings).items()}
            buckets[key] = (merge_rollup(values, single), count + 1)
        for (node, bucket), (values, count) in buckets.items():
            row = self.db.execute("SELECT count, readings FROM rollups WHERE node = ? AND bucket = ?",
                                  (node, bucket)).fetchone()
            if row:
                values = merge_rollup(json.loads(row[1]), values)
                count += row[0]
            self.db.execute("INSERT OR REPLACE INTO rollups (node, bucket, count, readings) VALUES (?, ?, ?, ?)",
                            (node, bucket, count, json.dumps(values, separators=(",", ":"))))

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
