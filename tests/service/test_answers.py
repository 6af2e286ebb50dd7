"""Every submission is answered, and a client can always recover its answer (issue 10, item 6).

Silent drops were: a re-submitted id (no answer over MQTT), a submission the
disk refused (no answer), one the broker accepted and then lost when it was
killed before saving its state (no answer, ever).  The client's recovery is to
submit again with the same id until an answer comes (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path

from tests.support.mosquitto import Mosquitto, wait_for_port
from tests.support.observer import Observer
from tests.support.warble_cluster import InProcessCluster, on, props, submit, wait_until

ROOT = Path(__file__).resolve().parents[2]


def answers(observer, job_id):
    return [json.loads(m.payload) for m in on(observer, f"picluster/warble/results/{job_id}")]


def state(service, job_id):
    """The job's state in the server's queue, or None before its submission reached the server."""
    job = service.get(job_id)
    return job and job["state"]


def test_a_resubmitted_id_is_answered_with_the_jobs_state_and_floods_are_bounded(broker, observer, tmp_path):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1, repeat_answer_interval=60) as cluster:
            service = cluster.service
            slow = {"id": "slow", "user": "ada", "source": "SLEEP(1.5);PRINT(1)"}
            await submit(observer, slow)
            await wait_until(lambda: state(service, "slow") == "running", what="slow running")
            seen = len(answers(observer, "slow"))                 # the acknowledgement
            # A client that missed it sends the same id again, with a reply topic of its own this time.
            await submit(observer, slow, props("picluster/replies/ada", b"again"))
            await wait_until(lambda: len(answers(observer, "slow")) > seen, what="the state, again")
            # A flood of re-submissions of the same id: no more answers (one per id per interval).
            for _ in range(50):
                await submit(observer, slow)
            await wait_until(lambda: state(service, "slow") == "done", what="slow done")
            # A job that finished: re-submitting its id gives its result (the queue is not asked to run it again).
            await submit(observer, {"id": "quick", "user": "ada", "source": "PRINT(6*7)"})
            await wait_until(lambda: state(service, "quick") == "done", what="quick done")
            await wait_until(lambda: len(answers(observer, "quick")) == 2, what="quick's ack and result")
            await submit(observer, {"id": "quick", "user": "ada", "source": "PRINT(6*7)"})
            await wait_until(lambda: len(answers(observer, "quick")) == 3, what="quick's result, again")
            await asyncio.sleep(0.3)  # time for answers that should not come
            return service.history("ada"), service.stats

    history, stats = asyncio.run(scenario())
    slow, quick = answers(observer, "slow"), answers(observer, "quick")
    # queued; running (the worker started it); running (the answer to the re-submission); the result
    assert [a["status"] for a in slow] == ["queued", "running", "running", "ok"]
    assert slow[1]["node"] == slow[2]["node"] == "worker-1"
    assert [m.properties.CorrelationData for m in on(observer, "picluster/replies/ada")] == [b"again"]
    # A job that ends within RUNNING_NOTICE_AFTER is not announced as running: queued, then its result.
    assert [a["status"] for a in quick] == ["queued", "ok", "ok"] and quick[2]["output"] == ["42"]
    assert len(history) == 2                       # each id queued once
    assert stats["repeat_answers"] == 2 and stats["repeat_answers_held"] == 50


def test_refusals_are_answered_with_their_reason_and_the_service_keeps_running(broker, observer, tmp_path):
    """A full disk (the queue file at SQLite's max_page_count: "database or disk is full"), a full queue."""
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=0, max_queued=40) as cluster:
            service = cluster.service
            db = service.queue.db
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            db.execute(f"PRAGMA max_page_count = {pages}")   # the file may not grow: as with a full disk
            sent = []
            for i in range(39):  # each job a few hundred bytes: a page or two fill up
                job_id = f"disk-{i}"
                sent.append(job_id)
                await submit(observer, {"id": job_id, "user": f"u{i}", "source": f'PRINT("{"x" * 250}")'})
                await wait_until(lambda: answers(observer, job_id), what=f"an answer for {job_id}")
                if answers(observer, job_id)[0]["status"] == "rejected":
                    break
            db.execute("PRAGMA max_page_count = 1073741823")   # room again
            after = service.submit("ada", "PRINT(1)", job_id="after-disk")
            full = []
            for i in range(45):
                full.append(service.submit(f"v{i}", "PRINT(1)", job_id=f"full-{i}"))
            await wait_until(lambda: answers(observer, "full-44"), what="the last answer")
            return sent, after, full

    sent, after, full = asyncio.run(scenario())
    refused = answers(observer, sent[-1])
    assert len(sent) < 39 and refused[0]["status"] == "rejected"   # the disk filled up and it was said
    assert refused[0]["error"]["reason"] == "storage"
    assert refused[0]["error"]["message"] == "the server's disk is full: the job was not queued; try again later"
    assert all(answers(observer, job_id)[0]["status"] == "queued" for job_id in sent[:-1])
    assert after["status"] == "queued"                           # and the service went on
    statuses = [a["status"] for a in full]
    waiting = len(sent) - 1 + 1
    assert statuses == ["queued"] * (40 - waiting) + ["rejected"] * (45 - (40 - waiting))
    assert full[-1]["error"]["reason"] == "queue_full"
    assert re.fullmatch(r"queue full: 40 jobs are waiting \(at most 40\); try again later",
                        full[-1]["error"]["message"])
    assert answers(observer, "full-44")[0] == full[-1]


