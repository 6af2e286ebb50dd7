"""The server's persistent job queue: durability, fairness, retries, idempotent results, expiry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from pidaemon_plugins.warble.jobqueue import DONE, EXPIRED, FAILED, QUEUED, JobQueue, QueueLimits, QueueRefused


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
        q.mark_dispatched(job.id, node, lease)
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
    assert q.complete(job.id, {"status": "ok", "output": ["1"]}, node="w1") is True
    assert q.complete(job.id, {"status": "ok", "output": ["other"]}, node="w1") is False
    stored = q.get(job.id)
    assert stored.state == DONE and stored.result["output"] == ["1"]


def test_only_the_node_holding_a_job_can_complete_it(tmp_path):
    q = queue(tmp_path)
    queued, _ = q.submit("alice", "PRINT(1)")
    assert q.complete(queued.id, {"status": "ok", "output": ["3.14159"]}, node="w1") is False  # not dispatched
    q.mark_dispatched(queued.id, "w1", 30)
    assert q.complete(queued.id, {"status": "ok", "output": ["forged"]}, node="intruder") is False
    (requeued,) = q.requeue_from("w1")
    q.mark_dispatched(queued.id, "w2", 30)
    assert q.complete(queued.id, {"status": "ok", "output": ["late"]}, node="w1") is False  # after the re-queue
    assert q.complete(queued.id, {"status": "ok", "output": ["1"]}, node="w2") is True
    assert q.get(queued.id).result["output"] == ["1"]
    assert q.running_for("w2", "alice") is False


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
    q.complete(jobs[0].id, {"status": "ok"}, node="w1")
    assert q.in_flight() == {"w1": 2}
    assert q.in_flight("w2") == {"w2": 0}


def test_per_user_bookkeeping_is_bounded(tmp_path):
    clock = FakeClock()
    q = JobQueue(tmp_path / "q.sqlite", QueueLimits(per_user_rate=1, per_user_burst=2), clock=clock)
    q.MAX_TRACKED_USERS = 50
    for i in range(200):
        q.submit(f"name-{i}", "PRINT(1)")  # a user dodging the rate limit with new names
        clock.now += 10  # each bucket refills in 2 s
    assert len(q._buckets) <= 51


def test_finished_jobs_are_forgotten_after_their_retention(tmp_path):
    q = queue(tmp_path)
    done, _ = q.submit("ada", "PRINT(1)")
    q.mark_dispatched(done.id, "w1", 30)
    q.complete(done.id, {"status": "ok"}, node="w1")
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
