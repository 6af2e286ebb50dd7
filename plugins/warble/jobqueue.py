"""The server's persistent Warble job queue (SQLite, WAL mode).

A job acknowledged to its submitter is in this file before the acknowledgement
goes out, so a server crash loses nothing acknowledged.  States:

    queued -> dispatched -> running -> done | failed
    queued -> expired                (waited longer than its deadline)
    dispatched/running -> queued     (its worker died or went silent; retried
                                      elsewhere up to `max_attempts`, then failed)

Each dispatch is one *attempt* (`attempts` counts them).  The attempt that
holds a job (its state is dispatched or running, on that node, with that
attempt number) is the only one whose result, store requests and progress
are taken (`holds`, `complete`, `mark_running`): a run that lost the job, to a
re-queue after its worker went silent, is fenced off by its attempt number.

Admission (`submit`): at most `max_queued` jobs wait in all; each user and
each origin (where the intake knows one: an MQTT client id, an HTTP client's
address) has a rate and a share of the queue.  A write the disk refuses
(full, or failing) is a refusal with that reason, never an exception.

Fairness: `next_job()` serves parties in turn (the party served longest ago
first, then the one waiting longest), and the users of a party in turn.  A
party is the origin when it is known, else the user: a client that rotates
user names is still one party, so its flood delays another party's job by at
most a few jobs.  A user, and an origin, may hold at most a given number of
running jobs (`max_active_per_user`, `max_active_per_origin`).
A result is stored once: a second result for the same job is ignored.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterable

from pidaemon.sqlite import connect

from .waiting_jobs import WaitingJobs

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
    post_id TEXT UNIQUE,
    origin TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (state, user, submitted);
CREATE INDEX IF NOT EXISTS jobs_user ON jobs (user, submitted);
"""
# After the `origin` column exists (files written before it get it added).
INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_party ON jobs (state, origin, user, submitted);
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
    origin: str | None = None  # where it came from, if the intake knows: "mqtt:<client id>", "http:<address>"
    previous_node: str | None = field(default=None, compare=False)  # set by a re-queue: who held it until then

    @property
    def party(self) -> str:
        """Whom fairness and running caps count this job for: its origin if known, else its user."""
        return party_of(self.user, self.origin)

    def summary(self) -> dict[str, Any]:
        data = {"id": self.id, "user": self.user, "state": self.state, "submitted": self.submitted,
                "updated": self.updated, "attempts": self.attempts, "node": self.node, "source": self.source}
        if self.result is not None:
            data["result"] = self.result
        return data


def party_of(user: str, origin: str | None) -> str:
    return origin if origin else f"user:{user}"


@dataclass
class QueueLimits:
    max_attempts: int = 3            # dispatches of one job before it fails
    queue_deadline: float = 600.0    # seconds a job may wait queued before it expires
    max_queued: int = 10_000         # jobs waiting, all users together
    per_user_queued: int = 200       # a user's share of the queue
    per_user_rate: float = 5.0       # submissions per second per user (token bucket)
    per_user_burst: int = 20
    per_origin_queued: int = 1000    # an origin's share of the queue (all its user names together)
    per_origin_rate: float = 20.0    # submissions per second per origin
    per_origin_burst: int = 200
    max_rejected_kept: int = 10_000  # records of refused submissions; the oldest go first


