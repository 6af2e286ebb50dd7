"""The server's persistent job queue: durability, fairness, retries, idempotent results, expiry, limits, attempts."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from pidaemon_plugins.warble.jobqueue import (
    DONE,
    EXPIRED,
    FAILED,
    QUEUED,
    SCHEMA,
    JobQueue,
    QueueLimits,
    QueueRefused,
    StorageFailed,
)


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def queue(tmp_path, clock=None, **limits):
    defaults = dict(per_user_rate=1e9, per_user_burst=10**9, per_user_queued=10**9)
    return JobQueue(tmp_path / "jobs.sqlite", QueueLimits(**{**defaults, **limits}), clock=clock or FakeClock())


def dispatch_all(q: JobQueue, node="w1", lease=30.0):
    order = []
    while (job := q.next_job()) is not None:
        job.attempts = q.mark_dispatched(job.id, node, lease)
        order.append(job)
    return order


def test_acknowledged_jobs_survive_a_killed_process(tmp_path):
    """A child submits jobs and prints each id after submit() returns; it is then SIGKILLed."""
    script = (
        "import sys, time\n"
        "from pidaemon_plugins.warble.jobqueue import JobQueue, QueueLimits\n"
        f"q = JobQueue({str(tmp_path / 'jobs.sqlite')!r}, QueueLimits(per_user_rate=1e9, per_user_burst=10**9, per_user_queued=10**9))\n"
        "for i in range(10**6):\n"
        "    job, _ = q.submit('ada', f'PRINT({i})')\n"
        "    print(job.id, flush=True)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acknowledged = [child.stdout.readline().strip() for _ in range(300)]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    reopened = queue(tmp_path)
    assert all(reopened.get(job_id) is not None and reopened.get(job_id).state == QUEUED for job_id in acknowledged)


def test_a_flood_does_not_starve_another_user(tmp_path):
    q = queue(tmp_path)
    clock = q.clock
    for i in range(1000):
        q.submit("flooder", f"PRINT({i})")
        clock.now += 0.001
    lone, _ = q.submit("alice", "PRINT(1)")
    served = []
    for _ in range(5):
        job = q.next_job()
        q.mark_dispatched(job.id, "w1", 30)
        clock.now += 0.01
        served.append(job.user)
    assert "alice" in served[:2]


def test_users_are_served_in_turn(tmp_path):
    q = queue(tmp_path)
    for user in ("a", "b", "c"):
        for i in range(3):
            q.submit(user, f"PRINT({i})")
            q.clock.now += 1
    order = []
    while (job := q.next_job()) is not None:
        q.mark_dispatched(job.id, "w1", 30)
        q.clock.now += 1
        order.append(job.user)
    assert order == ["a", "b", "c"] * 3


def test_dead_worker_jobs_are_requeued_then_fail_after_max_attempts(tmp_path):
    q = queue(tmp_path, max_attempts=2)
    job, _ = q.submit("ada", "PRINT(1)")
    q.mark_dispatched(job.id, "w1", 30)
    (requeued,) = q.requeue_from("w1")
    assert requeued.state == QUEUED and q.get(job.id).attempts == 1
    q.mark_dispatched(job.id, "w2", 30)
    (failed,) = q.requeue_from("w2")
    assert failed.state == FAILED
    assert q.get(job.id).result["error"]["message"] == "node w2 stopped answering; gave up after 2 attempts"


def test_silent_worker_lease_expires(tmp_path):
    q = queue(tmp_path)
    job, _ = q.submit("ada", "PRINT(1)")
    q.mark_dispatched(job.id, "w1", lease=10)
    q.clock.now += 5
    assert q.expire_leases() == []
    q.clock.now += 6
    (expired,) = q.expire_leases()
    assert expired.id == job.id and q.get(job.id).state == QUEUED


def test_a_result_is_stored_once(tmp_path):
    q = queue(tmp_path)
    job, _ = q.submit("ada", "PRINT(1)")
    q.mark_dispatched(job.id, "w1", 30)
    assert q.complete(job.id, {"status": "ok", "output": ["1"]}, node="w1", attempt=1) is True
    assert q.complete(job.id, {"status": "ok", "output": ["other"]}, node="w1", attempt=1) is False
    stored = q.get(job.id)
    assert stored.state == DONE and stored.result["output"] == ["1"]


def test_only_the_node_holding_a_job_can_complete_it(tmp_path):
    q = queue(tmp_path)
    queued, _ = q.submit("alice", "PRINT(1)")
    assert q.complete(queued.id, {"status": "ok", "output": ["3.14159"]}, node="w1",
                      attempt=1) is False  # not dispatched
    assert q.mark_dispatched(queued.id, "w1", 30) == 1
    assert q.complete(queued.id, {"status": "ok", "output": ["forged"]}, node="intruder", attempt=1) is False
    (requeued,) = q.requeue_from("w1")
    assert requeued.previous_node == "w1" and requeued.attempts == 1
    assert q.mark_dispatched(queued.id, "w2", 30) == 2
    assert q.complete(queued.id, {"status": "ok", "output": ["late"]}, node="w1",
                      attempt=1) is False  # after the re-queue
    assert q.complete(queued.id, {"status": "ok", "output": ["1"]}, node="w2", attempt=2) is True
    assert q.get(queued.id).result["output"] == ["1"]
    assert q.holds(queued.id, 2, "w2") is None  # finished: nobody holds it


def test_queued_jobs_expire_after_the_deadline(tmp_path):
    q = queue(tmp_path, queue_deadline=60)
    job, _ = q.submit("ada", "PRINT(1)")
    q.clock.now += 61
    (expired,) = q.expire_queued()
    assert expired.id == job.id and q.get(job.id).state == EXPIRED
    assert q.get(job.id).result["status"] == "expired"


def test_duplicate_ids_and_post_ids_are_taken_once(tmp_path):
    q = queue(tmp_path)
    first, created = q.submit("ada", "PRINT(1)", job_id="job-1")
    again, created_again = q.submit("ada", "PRINT(2)", job_id="job-1")
    assert created and not created_again and again.source == "PRINT(1)"
    post, _ = q.submit("bob", "PRINT(3)", post_id="mastodon:123")
    repost, created_repost = q.submit("bob", "PRINT(3)", post_id="mastodon:123")
    assert repost.id == post.id and not created_repost
    assert q.counts() == {QUEUED: 2}


def test_rate_limit_and_queue_share_refuse_with_a_reason(tmp_path):
    clock = FakeClock()
    q = JobQueue(tmp_path / "q.sqlite", QueueLimits(per_user_rate=1, per_user_burst=3, per_user_queued=5), clock=clock)
    for _ in range(3):
        q.submit("ada", "PRINT(1)")
    with pytest.raises(QueueRefused, match="rate limit: at most 1 submissions per second per user"):
        q.submit("ada", "PRINT(1)")
    q.submit("bob", "PRINT(1)")  # other users are not affected
    clock.now += 10
    q.submit("ada", "PRINT(1)")
    q.submit("ada", "PRINT(1)")
    with pytest.raises(QueueRefused, match="queue share: user 'ada' already has 5 jobs waiting"):
        q.submit("ada", "PRINT(1)")


def test_in_flight_counts_per_node(tmp_path):
    q = queue(tmp_path)
    for i in range(3):
        q.submit(f"u{i}", "PRINT(1)")
    jobs = dispatch_all(q, node="w1")
    q.complete(jobs[0].id, {"status": "ok"}, node="w1", attempt=1)
    assert q.in_flight() == {"w1": 2}
    assert q.in_flight("w2") == {"w2": 0}


def test_per_user_bookkeeping_is_bounded(tmp_path):
    clock = FakeClock()
    q = JobQueue(tmp_path / "q.sqlite", QueueLimits(per_user_rate=1, per_user_burst=2), clock=clock)
    q.user_rates.max_tracked = 50
    for i in range(200):
        q.submit(f"name-{i}", "PRINT(1)")  # a user dodging the rate limit with new names
        clock.now += 10  # each bucket refills in 2 s
    assert len(q.user_rates.buckets) <= 51


def test_finished_jobs_are_forgotten_after_their_retention(tmp_path):
    q = queue(tmp_path)
    done, _ = q.submit("ada", "PRINT(1)")
    q.mark_dispatched(done.id, "w1", 30)
    q.complete(done.id, {"status": "ok"}, node="w1", attempt=1)
    waiting, _ = q.submit("ada", "PRINT(2)")
    q.clock.now += 100
    assert q.forget_finished(older_than=200) == 0
    q.clock.now += 150
    assert q.forget_finished(older_than=200) == 1
    assert q.get(done.id) is None and q.get(waiting.id).state == QUEUED


def test_records_of_rejected_submissions_are_bounded_newest_kept(tmp_path):
    """User names are not authenticated: a flood of bad submissions under many names must not fill the disk."""
    q = queue(tmp_path, max_rejected_kept=10)
    waiting, _ = q.submit("ada", "PRINT(1)")
    for i in range(25):
        q.clock.now += 1
        q.record_rejected(f"user{i}", "x=(", {"status": "rejected"}, job_id=f"bad-{i}")
    kept = [job.id for job in q.jobs(["rejected"])]
    assert 9 <= len(kept) <= 10
    assert "bad-24" in kept and "bad-0" not in kept and q.get(waiting.id).state == QUEUED
    q.close()
    reopened = queue(tmp_path, max_rejected_kept=10)   # the count is taken from the file on start
    for i in range(25, 30):
        reopened.record_rejected("eve", "x=(", {"status": "rejected"}, job_id=f"bad-{i}")
    assert len(reopened.jobs(["rejected"])) <= 10


# ---------------------------------------------------------------- issue 10: hardening


def test_a_client_rotating_user_names_is_one_party(tmp_path):
    """Turns go to parties (an origin when known, else a user): new names from one client do not jump the queue."""
    q = queue(tmp_path)
    for i in range(50):
        q.submit(f"name{i:02d}", "PRINT(1)", origin="mqtt:rotator")
        q.clock.now += 0.001
    first = q.next_job()
    q.mark_dispatched(first.id, "w1", 30)
    zoe, _ = q.submit("zoe", "PRINT(1)", origin="mqtt:newcomer")
    bob, _ = q.submit("bob", "PRINT(1)")   # no origin: a party of his own
    served = [job.user for job in dispatch_all(q)][:3]
    assert served[:2] in (["zoe", "bob"], ["bob", "zoe"]) and served[2].startswith("name")


def test_running_caps_per_user_and_per_origin(tmp_path):
    q = queue(tmp_path)
    for i in range(4):
        q.submit("mallory", f"PRINT({i})")
        q.submit(f"m{i}", f"PRINT({i})", origin="http:10.0.0.9")
    q.submit("alice", "PRINT(1)")
    handed = []
    while (job := q.next_job(max_active_per_user=2, max_active_per_origin=2)) is not None:
        q.mark_dispatched(job.id, "w1", 30)
        handed.append((job.user, job.origin))
    assert sorted(handed) == sorted([("mallory", None)] * 2 + [("m0", "http:10.0.0.9"), ("m1", "http:10.0.0.9"),
                                     ("alice", None)])
    done = next(job for job in q.jobs(["dispatched"]) if job.user == "mallory")
    assert q.complete(done.id, {"status": "ok"}, node="w1", attempt=1)
    assert q.next_job(max_active_per_user=2, max_active_per_origin=2).user == "mallory"   # a slot of its own again


def test_the_queue_and_each_origin_have_a_limit_with_a_reason(tmp_path):
    q = queue(tmp_path, max_queued=5, per_origin_queued=3, per_origin_rate=1, per_origin_burst=100)
    for i in range(3):
        q.submit(f"n{i}", "PRINT(1)", origin="mqtt:rotator")
    with pytest.raises(QueueRefused, match=r"queue share: this client already has 3 jobs waiting \(at most 3, "
                                           r"whatever the user names\)") as refused:
        q.submit("n3", "PRINT(1)", origin="mqtt:rotator")
    assert refused.value.reason == "origin_share"
    q.submit("ada", "PRINT(1)")
    q.submit("bob", "PRINT(1)", origin="mqtt:other")
    with pytest.raises(QueueRefused, match=r"queue full: 5 jobs are waiting \(at most 5\); try again later") as full:
        q.submit("carol", "PRINT(1)")
    assert full.value.reason == "queue_full"
    limited = queue(tmp_path / "rate", per_origin_rate=1, per_origin_burst=2)
    limited.submit("a", "PRINT(1)", origin="mqtt:fast")
    limited.submit("b", "PRINT(1)", origin="mqtt:fast")
    with pytest.raises(QueueRefused, match="at most 1 submissions per second from one client") as fast:
        limited.submit("c", "PRINT(1)", origin="mqtt:fast")
    assert fast.value.reason == "origin_rate"


class RefusingConnection:
    """The queue's connection, but an INSERT fails as on a full disk (ENOSPC) or with an I/O error."""

    def __init__(self, db, error):
        self.db, self.error = db, error

    def execute(self, sql, *args):
        if sql.lstrip().startswith("INSERT"):
            raise self.error
        return self.db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)


