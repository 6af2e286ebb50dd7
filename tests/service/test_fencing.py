"""A job that runs twice must not act twice (issue 10, item 11).

A worker that stops answering loses its jobs to other workers; when it comes
back, the runs it still has are stale attempts.  Their SAVEs and LOADs are
refused by the server (each carries its job and attempt), their results are
ignored, and their effects (LIGHTS, PLAYSOUND) are refused on the worker once
it knows, or may have lost, the job.  The same with real processes and
SIGSTOP: tests/service/processes/test_stopped_worker.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.support.warble_cluster import InProcessCluster, wait_until

COUNTER = 'SLEEP(6);LIGHTS(0,0,0,255);x=LOAD("n");x++;SAVE("n",x);PRINT(x)'


def lights_of(observer, job_id):
    return [json.loads(m.payload) for m in observer.messages
            if m.topic == "picluster/lights/set" and json.loads(m.payload).get("job") == job_id]


@pytest.mark.parametrize("revoke", ["told", "not told"])
def test_a_run_that_lost_its_job_cannot_save_load_or_act(broker, observer, tmp_path, revoke):
    """worker-1's answers to pings stop reaching the server: its job goes to worker-2, then worker-1 is back.

    "not told": the server's revocation does not reach worker-1 either; the
    server still refuses the stale run's LOAD and SAVE, and its result.
    """
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=2, slots=2, slots_per_worker=2,
                                    max_running_per_user=4, requeue_after=0.5,
                                    worker_options={"limits": {"time_limit": 20}}) as cluster:
            service, worker_1 = cluster.service, cluster.workers[0]
            registry = cluster.server.plugin("registry")
            stale = worker_1.plugin("warble_worker")
            if revoke == "not told":
                stale._on_revoke = lambda message: None
            service.submit("ada", COUNTER, job_id="count")
            await wait_until(lambda: service.get("count")["state"] == "running", what="the job running")
            assert service.get("count")["node"] == "worker-1"
            publish = worker_1.publish
            worker_1.publish = lambda topic, *a, **kw: False if topic.endswith("/reply/ping") else publish(topic, *a,
                                                                                                           **kw)
            await wait_until(lambda: service.get("count")["node"] == "worker-2", 30, what="the job on worker-2")
            worker_1.publish = publish
            await wait_until(lambda: "worker-1" in registry.healthy_nodes("warble"), 30, what="worker-1 back")
            # Another job of the same user on worker-1, so that "a job of ada runs there" is true again.
            service.submit("ada", "SLEEP(10)", job_id="other")
            await wait_until(lambda: service.get("other")["node"] == "worker-1", 30, what="the other job on worker-1")
            # What the stale run would send, sent now: a SAVE for the job's first attempt, from worker-1.
            await asyncio.to_thread(observer.publish, "picluster/nodes/worker-1/reply/warble_store", json.dumps({
                "op": "save", "user": "ada", "name": "n", "value": ["int", "41"], "job": "count", "attempt": 1,
                "correlation": "stale-save"}))
            await wait_until(lambda: service.get("count")["state"] == "done", 60, what="the job done")
            await wait_until(lambda: "count" not in stale.running, 30, what="the stale run ended")
            await asyncio.sleep(0.5)  # anything the stale run still sent arrives
            return service.get("count"), service.store.get("ada", "n"), stale.stats, service.stats

    job, counter, stale, stats = asyncio.run(scenario())
    assert job["attempts"] == 2 and job["node"] == "worker-2" and job["result"]["output"] == ["1"]
    assert counter == 1                                   # counted once
    refusal = next(json.loads(m.payload) for m in observer.messages
                   if m.topic == "picluster/nodes/worker-1/cmd/warble_store" and b"stale-save" in m.payload)
    assert refusal["stale"] is True and "attempt 1) no longer holds the job" in refusal["error"]
    lights = [(light["index"], light["attempt"], light["node"]) for light in lights_of(observer, "count")]
    if revoke == "told":
        assert lights == [(0, 2, "worker-2")]
        assert stale["revoked"] == 1 and stale["effects_refused"] == 1
    else:
        # Its LOAD was refused (the program ended there, and the run learnt it had lost the job: it
        # reported no result).  Its LIGHTS went out: the worker could not know (docs/protocol.md,
        # "What is fenced").
        assert (0, 2, "worker-2") in lights
        assert stats["store_refused"] >= 2 and stale["revoked"] == 1 and stats["duplicate_results"] == 0


def test_effects_stop_when_the_worker_did_not_run_for_a_while(broker, observer, tmp_path):
    """A daemon frozen for longer than stall_limit (as SIGSTOP does): its runs' effects are refused."""
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1,
                                    worker_options={"stall_limit": 0.5}) as cluster:
            service = cluster.service
            job = service.submit("ada", 'SLEEP(1.5);LIGHTS(3,1,2,3);PRINT("after")')
            await wait_until(lambda: service.get(job["id"])["state"] == "running", what="the job running")
            time.sleep(1.0)  # the whole event loop stands still (the server's too: it re-queues nothing)
            await wait_until(lambda: service.get(job["id"])["state"] == "done", 30, what="the job done")
            after = service.submit("ada", "LIGHTS(4,1,2,3)")   # a run that starts after the stall acts again
            await wait_until(lambda: service.get(after["id"])["state"] == "done", 30, what="the next job done")
            await asyncio.sleep(0.3)
            return service.get(job["id"])["result"], job["id"], service.get(after["id"])["result"], after["id"]

    result, job_id, after, after_id = asyncio.run(scenario())
    assert result["status"] == "error" and result["output"] == []
    assert "lights set refused: this worker did not run for" in result["error"]["message"]
    assert lights_of(observer, job_id) == []
    assert after["status"] == "ok" and [l["index"] for l in lights_of(observer, after_id)] == [4]


def test_a_worker_that_dies_after_a_save_leaves_no_trace_of_it(broker, tmp_path):
    """Before: a run's SAVE applied at once, so a job whose worker died after its SAVE and before its result
    ran again and counted twice.  Now a run's SAVEs are applied with its result (job_values.py)."""
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=2, requeue_after=0.5) as cluster:
            service = cluster.service
            service.submit("ada", 'x=LOAD("n");SAVE("n",x+1);SLEEP(3);PRINT(x+1)', job_id="count")
            await wait_until(lambda: service.get("count")["state"] == "running", what="the job running")
            holder = next(w for w in cluster.workers if w.id == service.get("count")["node"])
            await wait_until(lambda: service.store.load("count", 1, "ada", "n") == 1, what="its SAVE made")
            seen_by_others = service.store.get("ada", "n")
            await holder.shutdown()  # the worker dies with the job half done
            await wait_until(lambda: service.get("count")["state"] == "done", 60, what="the job done elsewhere")
            return service.get("count"), service.store.get("ada", "n"), seen_by_others

    job, counter, seen_by_others = asyncio.run(scenario())
    assert seen_by_others is None            # a run's SAVE is its own until it ends
    assert job["attempts"] == 2 and job["result"]["output"] == ["1"]
    assert counter == 1                      # counted once
