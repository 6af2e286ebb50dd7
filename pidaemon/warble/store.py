"""Per-user storage for SAVE and LOAD, behind a two-method interface.

A store keeps numbers and strings: `int`, `float`, `str`, and `Decimal` for
arbitrary-precision numbers (SqliteStore as values.py's (kind, text)). `set`
enforces the quotas (names per user, value size). The cluster service will
add a server-side store with the same interface; under the runner only the
caller's process touches a store.
"""
from __future__ import annotations

import math
import threading
from typing import Protocol

from .errors import QuotaExceeded, WarbleError
from .values import Value, decode_value, encode_value

__all__ = ["MemoryStore", "SqliteStore", "Store", "Value"]


class Store(Protocol):
    def get(self, user: str, name: str) -> Value | None:
        """The value saved under `name` for `user`, or None."""

    def set(self, user: str, name: str, value: Value) -> None:
        """Save a value; raises QuotaExceeded when over a quota."""


class _QuotaMixin:
    def _init_quota(self, max_keys: int, max_value_length: int) -> None:
        self.max_keys = max_keys
        self.max_value_length = max_value_length

    def _check_value(self, value: Value) -> tuple[str, str]:
        kind, text = encode_value(value)
        if kind == "float" and not math.isfinite(value):  # type: ignore[arg-type]
            raise WarbleError("SAVE: cannot save inf or nan")
        if len(text) > self.max_value_length:
            raise QuotaExceeded(
                f"SAVE: the value is {len(text)} characters long; the limit is {self.max_value_length}")
        return kind, text

    def _too_many(self) -> QuotaExceeded:
        return QuotaExceeded(f"SAVE: each user can keep at most {self.max_keys} names")


class MemoryStore(_QuotaMixin):
    """A store in a dict: for tests, the CLI and single runs."""

    def __init__(self, max_keys: int = 100, max_value_length: int = 4096):
        self._init_quota(max_keys, max_value_length)
        self._data: dict[str, dict[str, Value]] = {}
        self._lock = threading.Lock()

    def get(self, user: str, name: str) -> Value | None:
        with self._lock:
            return self._data.get(user, {}).get(name)

    def set(self, user: str, name: str, value: Value) -> None:
        self._check_value(value)
        with self._lock:
            values = self._data.setdefault(user, {})
            if name not in values and len(values) >= self.max_keys:
                raise self._too_many()
            values[name] = value

    def names(self, user: str) -> list[str]:
        with self._lock:
            return sorted(self._data.get(user, {}))


class SqliteStore(_QuotaMixin):
    """A store in an SQLite file; safe to share between threads."""

    def __init__(self, path: str, max_keys: int = 100, max_value_length: int = 4096):
        self._init_quota(max_keys, max_value_length)
        self.path = str(path)
        self._lock = threading.Lock()
        from ..sqlite import connect   # sqlite3 only for those who keep values in a file
        self._db = connect(self.path, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS warble_values ("
            " user TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,"
            " PRIMARY KEY (user, name))")

    def get(self, user: str, name: str) -> Value | None:
        with self._lock:
            row = self._db.execute(
                "SELECT kind, value FROM warble_values WHERE user = ? AND name = ?",
                (user, name)).fetchone()
        return None if row is None else decode_value(row[0], row[1])

    def set(self, user: str, name: str, value: Value) -> None:
        kind, text = self._check_value(value)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                exists = self._db.execute(
                    "SELECT 1 FROM warble_values WHERE user = ? AND name = ?", (user, name)).fetchone()
                if not exists:
                    (count,) = self._db.execute(
                        "SELECT COUNT(*) FROM warble_values WHERE user = ?", (user,)).fetchone()
                    if count >= self.max_keys:
                        raise self._too_many()
                self._db.execute(
                    "INSERT INTO warble_values (user, name, kind, value) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (user, name) DO UPDATE SET kind = excluded.kind, value = excluded.value",
                    (user, name, kind, text))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def names(self, user: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name FROM warble_values WHERE user = ? ORDER BY name", (user,)).fetchall()
        return [r[0] for r in rows]

    def restore(self, rows: list[tuple]) -> None:
        """Put back (user, name, kind, value) rows read from a damaged store (quotas are not checked again)."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO warble_values (user, name, kind, value) VALUES (?, ?, ?, ?)",
                                 rows)
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
