"""The server's persistent Warble job queue (SQLite, WAL mode).

A job acknowledged to its submitter is in this file before the acknowledgement
goes out, so a server crash loses nothing acknowledged.  States:

    queued -> dispatched -> running -> done | failed
    queued -> expired                (waited longer than its deadline)
    dispatched/running -> queued     (its worker died or went silent; retried
                                      elsewhere up to `max_attempts`, then failed)

Fairness: `next_job()` serves users in turn (the user served longest ago
first), so one user's flood delays another user's job by at most a few jobs.
A result is stored once: a second result for the same job is ignored.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from pidaemon.sqlite import connect

QUEUED, DISPATCHED, RUNNING, DONE, FAILED, EXPIRED, REJECTED = (
    "queued", "dispatched", "running", "done", "failed", "expired", "rejected")
ACTIVE_STATES = (DISPATCHED, RUNNING)
FINAL_STATES = (DONE, FAILED, EXPIRED, REJECTED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    source TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted REAL NOT NULL,
    updated REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    node TEXT,
    lease_until REAL,
    result TEXT,
    reply_topic TEXT,
    correlation BLOB,
    post_id TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (state, user, submitted);
CREATE INDEX IF NOT EXISTS jobs_user ON jobs (user, submitted);
"""


@dataclass
class Job:
    id: str
    user: str
    source: str
    state: str = QUEUED
    submitted: float = 0.0
    updated: float = 0.0
    attempts: int = 0
    node: str | None = None
    lease_until: float | None = None
    result: dict[str, Any] | None = None
    reply_topic: str | None = None
    correlation: bytes | None = None
    post_id: str | None = None

    def summary(self) -> dict[str, Any]:
        data = {"id": self.id, "user": self.user, "state": self.state, "submitted": self.submitted,
                "updated": self.updated, "attempts": self.attempts, "node": self.node, "source": self.source}
        if self.result is not None:
            data["result"] = self.result
        return data


@dataclass
class QueueLimits:
    max_attempts: int = 3            # dispatches of one job before it fails
    queue_deadline: float = 600.0    # seconds a job may wait queued before it expires
    per_user_queued: int = 200       # a user's share of the queue
    per_user_rate: float = 5.0       # submissions per second per user (token bucket)
    per_user_burst: int = 20
    max_rejected_kept: int = 10_000  # records of refused submissions; the oldest go first


