"""Damaged state files of the Warble service: read back what can be read, and forget nothing silently.

The job queue holds jobs acknowledged to their users, and the store holds
values that programs SAVEd: neither can simply be replaced by an empty file.
When one is damaged, `recover_queue` / `recover_store` read it back row by row
(`pidaemon.sqlite.read_back`), set it aside with a timestamp, and write what
was read into a fresh file:
- waiting, sent and running jobs are queued again and run (an attempt already
  under way elsewhere is fenced by its attempt number), finished jobs keep
  their results, refused submissions their records;
- a job of which only the id could be read is kept as failed, with an error
  saying why, and its owner is answered (`QueueRecovery.failed_ids`);
- what could not be read at all is counted in the log line.
When nothing can be read (the file is not a database at all), the damaged file
stays where it is and `CorruptDatabase` goes up: the plugin fails with what to
do, and a required one keeps the daemon from claiming to be ready.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from pidaemon.sqlite import read_back, set_aside

from .jobqueue import DISPATCHED, QUEUED, RUNNING, JobQueue

LOST_JOB_ERROR = "the server's job queue file was damaged and this job could not be read back; submit it again"


@dataclass
class QueueRecovery:
    moved_to: Path
    jobs: int = 0                                  # rows read back whole
    requeued: int = 0                              # of them, jobs that will run (again)
    failed_ids: list[str] = field(default_factory=list)  # jobs of which only the id was read: reported failed
    incomplete: bool = False                       # some rows could not be read at all

    def describe(self) -> str:
        text = (f"moved it to {self.moved_to.name}; read back {self.jobs} jobs ({self.requeued} of them queued "
                f"again to run)")
        if self.failed_ids:
            text += f", {len(self.failed_ids)} reported failed (only their id could be read)"
        if self.incomplete:
            text += ", and some rows could not be read at all"
        return text


def recover_queue(path: Path, queue_factory) -> tuple[JobQueue, QueueRecovery]:
    """A fresh queue at `path` with everything that could be read from the damaged file there."""
    back = read_back(path, "jobs", JobQueue._COLUMNS, key="id")
    moved = set_aside(path)
    queue = queue_factory()
    report = QueueRecovery(moved, jobs=len(back.rows), incomplete=back.incomplete)
    columns = JobQueue._COLUMNS
    state_at = columns.index("state")
    rows = []
    for row in back.rows:
        row = list(row)
        if row[state_at] in (DISPATCHED, RUNNING, QUEUED):
            row[state_at] = QUEUED
            row[columns.index("node")] = None
            row[columns.index("lease_until")] = None
            report.requeued += 1
        rows.append(row)
    placeholders = ", ".join("?" for _ in columns)
    with queue.db:
        queue.db.execute("BEGIN")
        queue.db.executemany(f"INSERT OR IGNORE INTO jobs ({', '.join(columns)}) VALUES ({placeholders})", rows)
    queue.reload_waiting()  # the rows went in behind the queue's back
    for job_id in back.keys_only:
        if isinstance(job_id, str):
            queue.record_lost(job_id, LOST_JOB_ERROR)
            report.failed_ids.append(job_id)
    _copy_leaderboard(moved, queue.db)
    return queue, report


def recover_store(path: Path, store_factory) -> tuple[object, str]:
    """A fresh SAVE/LOAD store at `path` with the values that could be read back; what happened, for the log."""
    back = read_back(path, "warble_values", ("user", "name", "kind", "value"), key="name")
    moved = set_aside(path)
    store = store_factory()
    store.restore(back.rows)
    lost = len(back.keys_only) + (1 if back.incomplete else 0)
    return store, (f"moved it to {moved.name}; read back {len(back.rows)} saved values"
                   + (", some could not be read" if lost else ""))


def _copy_leaderboard(damaged: Path, db: sqlite3.Connection) -> None:
    """The pi leaderboard lives in the same file: keep its rows if they can be read (it is only a ranking)."""
    try:
        rows = read_back(damaged, "pi_leaderboard", ("user", "digits", "job", "time"), key="user").rows
    except Exception:  # noqa: BLE001 - no table, or nothing readable: the ranking starts again
        return
    db.execute("CREATE TABLE IF NOT EXISTS pi_leaderboard (user TEXT PRIMARY KEY, digits INTEGER NOT NULL,"
               " job TEXT NOT NULL, time REAL NOT NULL)")
    db.executemany("INSERT OR IGNORE INTO pi_leaderboard (user, digits, job, time) VALUES (?, ?, ?, ?)", rows)
