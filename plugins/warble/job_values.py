"""The cluster's SAVE/LOAD store, where a run's SAVEs count once: applied together with its result.

A run's SAVEs wait in the same SQLite file as the values (`pending_values`,
per job and attempt); its LOADs see them.  When its result arrives, `commit`
moves them into the values and records the result (`committed_jobs`) in one
transaction; the job queue then stores the result too, and the record is
dropped.  So:
- a run whose worker died after a SAVE and before its result never commits:
  its SAVEs are dropped and the job runs again from the values as they were
  (`x=LOAD("n");x++;SAVE("n",x)` counts once);
- a result committed here but not yet in the queue (the server stopped in
  between) is found again by `committed()`: its job ends with that result, and
  does not run a second time.
Other jobs of the same user see a run's SAVEs once it has finished.
"""

from __future__ import annotations

import json
from typing import Any

from pidaemon.warble import SqliteStore
from pidaemon.warble.values import Value, decode_value


class JobValues(SqliteStore):
    """SqliteStore, with SAVEs kept per job attempt until the attempt's result commits them."""

    def __init__(self, path: str, max_keys: int = 100, max_value_length: int = 4096):
        super().__init__(path, max_keys, max_value_length)
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS pending_values (job TEXT NOT NULL, attempt INTEGER NOT NULL,"
                " user TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,"
                " PRIMARY KEY (job, attempt, name))")
            self._db.execute("CREATE INDEX IF NOT EXISTS pending_values_user ON pending_values (user, name)")
            self._db.execute("CREATE TABLE IF NOT EXISTS committed_jobs (job TEXT PRIMARY KEY,"
                             " attempt INTEGER NOT NULL, result TEXT NOT NULL)")

    def save(self, job: str, attempt: int, user: str, name: str, value: Value) -> None:
        """A run's SAVE: kept with its attempt; the user's names (kept and pending) count against the quota."""
        kind, text = self._check_value(value)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (known,) = self._db.execute(
                    "SELECT EXISTS (SELECT 1 FROM warble_values WHERE user = ? AND name = ?)"
                    " OR EXISTS (SELECT 1 FROM pending_values WHERE user = ? AND name = ?)",
                    (user, name, user, name)).fetchone()
                if not known:
                    (count,) = self._db.execute(
                        "SELECT COUNT(*) FROM (SELECT name FROM warble_values WHERE user = ?"
                        " UNION SELECT name FROM pending_values WHERE user = ?)", (user, user)).fetchone()
                    if count >= self.max_keys:
                        raise self._too_many()
                self._db.execute(
                    "INSERT INTO pending_values (job, attempt, user, name, kind, value) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (job, attempt, name) DO UPDATE SET kind = excluded.kind, value = excluded.value",
                    (job, attempt, user, name, kind, text))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def load(self, job: str, attempt: int, user: str, name: str) -> Value | None:
        """A run's LOAD: its own pending SAVE if it made one, else the kept value."""
        with self._lock:
            row = self._db.execute("SELECT kind, value FROM pending_values WHERE job = ? AND attempt = ? AND name = ?",
                                   (job, attempt, name)).fetchone()
        return decode_value(*row) if row is not None else self.get(user, name)

    def commit(self, job: str, attempt: int, user: str, result: dict[str, Any]) -> dict[str, Any]:
        """Apply the attempt's SAVEs and record its result, at once; the result that counts (the first
        committed for this job: a second attempt never applies its SAVEs over the first's).

        A run that SAVEd nothing (most) costs two reads and no write: there is nothing to apply.
        """
        with self._lock:
            row = self._db.execute("SELECT result FROM committed_jobs WHERE job = ?", (job,)).fetchone()
            if row is not None:
                return json.loads(row[0])
            if self._db.execute("SELECT 1 FROM pending_values WHERE job = ? LIMIT 1", (job,)).fetchone() is None:
                return result
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT result FROM committed_jobs WHERE job = ?", (job,)).fetchone()
                if row is not None:
                    self._db.execute("ROLLBACK")
                    return json.loads(row[0])
                self._db.execute(
                    "INSERT INTO warble_values (user, name, kind, value) SELECT user, name, kind, value"
                    " FROM pending_values WHERE job = ? AND attempt = ? AND user = ?"
                    " ON CONFLICT (user, name) DO UPDATE SET kind = excluded.kind, value = excluded.value",
                    (job, attempt, user))
                self._db.execute("DELETE FROM pending_values WHERE job = ?", (job,))
                self._db.execute("INSERT INTO committed_jobs (job, attempt, result) VALUES (?, ?, ?)",
                                 (job, attempt, json.dumps(result)))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return result

    def committed(self) -> dict[str, tuple[int, dict[str, Any]]]:
        """Results committed here and not yet known to be in the job queue: {job: (attempt, result)}."""
        with self._lock:
            rows = self._db.execute("SELECT job, attempt, result FROM committed_jobs").fetchall()
        return {job: (attempt, json.loads(result)) for job, attempt, result in rows}

    def forget_committed(self, job: str) -> None:
        """The job queue has the result: this record is no longer needed."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM committed_jobs WHERE job = ?", (job,)).fetchone() is not None:
                self._db.execute("DELETE FROM committed_jobs WHERE job = ?", (job,))

    def discard(self, job: str, attempt: int) -> int:
        """Drop an attempt's SAVEs (the job was taken from its worker); how many."""
        with self._lock:
            return self._db.execute("DELETE FROM pending_values WHERE job = ? AND attempt = ?",
                                    (job, attempt)).rowcount