class QueueRefused(Exception):
    """A submission that is not queued: the message is its `rejected` status message.

    `reason` names the kind for clients: `rate`, `user_share`, `origin_rate`,
    `origin_share`, `queue_full`, `storage`.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class StorageFailed(QueueRefused):
    """The queue file refused a write (disk full, I/O error): nothing was changed."""

    def __init__(self, exc: BaseException):
        if disk_full(exc):
            message = "the server's disk is full: the job was not queued; try again later"
        else:
            message = f"the server could not store the job ({storage_error_name(exc)}); try again later"
        super().__init__(message, "storage")
        self.error = exc


STORAGE_ERRORS = (sqlite3.Error, OSError)


def disk_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL ("database or disk is full") or the system's ENOSPC."""
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def storage_error_name(exc: BaseException) -> str:
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, type(exc).__name__)
    return type(exc).__name__


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """A token bucket per key (`rate` per second, up to `burst`), for at most `max_tracked` keys.

    Keys whose bucket has refilled are forgotten first: they are back to a
    full burst anyway, so forgetting them changes nothing.
    """

    def __init__(self, rate: float, burst: int, max_tracked: int = 10_000):
        self.rate, self.burst, self.max_tracked = rate, burst, max_tracked
        self.buckets: dict[str, _Bucket] = {}

    def allows(self, key: str, now: float) -> bool:
        """Whether `key` has a token now (refilling it first); takes nothing."""
        if len(self.buckets) > self.max_tracked:
            refill = self.burst / self.rate
            self.buckets = {k: b for k, b in self.buckets.items() if now - b.stamp < refill}
        bucket = self.buckets.get(key) or _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        self.buckets[key] = bucket
        return bucket.tokens >= 1

    def take(self, key: str) -> None:
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket.tokens -= 1