def test_a_submission_the_broker_lost_is_recovered_by_submitting_the_same_id_again(tmp_path):
    """The broker acknowledges a submission for the (disconnected) server, then is killed before it saves."""
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.config_file.write_text(broker.config_file.read_text().replace("autosave_interval 1",
                                                                         "autosave_interval 3600"))
    broker.start()
    client = Observer(broker.port, topics=["picluster/warble/results/+"])

    async def scenario():
        # A job message the broker loses too (sent before the worker subscribed again) waits for its lease: short here.
        async with InProcessCluster(broker.url, tmp_path, workers=1, job_time_limit=2, lease_margin=1) as cluster:
            await cluster.server.shutdown()          # its session (and the queue of messages for it) stays
            request = json.dumps({"id": "lost", "user": "ada", "source": "PRINT(6*7)"})
            await asyncio.to_thread(client.publish, "picluster/warble/submit", request)   # PUBACK: accepted
            broker.process.send_signal(signal.SIGKILL)
            broker.process.wait()
            wait_for_port(broker.port, up=False)
            broker.start()
            server = cluster.server = cluster.new_server()
            await server.start()
            # The client's pattern: the same id again, until the job's answer comes.
            for _ in range(60):
                if answers(client, "lost"):
                    break
                try:
                    await asyncio.to_thread(client.publish, "picluster/warble/submit", request)
                except RuntimeError:  # not connected (yet) to the restarted broker: next time
                    pass
                await asyncio.sleep(1)
            await wait_until(lambda: any(a["status"] == "ok" for a in answers(client, "lost")), what="the result")
            return server.plugin("warble_server").history("ada")

    try:
        history = asyncio.run(scenario())
    finally:
        client.close()
        broker.stop()
    assert [job["id"] for job in history] == ["lost"]
    assert [a["status"] for a in answers(client, "lost")][-1] == "ok"
    assert answers(client, "lost")[-1]["output"] == ["42"]


def test_the_shipped_broker_saves_its_state_every_few_seconds():
    """docs/broker.md: a broker killed outright loses at most the last few seconds of messages."""
    settings = dict(line.split(None, 1) for line in (ROOT / "config" / "mosquitto.conf").read_text().splitlines()
                    if line.strip() and not line.startswith("#"))
    assert settings["persistence"] == "true"
    assert int(settings["autosave_interval"]) <= 5


def test_a_result_the_full_disk_cannot_take_waits_and_the_job_does_not_run_again(broker, observer, tmp_path):
    """Before: the result was dropped; the lease ran out and the job ran again (its SAVE applied twice)."""
    import sqlite3

    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1, job_time_limit=1, lease_margin=0.1) as cluster:
            service = cluster.service
            complete, refusals = service.queue.complete, []

            def disk_full(*args, **kwargs):  # the queue file's disk, full while the result arrives
                refusals.append(args[0])
                raise sqlite3.OperationalError("database or disk is full")

            service.queue.complete = disk_full
            await submit(observer, {"id": "count", "user": "ada", "source": 'x=LOAD("n");SAVE("n",x+1);PRINT(x+1)'})
            await wait_until(lambda: len(refusals) >= 4, 30, what="the result refused a few times")
            await asyncio.sleep(2.5)  # well past the job's lease (about 1.6 s)
            unwritten_meanwhile = dict(service._unwritten)
            service.queue.complete = complete   # room again
            await wait_until(lambda: state(service, "count") == "done", 30, what="the result written")
            await asyncio.sleep(0.5)
            return service.get("count"), unwritten_meanwhile, service.store.get("ada", "n")

    job, unwritten, counter = asyncio.run(scenario())
    assert list(unwritten) == ["count"]
    assert job["attempts"] == 1 and job["result"]["output"] == ["1"] and counter == 1
    assert [a["status"] for a in answers(observer, "count")] == ["queued", "running", "ok"]


def test_a_broker_restart_does_not_send_running_jobs_elsewhere(persistent_broker, tmp_path):
    """A broker that stops cleanly sends every client's last will first: the server heard every worker go
    `offline` and ran their jobs again elsewhere, though none had died (their SAVEs applied twice)."""
    async def scenario():
        async with InProcessCluster(persistent_broker.url, tmp_path, workers=2) as cluster:
            service = cluster.service
            service.submit("ada", 'SLEEP(4);x=LOAD("n");SAVE("n",x+1);PRINT(x+1)', job_id="long")
            await wait_until(lambda: state(service, "long") == "running", 30, what="the job running")
            await asyncio.to_thread(persistent_broker.restart)
            await wait_until(lambda: state(service, "long") == "done", 60, what="the job done")
            return service.get("long"), service.store.get("ada", "n"), service.stats["requeued"]

    job, counter, requeued = asyncio.run(scenario())
    assert (job["attempts"], requeued, counter) == (1, 0, 1)
    assert job["result"]["output"] == ["1"]