class QueueRefused(Exception):
    """A submission that is not queued: the reason is its `rejected` status message."""


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class JobQueue:
    path: str | Path
    limits: QueueLimits = field(default_factory=QueueLimits)
    clock: Callable[[], float] = time.time

    def __post_init__(self):
        self.db = connect(self.path)
        self.db.executescript(SCHEMA)
        self._buckets: dict[str, _Bucket] = {}
        self._last_served: dict[str, float] = {}
        self._rejected_kept = self._count_rejected()

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------ intake

    def submit(self, user: str, source: str, *, job_id: str | None = None, post_id: str | None = None,
               reply_topic: str | None = None, correlation: bytes | None = None) -> tuple[Job, bool]:
        """Queue a job; returns (job, created).  A known id or post id returns the existing job.

        Raises QueueRefused when the user is over their rate or share.
        """
        existing = self.find(job_id=job_id, post_id=post_id)
        if existing is not None:
            return existing, False
        self._check_user_limits(user)
        now = self.clock()
        job = Job(id=job_id or uuid.uuid4().hex[:16], user=user, source=source, submitted=now, updated=now,
                  reply_topic=reply_topic, correlation=correlation, post_id=post_id)
        self.db.execute(
            "INSERT INTO jobs (id, user, source, state, submitted, updated, reply_topic, correlation, post_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, user, source, QUEUED, now, now, reply_topic, correlation, post_id))
        return job, True

    def record_rejected(self, user: str, source: str, result: dict[str, Any], *, job_id: str | None = None,
                        post_id: str | None = None, reply_topic: str | None = None,
                        correlation: bytes | None = None) -> Job:
        """Keep a record of a submission refused at intake (it never enters the queue).

        At most `max_rejected_kept` such records are kept, the newest: user
        names are not authenticated, so no per-user limit can stop a flood of
        bad submissions from filling the disk. A flood also pushes out older
        rejections, and with them the memory that a feed post was refused:
        the same post, delivered again later, is then judged afresh.
        """
        now = self.clock()
        job = Job(id=job_id or uuid.uuid4().hex[:16], user=user, source=source, state=REJECTED, submitted=now,
                  updated=now, result=result, reply_topic=reply_topic, correlation=correlation, post_id=post_id)
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO jobs (id, user, source, state, submitted, updated, result, reply_topic,"
            " correlation, post_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, user, source, REJECTED, now, now, json.dumps(result), reply_topic, correlation, post_id))
        self._rejected_kept += cursor.rowcount
        if self._rejected_kept > self.limits.max_rejected_kept:
            keep = max(1, self.limits.max_rejected_kept * 9 // 10)   # in batches, not a row per rejection
            self.db.execute("DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = ?"
                            " ORDER BY updated DESC LIMIT -1 OFFSET ?)", (REJECTED, keep))
            self._rejected_kept = self._count_rejected()
        return job

    def _count_rejected(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (REJECTED,)).fetchone()[0]

    def find(self, *, job_id: str | None = None, post_id: str | None = None) -> Job | None:
        """The job submitted with this id or post id, if any."""
        if job_id is not None and (job := self.get(job_id)) is not None:
            return job
        if post_id is not None:
            row = self.db.execute("SELECT * FROM jobs WHERE post_id = ?", (post_id,)).fetchone()
            if row is not None:
                return self._job(row)
        return None

    MAX_TRACKED_USERS = 10_000

    def _check_user_limits(self, user: str) -> None:
        now = self.clock()
        if len(self._buckets) > self.MAX_TRACKED_USERS:
            # Forget users whose bucket has refilled: they are back to a full burst anyway.
            refill = self.limits.per_user_burst / self.limits.per_user_rate
            self._buckets = {u: b for u, b in self._buckets.items() if now - b.stamp < refill}
            queued = {u for (u,) in self.db.execute("SELECT DISTINCT user FROM jobs WHERE state = ?", (QUEUED,))}
            self._last_served = {u: t for u, t in self._last_served.items() if u in queued}
        bucket = self._buckets.get(user) or _Bucket(float(self.limits.per_user_burst), now)
        bucket.tokens = min(self.limits.per_user_burst, bucket.tokens + (now - bucket.stamp) * self.limits.per_user_rate)
        bucket.stamp = now
        self._buckets[user] = bucket
        if bucket.tokens < 1:
            raise QueueRefused(f"rate limit: at most {self.limits.per_user_rate:g} submissions per second "
                               f"per user (burst {self.limits.per_user_burst})")
        (queued,) = self.db.execute("SELECT COUNT(*) FROM jobs WHERE user = ? AND state IN (?, ?, ?)",
                                    (user, QUEUED, DISPATCHED, RUNNING)).fetchone()
        if queued >= self.limits.per_user_queued:
            raise QueueRefused(f"queue share: user {user!r} already has {queued} jobs waiting "
                               f"(at most {self.limits.per_user_queued})")
        bucket.tokens -= 1

    # ------------------------------------------------------------ dispatch

    def next_job(self) -> Job | None:
        """The next queued job, serving users in turn: the user served longest ago goes first."""
        users = [u for (u,) in self.db.execute("SELECT DISTINCT user FROM jobs WHERE state = ?", (QUEUED,))]
        if not users:
            return None
        user = min(users, key=lambda u: (self._last_served.get(u, 0.0), u))
        row = self.db.execute("SELECT * FROM jobs WHERE state = ? AND user = ? ORDER BY submitted, rowid LIMIT 1",
                              (QUEUED, user)).fetchone()
        return self._job(row)

    def mark_dispatched(self, job_id: str, node: str, lease: float) -> None:
        """Handed to `node`; if no result comes within `lease` seconds, the job is re-queued."""
        now = self.clock()
        self._last_served[self.get(job_id).user] = now
        self.db.execute("UPDATE jobs SET state = ?, node = ?, lease_until = ?, attempts = attempts + 1, updated = ?"
                        " WHERE id = ? AND state = ?", (DISPATCHED, node, now + lease, now, job_id, QUEUED))

    def mark_running(self, job_id: str, node: str, lease: float) -> None:
        now = self.clock()
        self.db.execute("UPDATE jobs SET state = ?, lease_until = ?, updated = ? WHERE id = ? AND node = ?"
                        " AND state IN (?, ?)", (RUNNING, now + lease, now, job_id, node, DISPATCHED, RUNNING))

    def complete(self, job_id: str, result: dict[str, Any], *, node: str, failed: bool = False) -> bool:
        """Store a job's result once, from the node it was handed to.

        False if the job is unknown, finished already (a duplicate), or is not
        with `node` (a late answer after a re-queue, or a forgery).
        """
        now = self.clock()
        cursor = self.db.execute(
            "UPDATE jobs SET state = ?, result = ?, lease_until = NULL, updated = ?"
            " WHERE id = ? AND node = ? AND state IN (?, ?)",
            (FAILED if failed else DONE, json.dumps(result), now, job_id, node, DISPATCHED, RUNNING))
        return cursor.rowcount == 1

    def running_for(self, node: str, user: str) -> bool:
        """Whether `node` has a dispatched or running job of `user`."""
        row = self.db.execute("SELECT 1 FROM jobs WHERE node = ? AND user = ? AND state IN (?, ?) LIMIT 1",
                              (node, user, DISPATCHED, RUNNING)).fetchone()
        return row is not None

    def requeue_from(self, node: str) -> list[Job]:
        """A node died: its dispatched and running jobs go back to the queue (or fail past max_attempts)."""
        rows = self.db.execute("SELECT * FROM jobs WHERE node = ? AND state IN (?, ?)",
                               (node, DISPATCHED, RUNNING)).fetchall()
        return [self._requeue(self._job(row), f"node {node} stopped answering") for row in rows]

    def expire_leases(self) -> list[Job]:
        """Jobs whose worker said nothing within the lease: re-queued (or failed)."""
        rows = self.db.execute("SELECT * FROM jobs WHERE state IN (?, ?) AND lease_until < ?",
                               (DISPATCHED, RUNNING, self.clock())).fetchall()
        return [self._requeue(self._job(row), "no result within the lease") for row in rows]

    def expire_queued(self) -> list[Job]:
        """Jobs that waited in the queue past the deadline end as `expired`."""
        cutoff = self.clock() - self.limits.queue_deadline
        rows = self.db.execute("SELECT * FROM jobs WHERE state = ? AND submitted < ?", (QUEUED, cutoff)).fetchall()
        expired = []
        for row in rows:
            job = self._job(row)
            result = {"id": job.id, "status": "expired",
                      "error": {"message": f"waited more than {self.limits.queue_deadline:g} s in the queue"}}
            self.db.execute("UPDATE jobs SET state = ?, result = ?, updated = ? WHERE id = ? AND state = ?",
                            (EXPIRED, json.dumps(result), self.clock(), job.id, QUEUED))
            job.state, job.result = EXPIRED, result
            expired.append(job)
        return expired

    def forget_finished(self, older_than: float) -> int:
        """Delete finished jobs (and rejections) last updated more than `older_than` seconds ago."""
        marks = ",".join("?" * len(FINAL_STATES))
        cursor = self.db.execute(f"DELETE FROM jobs WHERE state IN ({marks}) AND updated < ?",
                                 (*FINAL_STATES, self.clock() - older_than))
        if cursor.rowcount:
            self._rejected_kept = self._count_rejected()
        return cursor.rowcount

    def _requeue(self, job: Job, reason: str) -> Job:
        now = self.clock()
        if job.attempts >= self.limits.max_attempts:
            result = {"id": job.id, "status": "failed",
                      "error": {"message": f"{reason}; gave up after {job.attempts} attempts"}}
            self.db.execute("UPDATE jobs SET state = ?, result = ?, lease_until = NULL, updated = ? WHERE id = ?",
                            (FAILED, json.dumps(result), now, job.id))
            job.state, job.result = FAILED, result
        else:
            self.db.execute("UPDATE jobs SET state = ?, node = NULL, lease_until = NULL, updated = ? WHERE id = ?",
                            (QUEUED, now, job.id))
            job.state, job.node = QUEUED, None
        return job

    # ------------------------------------------------------------ reading

    def get(self, job_id: str) -> Job | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row is not None else None

    def in_flight(self, node: str | None = None) -> dict[str, int]:
        """Dispatched or running jobs per node."""
        rows = self.db.execute("SELECT node, COUNT(*) FROM jobs WHERE state IN (?, ?) GROUP BY node",
                               (DISPATCHED, RUNNING))
        counts = {n: c for n, c in rows if n is not None}
        return {node: counts.get(node, 0)} if node is not None else counts

    def counts(self) -> dict[str, int]:
        return {state: count for state, count in self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}

    def history(self, user: str, limit: int = 50) -> list[Job]:
        rows = self.db.execute("SELECT * FROM jobs WHERE user = ? ORDER BY submitted DESC LIMIT ?", (user, limit))
        return [self._job(row) for row in rows]

    def jobs(self, states: Iterable[str]) -> list[Job]:
        states = list(states)
        marks = ",".join("?" * len(states))
        rows = self.db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY submitted", states)
        return [self._job(row) for row in rows]

    _COLUMNS = ("id", "user", "source", "state", "submitted", "updated", "attempts", "node", "lease_until",
                "result", "reply_topic", "correlation", "post_id")

    def _job(self, row: tuple) -> Job:
        values = dict(zip(self._COLUMNS, row))
        values["result"] = json.loads(values["result"]) if values["result"] else None
        return Job(**values)
