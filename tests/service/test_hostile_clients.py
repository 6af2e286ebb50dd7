"""Hostile MQTT and HTTP clients against the Warble service (findings of a security review)."""

from __future__ import annotations

import asyncio
import json

from tests.support.warble_cluster import InProcessCluster, wait_until


def test_bad_ids_and_oversized_posts_are_rejected_and_dispatch_goes_on(broker, observer, tmp_path):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, queue_deadline=1) as cluster:
            service = cluster.service
            evil = service.submit("mallory", "PRINT(1)", job_id="evil#")
            slash = service.submit("mallory", "PRINT(1)", job_id="../x")
            huge = service.submit("mallory", "#pi{" * 20000)
            bad_user = service.submit("a/b", "PRINT(1)")
            await asyncio.sleep(1.5)  # past queue_deadline: housekeeping runs over whatever is queued
            after = service.submit("alice", "PRINT(2)")
            await wait_until(lambda: service.get(after["id"])["state"] == "done")
            return evil, slash, huge, bad_user, service.get(after["id"])

    evil, slash, huge, bad_user, after = asyncio.run(scenario())
    for answer in (evil, slash, bad_user):
        assert answer["status"] == "rejected" and answer["id"] not in ("evil#", "../x")
    assert evil["error"]["message"] == "an id is 1-64 letters, digits, '_', '-' or '.'"
    assert huge["status"] == "rejected" and "80000 characters long; at most 4096" in huge["error"]["message"]
    assert after["result"]["output"] == ["2"]


def test_store_and_result_topics_refuse_strangers(broker, observer, tmp_path, caplog):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1, worker_options={"max_store_reads": 20}) as cluster:
            service = cluster.service
            saved = service.submit("alice", 'SAVE("secret","s3cret")')
            await wait_until(lambda: service.get(saved["id"])["state"] == "done")
            # A stranger asks for alice's value, pretending to be the worker.
            await asyncio.to_thread(observer.publish, "picluster/nodes/worker-1/reply/warble_store", json.dumps({
                "op": "load", "user": "alice", "name": "secret", "correlation": "x"}))
            # (Refused: no job attempt of alice holds a job there; see docs/protocol.md on ACLs for the rest.)
            await wait_until(lambda: any("does not hold a job of user 'alice' there" in r.getMessage()
                                         for r in caplog.records), what="store request refused")
            # ... and forges a result for a job that is still waiting (no worker takes it: all are busy).
            busy = [service.submit("zed", "SLEEP(2)") for _ in range(4)]
            waiting = service.submit("alice", "PRINT(1)")
            await wait_until(lambda: service.get(busy[0]["id"])["state"] in ("dispatched", "running"))
            await asyncio.to_thread(observer.publish, "picluster/nodes/worker-1/reply/warble", json.dumps({
                "id": waiting["id"], "node": "worker-1", "state": "done",
                "result": {"status": "ok", "output": ["3.14159265358979"]}}))
            await wait_until(lambda: service.get(waiting["id"])["state"] == "done", timeout=60)
            reads = service.submit("bob", 'WHILE(1<2){x=LOAD("a")}')
            await wait_until(lambda: service.get(reads["id"])["state"] == "done", timeout=60)
            return service.get(waiting["id"]), service.leaderboard.snapshot(), service.get(reads["id"])

    waiting, board, reads = asyncio.run(scenario())
    assert not [m for m in observer.messages if m.topic == "picluster/nodes/worker-1/cmd/warble_store"
                and b"s3cret" in m.payload]
    assert any("does not hold a job of user 'alice' there" in r.getMessage() for r in caplog.records)
    assert waiting["result"]["output"] == ["1"]  # the real result, not the forged one
    assert board["pi_digits"] == []
    assert reads["result"]["status"] == "error" and "too many reads" in reads["result"]["error"]["message"]
