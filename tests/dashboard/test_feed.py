"""Warbles on the dashboard, end to end: submitted on MQTT, run by a real worker, followed through the Warble
server's `warble:job` events; and a node's panel with its readings from a real telemetry store."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.support.observer import Observer
from tests.support.warble_cluster import InProcessCluster, submit


def feed_item(page, job_id):
    for message in reversed(page.messages):
        for item in message.get("feed", []):
            if item["id"] == job_id:
                return item
    return None


async def get_json(url):
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as answer:
            return answer.status, json.loads(await answer.text())


def test_a_warble_runs_on_the_page_then_joins_the_feed_with_its_output(broker, tmp_path, dashboard_http,
                                                                       open_page):
    observer = Observer(broker.port)
    more = {**dashboard_http.plugins(push_interval=0.1, history_interval=0.2),
            "telemetry": {"interval": 0.2}, "simulated_system": {},
            "telemetry_store": {"db": str(tmp_path / "telemetry.sqlite3"), "flush_interval": 0.1}}

    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1, more_plugins=more):
            page = await open_page(dashboard_http.url("/dashboard/live"))
            try:
                await page.wait_for(lambda m: m["type"] == "snapshot", what="the snapshot")
                await submit(observer, {"id": "job-1", "user": "ada",
                                        "source": '#pi{SLEEP(1); PRINT("hello"); PRINT(1 + 1)}'})
                # While it runs: on its worker's cell, and counted.
                running = await page.wait_for(lambda m: (m["nodes"].get("worker-1") or {}).get("warble") == "job-1",
                                              what="job-1 running on worker-1")
                assert running["totals"]["running"] == 1
                await page.wait_for(lambda m: feed_item(page, "job-1") is not None, what="job-1 in the feed")
                item = feed_item(page, "job-1")
                assert item["user"] == "ada" and item["node"] == "worker-1" and item["status"] == "ok"
                assert item["output"] == ["hello", "2"] and item["error"] is None
                assert item["source"] == 'SLEEP(1); PRINT("hello"); PRINT(1 + 1)' and item["elapsed"] > 0
                assert page.node("worker-1")["warble"] is None  # done: no longer running there
                totals = [m["totals"] for m in page.messages if "totals" in m][-1]
                assert totals["done"] == 1 and totals["running"] == 0 and totals["queue"] == 0
                assert totals["warbles_per_s"] > 0

                # A program that fails: in the feed with its error; many lines of output: 20, each cut.
                await submit(observer, {"id": "job-2", "user": "bob", "source": "PRINT(1); x = 1/0"})
                await submit(observer, {"id": "job-3", "user": "bob",
                                        "source": 'FOR(i=0;i<30;i++){PRINT("' + "y" * 250 + '")}'})
                await page.wait_for(lambda m: feed_item(page, "job-2") and feed_item(page, "job-3"),
                                    what="job-2 and job-3 in the feed")
                failed = feed_item(page, "job-2")
                assert failed["status"] == "error" and "division by zero" in failed["error"]
                assert failed["output"] == ["1"]
                long = feed_item(page, "job-3")
                assert len(long["output"]) == 20 and all(len(line) == 200 for line in long["output"])
                # A page that connects now gets the feed in its snapshot, oldest first.
                late = await open_page(dashboard_http.url("/dashboard/live"))
                snapshot = await late.wait_for(lambda m: m["type"] == "snapshot", what="a late snapshot")
                ids = [i["id"] for i in snapshot["feed"]]
                assert ids[0] == "job-1" and set(ids) == {"job-1", "job-2", "job-3"}
                assert snapshot["totals"]["done"] == 3 and snapshot["history"]
                await late.close()

                # The server's panel, with its readings from the telemetry store (and 404 for a stranger).
                url = dashboard_http.url("/dashboard/nodes/server")

                async def history_points():
                    status, detail = await get_json(url)
                    assert status == 200
                    return sum(1 for cpu in detail["history"]["cpu"] if cpu is not None) >= 3

                loop = asyncio.get_running_loop()
                deadline = loop.time() + 15
                while not await history_points():
                    assert loop.time() < deadline, "no history from the telemetry store"
                    await asyncio.sleep(0.1)
                status, detail = await get_json(url)
                series = detail["history"]
                assert len(series["time"]) == len(series["cpu"]) == len(series["temp"]) == len(series["mem"])
                assert series["time"] == sorted(series["time"])
                assert all(0 <= cpu <= 100 for cpu in series["cpu"])
                assert detail["view"]["id"] == "server" and detail["view"]["role"] == "server"
                assert detail["plugins"]["telemetry_store"] == "running"
                assert detail["health"]["state"] == "online" and detail["info"]["id"] == "server"
                for stranger in ("nobody", "no%20such%20node", "x" * 100):
                    status, body = await get_json(dashboard_http.url(f"/dashboard/nodes/{stranger}"))
                    assert status == 404 and "error" in body
            finally:
                await page.close()

    try:
        asyncio.run(scenario())
    finally:
        observer.close()
