"""The Warble service end to end through a real mosquitto: intake, dispatch, results, storage."""

from __future__ import annotations

import asyncio
import json
import subprocess

from pidaemon import hookimpl
from tests.support.plugins import catalog_with
from tests.support.warble_cluster import InProcessCluster, wait_until


def test_mosquitto_pub_submits_and_mosquitto_sub_gets_the_result(broker, tmp_path):
    """Clients nobody in this project wrote: mosquitto_pub and mosquitto_sub."""
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path):
            sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-t", "picluster/warble/results/#",
                                    "-C", "3", "-W", "30"], stdout=subprocess.PIPE, text=True)
            await asyncio.sleep(0.5)  # let mosquitto_sub subscribe
            subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", "picluster/warble/submit",
                            "-m", "#pi{FOR(i=0;i<3;i++){PRINT(i)};SLEEP(0.5)}"], check=True)
            out, _ = await asyncio.to_thread(sub.communicate, timeout=40)
            return [json.loads(line) for line in out.splitlines()]

    ack, running, result = asyncio.run(scenario())
    assert ack["status"] == "queued" and ack["user"] == "anonymous"
    assert running["status"] == "running" and running["node"] in ("worker-1", "worker-2")
    assert result["id"] == ack["id"]
    assert result["status"] == "ok"
    assert result["output"] == ["0", "1", "2"]
    assert result["node"] in ("worker-1", "worker-2")


def test_rejected_submissions_answer_at_once(broker, observer, tmp_path):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path) as cluster:
            bad = cluster.service.submit("ada", "PRINT((1)")
            long = cluster.service.submit("ada", "PRINT(1);" * 40)
            return bad, long

    bad, long = asyncio.run(scenario())
    assert bad["status"] == "rejected" and bad["error"]["line"] == 1 and bad["error"]["column"]
    assert long["status"] == "rejected" and "280" in long["error"]["message"]
    published = json.loads(observer.wait_for(f"picluster/warble/results/{bad['id']}").payload)
    assert published["status"] == "rejected"


def test_save_on_one_worker_load_on_another_and_users_are_apart(broker, tmp_path):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=2, slots=1, slots_per_worker=1) as cluster:
            service = cluster.service
            saved = service.submit("ada", 'SAVE("pi",1)')
            await wait_until(lambda: service.get(saved["id"])["state"] == "done")
            first_node = service.get(saved["id"])["node"]
            # Keep the (idle, first by name) worker busy so that the LOAD goes to the other one.
            busy = service.submit("zed", "SLEEP(3)")
            await wait_until(lambda: service.get(busy["id"])["state"] in ("dispatched", "running"))
            loaded = service.submit("ada", 'x=LOAD("pi");x++;SAVE("pi",x);PRINT(x)')
            other = service.submit("bob", 'PRINT(LOAD("pi"))')
            await wait_until(lambda: all(service.get(j["id"])["state"] == "done" for j in (loaded, other, busy)))
            return first_node, service.get(busy["id"]), service.get(loaded["id"]), service.get(other["id"])

    first_node, busy, loaded, other = asyncio.run(scenario())
    assert loaded["result"]["output"] == ["2"]
    assert loaded["node"] != first_node  # saved on one worker, loaded on the other
    assert other["result"]["output"] == ["0"]


def test_hostile_programs_end_with_their_status_and_the_worker_keeps_serving(broker, tmp_path):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1, slots=2) as cluster:
            service = cluster.service
            endless = service.submit("mallory", "WHILE(1<2){}")
            bomb = service.submit("mallory", 's="a";WHILE(1<2){s=s+s}')
            await wait_until(lambda: all(service.get(j["id"])["state"] == "done" for j in (endless, bomb)), 60)
            after = service.submit("ada", "PRINT(6*7)")
            await wait_until(lambda: service.get(after["id"])["state"] == "done")
            return [service.get(j["id"])["result"] for j in (endless, bomb, after)]

    endless, bomb, after = asyncio.run(scenario())
    assert endless["status"] in ("step_limit", "timeout")
    assert bomb["status"] in ("error", "memory_limit") and bomb["error"]["message"]
    assert after["status"] == "ok" and after["output"] == ["42"]


class DoublingPlugin:
    """Adds DOUBLE() to the Warble of the worker it runs on, through pidaemon_warble_builtins."""

    def __init__(self, node, config):
        pass

    @hookimpl
    def pidaemon_warble_builtins(self, node):
        from tests.support.warble_builtins import DOUBLE
        return [DOUBLE]


def test_plugin_builtins_and_effects_reach_the_program_and_the_bus(broker, observer, tmp_path):
    async def scenario():
        cluster = InProcessCluster(broker.url, tmp_path, workers=1)
        worker = cluster.workers[0]
        worker.catalog = catalog_with(doubling=DoublingPlugin)
        worker.config.plugin_sections["doubling"] = {"enabled": True, "required": False}
        async with cluster:
            job = cluster.service.submit(
                "ada", 'PRINT(DOUBLE(21));FOR(i=0;i<3;i++){LIGHTS(i,255,0,i)}PLAYSOUND("bell")')
            await wait_until(lambda: cluster.service.get(job["id"])["state"] == "done")
            bad = cluster.service.submit("ada", "LIGHTS(99,0,0,0)")
            await wait_until(lambda: cluster.service.get(bad["id"])["state"] == "done")
            await wait_until(lambda: observer.count("picluster/sound/play") >= 1)
            return cluster.service.get(job["id"])["result"], cluster.service.get(bad["id"])["result"]

    result, bad = asyncio.run(scenario())
    assert result["status"] == "ok" and result["output"] == ["42"]
    lights = [json.loads(m.payload) for m in observer.messages if m.topic == "picluster/lights/set"]
    assert [(l["index"], l["r"], l["g"], l["b"]) for l in lights] == [(0, 255, 0, 0), (1, 255, 0, 1), (2, 255, 0, 2)]
    assert {l["user"] for l in lights} == {"ada"} and {l["node"] for l in lights} == {"worker-1"}
    sound = json.loads(observer.wait_for("picluster/sound/play").payload)
    assert sound["name"] == "bell" and sound["node"] == "worker-1"
    assert bad["status"] == "error" and "LIGHTS" in bad["error"]["message"] and bad["error"]["column"] == 1


def test_an_unknown_function_is_left_to_the_worker_to_judge(broker, tmp_path):
    """The server cannot know the workers' plugin built-ins: the worker gives the error, with its position."""
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1) as cluster:
            job = cluster.service.submit("ada", "x=1;NOPE(x)")
            lower = cluster.service.submit("ada", "print(1)")
            await wait_until(lambda: cluster.service.get(job["id"])["state"] == "done")
            return cluster.service.get(job["id"])["result"], lower

    result, lower = asyncio.run(scenario())
    assert result["status"] == "error" and result["error"] == {"message": "unknown function NOPE", "line": 1,
                                                               "column": 5}
    assert lower["status"] == "rejected"  # lower case is never a built-in