def test_a_write_the_disk_refuses_is_a_refusal_with_its_reason(tmp_path):
    q = queue(tmp_path)
    waiting, _ = q.submit("ada", "PRINT(1)")
    (pages,) = q.db.execute("PRAGMA page_count").fetchone()
    q.db.execute(f"PRAGMA max_page_count = {pages}")     # SQLite: "database or disk is full"
    with pytest.raises(StorageFailed) as full:
        for i in range(200):
            q.submit(f"u{i}", f'PRINT("{"x" * 250}")')
    assert full.value.reason == "storage"
    assert str(full.value) == "the server's disk is full: the job was not queued; try again later"
    q.db.execute("PRAGMA max_page_count = 1073741823")
    real = q.db
    q.db = RefusingConnection(real, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(StorageFailed, match="the server's disk is full"):
        q.submit("bob", "PRINT(1)")
    q.db = RefusingConnection(real, sqlite3.OperationalError("disk I/O error"))
    with pytest.raises(StorageFailed, match=r"the server could not store the job \(OperationalError\)"):
        q.submit("bob", "PRINT(1)")
    q.db = real
    assert q.submit("bob", "PRINT(1)")[1] is True and q.get(waiting.id).state == QUEUED


def test_only_the_attempt_holding_a_job_may_report_on_it(tmp_path):
    q = queue(tmp_path)
    job, _ = q.submit("ada", "PRINT(1)")
    assert q.mark_dispatched(job.id, "w1", 30) == 1
    assert q.holds(job.id, 1, "w1").id == job.id
    assert q.holds(job.id, 1, "w2") is None and q.holds(job.id, 2, "w1") is None and q.holds(job.id, "1", "w1") is None
    (requeued,) = q.requeue_from("w1")
    assert q.mark_dispatched(job.id, "w1", 30) == 2           # the same worker again, a new attempt
    assert q.mark_running(job.id, "w1", 30, attempt=1) is False
    assert q.holds(job.id, 1, "w1") is None
    assert q.complete(job.id, {"status": "ok", "output": ["stale"]}, node="w1", attempt=1) is False
    assert q.mark_running(job.id, "w1", 30, attempt=2) is True
    assert q.complete(job.id, {"status": "ok", "output": ["1"]}, node="w1", attempt=2) is True
    # A dispatch whose job message could not be sent does not count as an attempt.
    other, _ = q.submit("bob", "PRINT(2)")
    attempt = q.mark_dispatched(other.id, "w1", 30)
    q.release(other.id, attempt)
    assert q.get(other.id).state == QUEUED and q.get(other.id).attempts == 0


def test_a_queue_file_from_before_origins_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.replace(",\n    origin TEXT", ""))
    db.execute("INSERT INTO jobs (id, user, source, state, submitted, updated) VALUES ('old', 'ada', 'PRINT(1)',"
               " 'queued', 1, 1)")
    db.commit()
    db.close()
    q = JobQueue(path, clock=FakeClock())
    assert q.get("old").origin is None and q.next_job().id == "old"
    assert q.submit("bob", "PRINT(2)", origin="mqtt:x")[0].origin == "mqtt:x"