@dataclass
class JobQueue:
    path: str | Path
    limits: QueueLimits = field(default_factory=QueueLimits)
    clock: Callable[[], float] = time.time

    MAX_TRACKED = 10_000  # users and origins whose rate or turn is remembered

    def __post_init__(self):
        self.db = connect(self.path)
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(jobs)")}
        if "origin" not in columns:  # a queue file from before origins were kept
            self.db.execute("ALTER TABLE jobs ADD COLUMN origin TEXT")
        self.db.executescript(INDEXES)
        self.user_rates = RateLimiter(self.limits.per_user_rate, self.limits.per_user_burst, self.MAX_TRACKED)
        self.origin_rates = RateLimiter(self.limits.per_origin_rate, self.limits.per_origin_burst, self.MAX_TRACKED)
        self._last_served: dict[str, float] = {}        # user: when one of their jobs was last dispatched
        self._party_last_served: dict[str, float] = {}  # party (origin, or user:<name>): the same
        self._rejected_kept = self._count_rejected()
        self.waiting = WaitingJobs()  # the queued jobs in memory: kept at every change to or from QUEUED
        self.reload_waiting()

    def reload_waiting(self) -> None:
        """Read the queued jobs from the file again (after rows were written behind this object's back)."""
        self.waiting.rebuild(self.db.execute("SELECT id, origin, user, submitted FROM jobs WHERE state = ?"
                                             " ORDER BY submitted, rowid", (QUEUED,)))

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------ intake

    def submit(self, user: str, source: str, *, job_id: str | None = None, post_id: str | None = None,
               reply_topic: str | None = None, correlation: bytes | None = None,
               origin: str | None = None) -> tuple[Job, bool]:
        """Queue a job; returns (job, created).  A known id or post id returns the existing job.

        Raises QueueRefused (with its `reason`) when the queue is full, the user
        or the origin is over their rate or share, or the file refused the write
        (StorageFailed: disk full, I/O error).
        """
        existing = self.find(job_id=job_id, post_id=post_id)
        if existing is not None:
            return existing, False
        now = self.clock()
        self._check_admission(user, origin, now)
        job = Job(id=job_id or uuid.uuid4().hex[:16], user=user, source=source, submitted=now, updated=now,
                  reply_topic=reply_topic, correlation=correlation, post_id=post_id, origin=origin)
        try:
            self.db.execute(
                "INSERT INTO jobs (id, user, source, state, submitted, updated, reply_topic, correlation, post_id,"
                " origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, user, source, QUEUED, now, now, reply_topic, correlation, post_id, origin))
        except STORAGE_ERRORS as exc:
            raise StorageFailed(exc) from exc
        self.waiting.add(job.id, origin, user, now)
        self.user_rates.take(user)
        if origin:
            self.origin_rates.take(origin)
        return job, True

    def record_rejected(self, user: str, source: str, result: dict[str, Any], *, job_id: str | None = None,
                        post_id: str | None = None, reply_topic: str | None = None,
                        correlation: bytes | None = None, origin: str | None = None) -> Job:
        """Keep a record of a submission refused at intake (it never enters the queue).

        At most `max_rejected_kept` such records are kept, the newest: user
        names are not authenticated, so no per-user limit can stop a flood of
        bad submissions from filling the disk. A flood also pushes out older
        rejections, and with them the memory that a feed post was refused:
        the same post, delivered again later, is then judged afresh.
        Raises sqlite3.Error or OSError when the file refuses the write (the
        caller answers the client anyway).
        """
        now = self.clock()
        job = Job(id=job_id or uuid.uuid4().hex[:16], user=user, source=source, state=REJECTED, submitted=now,
                  updated=now, result=result, reply_topic=reply_topic, correlation=correlation, post_id=post_id,
                  origin=origin)
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO jobs (id, user, source, state, submitted, updated, result, reply_topic,"
            " correlation, post_id, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, user, source, REJECTED, now, now, json.dumps(result), reply_topic, correlation, post_id, origin))
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
            row = self.db.execute(f"{self._SELECT} WHERE post_id = ?", (post_id,)).fetchone()
            if row is not None:
                return self._job(row)
        return None

    def _check_admission(self, user: str, origin: str | None, now: float) -> None:
        """Raise QueueRefused unless the queue, the origin and the user all have room; takes nothing."""
        limits = self.limits
        waiting = len(self.waiting)
        if waiting >= limits.max_queued:
            raise QueueRefused(f"queue full: {waiting} jobs are waiting (at most {limits.max_queued}); "
                               f"try again later", "queue_full")
        if origin:
            if not self.origin_rates.allows(origin, now):
                raise QueueRefused(f"rate limit: at most {limits.per_origin_rate:g} submissions per second "
                                   f"from one client (burst {limits.per_origin_burst})", "origin_rate")
            (active,) = self.db.execute("SELECT COUNT(*) FROM jobs WHERE state IN (?, ?) AND origin = ?",
                                        (DISPATCHED, RUNNING, origin)).fetchone()
            held = active + self.waiting.waiting(origin=origin)
            if held >= limits.per_origin_queued:
                raise QueueRefused(f"queue share: this client already has {held} jobs waiting "
                                   f"(at most {limits.per_origin_queued}, whatever the user names)", "origin_share")
        if not self.user_rates.allows(user, now):
            raise QueueRefused(f"rate limit: at most {limits.per_user_rate:g} submissions per second "
                               f"per user (burst {limits.per_user_burst})", "rate")
        (active,) = self.db.execute("SELECT COUNT(*) FROM jobs WHERE state IN (?, ?) AND user = ?",
                                    (DISPATCHED, RUNNING, user)).fetchone()
        held = active + self.waiting.waiting(user=user)
        if held >= limits.per_user_queued:
            raise QueueRefused(f"queue share: user {user!r} already has {held} jobs waiting "
                               f"(at most {limits.per_user_queued})", "user_share")

    # ------------------------------------------------------------ dispatch

    def next_job(self, *, max_active_per_user: int | None = None,
                 max_active_per_origin: int | None = None) -> Job | None:
        """The next queued job, serving parties in turn and the users of a party in turn.

        The party served longest ago goes first (one never served: the one
        waiting longest); users and origins that already hold their maximum of
        dispatched or running jobs are passed over.  None if nothing may go.
        """
        rows = list(self.waiting.oldest())  # (origin, user, oldest submitted, that job's id)
        if not rows:
            return None
        busy_users: set[str] = set()
        busy_origins: set[str] = set()
        if max_active_per_user is not None or max_active_per_origin is not None:
            active = self.db.execute("SELECT origin, user, COUNT(*) FROM jobs WHERE state IN (?, ?)"
                                     " GROUP BY origin, user", ACTIVE_STATES).fetchall()
            per_user: dict[str, int] = {}
            per_origin: dict[str, int] = {}
            for origin, user, count in active:
                per_user[user] = per_user.get(user, 0) + count
                if origin:
                    per_origin[origin] = per_origin.get(origin, 0) + count
            if max_active_per_user is not None:
                busy_users = {u for u, n in per_user.items() if n >= max_active_per_user}
            if max_active_per_origin is not None:
                busy_origins = {o for o, n in per_origin.items() if n >= max_active_per_origin}
        parties: dict[str, list[tuple[str | None, str, float, str]]] = {}
        for origin, user, oldest, job_id in rows:
            if user in busy_users or (origin and origin in busy_origins):
                continue
            parties.setdefault(party_of(user, origin), []).append((origin, user, oldest, job_id))
        if not parties:
            return None
        served = self._party_last_served
        party = min(parties, key=lambda p: (served.get(p, 0.0), min(c[2] for c in parties[p]), p))
        _, _, _, job_id = min(parties[party], key=lambda c: (self._last_served.get(c[1], 0.0), c[2], c[1]))
        return self.get(job_id)

    def mark_dispatched(self, job_id: str, node: str, lease: float) -> int | None:
        """Handed to `node`: returns the attempt number this dispatch is (1, 2, ...), or None if
        the job was not queued.  If no result comes within `lease` seconds, the job is re-queued."""
        job = self.get(job_id)
        if job is None or job.state != QUEUED:
            return None
        now = self.clock()
        attempt = job.attempts + 1
        cursor = self.db.execute(
            "UPDATE jobs SET state = ?, node = ?, lease_until = ?, attempts = ?, updated = ?"
            " WHERE id = ? AND state = ? AND attempts = ?",
            (DISPATCHED, node, now + lease, attempt, now, job_id, QUEUED, job.attempts))
        if cursor.rowcount != 1:
            return None
        self.waiting.remove(job_id)
        self._last_served[job.user] = now
        self._party_last_served[job.party] = now
        self._forget_idle_turns()
        return attempt

    def release(self, job_id: str, attempt: int) -> None:
        """Undo a dispatch whose job message could not be sent: back to the queue, the attempt not counted."""
        cursor = self.db.execute(
            "UPDATE jobs SET state = ?, node = NULL, lease_until = NULL, attempts = ?, updated = ?"
            " WHERE id = ? AND state = ? AND attempts = ?", (QUEUED, attempt - 1, self.clock(), job_id, DISPATCHED,
                                                            attempt))
        if cursor.rowcount == 1:
            job = self.get(job_id)
            self.waiting.add(job.id, job.origin, job.user, job.submitted)

    def _forget_idle_turns(self) -> None:
        """Keep the turn bookkeeping bounded: forget users and parties with nothing queued."""
        if len(self._last_served) + len(self._party_last_served) <= self.MAX_TRACKED:
            return
        rows = [(origin, user) for origin, user, _, _ in self.waiting.oldest()]
        users = {user for _, user in rows}
        parties = {party_of(user, origin) for origin, user in rows}
        self._last_served = {u: t for u, t in self._last_served.items() if u in users}
        self._party_last_served = {p: t for p, t in self._party_last_served.items() if p in parties}

    def holds(self, job_id: str, attempt: Any, node: str) -> Job | None:
        """The job, if attempt `attempt` on `node` holds it now (dispatched or running there); else None."""
        if not isinstance(attempt, int) or isinstance(attempt, bool):
            return None
        row = self.db.execute(f"{self._SELECT} WHERE id = ? AND node = ? AND attempts = ? AND state IN (?, ?)",
                              (job_id, node, attempt, *ACTIVE_STATES)).fetchone()
        return self._job(row) if row is not None else None

    def mark_running(self, job_id: str, node: str, lease: float, *, attempt: int) -> bool:
        """The worker started the run: the lease starts again.  False for a stale or unknown attempt."""
        now = self.clock()
        cursor = self.db.execute(
            "UPDATE jobs SET state = ?, lease_until = ?, updated = ? WHERE id = ? AND node = ? AND attempts = ?"
            " AND state IN (?, ?)", (RUNNING, now + lease, now, job_id, node, attempt, DISPATCHED, RUNNING))
        return cursor.rowcount == 1

    def complete(self, job_id: str, result: dict[str, Any], *, node: str, attempt: int,
                 failed: bool = False) -> bool:
        """Store a job's result once, from the attempt that holds it.

        False if the job is unknown, finished already (a duplicate), or is not
        held by `attempt` on `node` (a late answer after a re-queue, or a forgery).
        """
        now = self.clock()
        cursor = self.db.execute(
            "UPDATE jobs SET state = ?, result = ?, lease_until = NULL, updated = ?"
            " WHERE id = ? AND node = ? AND attempts = ? AND state IN (?, ?)",
            (FAILED if failed else DONE, json.dumps(result), now, job_id, node, attempt, DISPATCHED, RUNNING))
        return cursor.rowcount == 1

    def requeue_from(self, node: str, keep: Collection[str] = ()) -> list[Job]:
        """A node died: its dispatched and running jobs go back to the queue (or fail past max_attempts).

        Jobs in `keep` (whose result arrived and waits to be written) stay where they are.
        """
        rows = self.db.execute(f"{self._SELECT} WHERE node = ? AND state IN (?, ?)",
                               (node, DISPATCHED, RUNNING)).fetchall()
        return [self._requeue(job, f"node {node} stopped answering") for job in map(self._job, rows)
                if job.id not in keep]

    def expire_leases(self, keep: Collection[str] = ()) -> list[Job]:
        """Jobs whose worker said nothing within the lease: re-queued (or failed); those in `keep` stay."""
        rows = self.db.execute(f"{self._SELECT} WHERE state IN (?, ?) AND lease_until < ?",
                               (DISPATCHED, RUNNING, self.clock())).fetchall()
        return [self._requeue(job, "no result within the lease") for job in map(self._job, rows)
                if job.id not in keep]

    def expire_queued(self) -> list[Job]:
        """Jobs that waited in the queue past the deadline end as `expired`."""
        cutoff = self.clock() - self.limits.queue_deadline
        rows = self.db.execute(f"{self._SELECT} WHERE state = ? AND submitted < ?", (QUEUED, cutoff)).fetchall()
        expired = []
        for row in rows:
            job = self._job(row)
            result = {"id": job.id, "status": "expired",
                      "error": {"message": f"waited more than {self.limits.queue_deadline:g} s in the queue"}}
            self.db.execute("UPDATE jobs SET state = ?, result = ?, updated = ? WHERE id = ? AND state = ?",
                            (EXPIRED, json.dumps(result), self.clock(), job.id, QUEUED))
            self.waiting.remove(job.id)
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
        """Take the job from its node (kept in `previous_node`; `attempts` says which attempt lost it)."""
        now = self.clock()
        job.previous_node = job.node
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
            self.waiting.add(job.id, job.origin, job.user, job.submitted)
        return job

    # ------------------------------------------------------------ reading

    def record_lost(self, job_id: str, message: str) -> Job:
        """A job known only by its id (read back from a damaged file): failed, so that its owner is answered."""
        now = self.clock()
        result = {"id": job_id, "status": "failed", "output": [], "error": {"message": message}}
        self.db.execute("INSERT OR IGNORE INTO jobs (id, user, source, state, submitted, updated, result)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)", (job_id, "unknown", "", FAILED, now, now, json.dumps(result)))
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        row = self.db.execute(f"{self._SELECT} WHERE id = ?", (job_id,)).fetchone()
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
        rows = self.db.execute(f"{self._SELECT} WHERE user = ? ORDER BY submitted DESC LIMIT ?", (user, limit))
        return [self._job(row) for row in rows]

    def jobs(self, states: Iterable[str]) -> list[Job]:
        states = list(states)
        marks = ",".join("?" * len(states))
        rows = self.db.execute(f"{self._SELECT} WHERE state IN ({marks}) ORDER BY submitted", states)
        return [self._job(row) for row in rows]

    _COLUMNS = ("id", "user", "source", "state", "submitted", "updated", "attempts", "node", "lease_until",
                "result", "reply_topic", "correlation", "post_id", "origin")
    _SELECT = f"SELECT {', '.join(_COLUMNS)} FROM jobs"

    def _job(self, row: tuple) -> Job:
        values = dict(zip(self._COLUMNS, row))
        values["result"] = json.loads(values["result"]) if values["result"] else None
        return Job(**values)
