"""The dashboard's model from real MQTT messages: what it keeps of good ones, and what hostile ones cannot do
(break the model, the JSON or the page; pass unchecked values; add nodes without end)."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.support.nodes import make_daemon
from tests.support.observer import Observer
from tests.support.waiting import wait_until

P = "picluster"
GOOD_INFO = {"schema": 1, "id": "good", "role": "worker", "mac": "B8:27:EB:00:00:02", "simulated": True,
             "hostname": "good\x00\x1b[31m" + "h" * 5000, "plugins": {"ping": {"state": "configured"},
                                                                  "sound": {"state": "failed", "error": "x" * 9000}},
             "deep": {"a": {"b": {"c": {"d": {"e": 1}}}}}, "big": list(range(1000)),
             "wide": {f"k{i}": list(range(64)) for i in range(60)}}  # 3,900 values: over the copy's budget
# Retained before the dashboard starts: what a hostile client may have left on the broker.
HOSTILE_RETAINED = [
    (f"{P}/nodes/good/status", b"online"),
    (f"{P}/nodes/good/info", json.dumps(GOOD_INFO).encode()),
    # Readings: NaN and infinity (Python's json reads them), a string, out of range, a bool; memory fine.
    (f"{P}/nodes/good/telemetry", b'{"node": "good", "time": 1, "readings": {"cpu_percent": NaN, '
                                  b'"cpu_temperature": 1e400, "memory": {"percent": 33.333}, "simulated": "yes"}}'),
    (f"{P}/nodes/odd/telemetry", b'{"readings": {"cpu_percent": "50", "cpu_temperature": 500, '
                                 b'"memory": {"percent": true}}}'),
    (f"{P}/nodes/liar/info", json.dumps({"schema": 1, "id": "good", "role": "server"}).encode()),  # another's id
    (f"{P}/nodes/bad!id/status", b"online"),
    (f"{P}/nodes/weird/status", b"maybe"),
    (f"{P}/nodes/weird/health", json.dumps({"node": "weird", "state": "hacked"}).encode()),
    (f"{P}/nodes/binary/info", b"\xff\xfe\x00garbage"),
    (f"{P}/nodes/deep/info", b"[" * 30000 + b"]" * 30000),  # under the size limit: refused for its depth
    (f"{P}/nodes/huge/info", json.dumps({"schema": 1, "id": "huge", "pad": "x" * 70000}).encode()),
    (f"{P}/lights/state", json.dumps({"pixels": [[300, 0, 0]], "brightness": 1}).encode()),
    (f"{P}/warble/leaderboard", json.dumps({"pi_digits": [
        {"user": "ada", "digits": 50, "job": "j1", "time": 1.5},
        {"user": "<script>alert(1)</script>" + "u" * 500, "digits": 7, "job": None, "time": float("nan")},
        {"user": "mallory", "digits": "many"}, "not an entry"]}).encode()),
]


def test_the_model_keeps_checked_values_and_drops_what_it_cannot_use(broker, tmp_path, dashboard_http, open_page):
    observer = Observer(broker.port)
    for topic, payload in HOSTILE_RETAINED:
        observer.publish(topic, payload, retain=True)

    async def scenario():
        server = make_daemon("server", broker.url, role="server", plugins=dashboard_http.plugins(max_nodes=50))
        await server.start()
        plugin = server.plugin("dashboard")
        page = await open_page(dashboard_http.url("/dashboard/live"))
        try:
            await wait_until(lambda: sum(plugin.dropped.values()) >= 8, 15, what="hostile messages dropped")
            snapshot = await page.wait_for(lambda m: m["type"] == "snapshot", what="the snapshot")
            await page.wait_for(lambda m: (page.node("good") or {}).get("mem") is not None, what="good's readings")
            good = page.node("good")
            assert good == {"id": "good", "role": "worker", "place": None, "state": "online", "cpu": None,
                            "temp": None, "mem": 33.3, "warble": None, "simulated": True}
            odd = page.node("odd")
            assert odd["cpu"] is None and odd["temp"] is None and odd["mem"] is None and odd["state"] == "unknown"
            # Nothing of the liar, the bad id, the binary, too deep or too big info; weird's status refused.
            nodes = {**snapshot["nodes"], **{k: v for m in page.messages[1:] for k, v in m["nodes"].items()}}
            assert set(nodes) <= {"good", "odd", "server", "weird", "binary", "deep", "huge"}
            assert "liar" not in nodes and "bad!id" not in nodes
            for name in ("weird", "binary", "deep", "huge"):
                assert nodes.get(name) is None or nodes[name]["role"] is None, name
            assert plugin.dropped["info"] >= 4 and plugin.dropped["status"] >= 2 and plugin.dropped["health"] >= 1
            assert snapshot["lamp"] is None and plugin.dropped["lights/state"] == 1
            leaders = snapshot["leaderboard"]["pi_digits"]
            assert [entry["digits"] for entry in leaders] == [50, 7]
            assert len(leaders[1]["user"]) == 64 and leaders[1]["time"] is None

            # The node's panel: its info cut to size, control characters replaced, its plugins' states.
            async with aiohttp.ClientSession() as session:
                async with session.get(dashboard_http.url("/dashboard/nodes/good")) as answer:
                    assert answer.status == 200
                    detail = json.loads(await answer.text(), parse_constant=_refuse)
            info = detail["info"]
            assert len(info["hostname"]) == 200 and "\x00" not in info["hostname"] and "\x1b" not in info["hostname"]
            assert len(info["big"]) == 64 and info["deep"]["a"]["b"] == {"c": None}
            assert 0 < sum(len(v) for v in info["wide"].values()) < 2000  # the copy's budget of values in all
            assert info["plugins"]["sound"]["error"].endswith("…")
            assert detail["plugins"] == {"ping": "configured", "sound": "failed"}
            assert detail["history"] == {"time": [], "cpu": [], "temp": [], "mem": []}  # no telemetry store here

            # Good messages after the bad ones are still taken; a lamp that is right is shown.
            observer.publish(f"{P}/lights/state", json.dumps({"pixels": [[1, 2, 3], [4, 5, 6, 7]],
                                                              "brightness": 0.5, "effect": None, "on": True}))
            observer.publish(f"{P}/nodes/good/telemetry",
                             json.dumps({"node": "good", "time": 2, "readings": {"cpu_percent": 12.25}}), qos=0)
            lamp = await page.wait_for(lambda m: m.get("lamp") is not None, what="the lamp")
            assert lamp["lamp"] == {"pixels": [[1, 2, 3], [4, 5, 6, 7]], "brightness": 0.5, "effect": None,
                                    "on": True}
            await page.wait_for(lambda m: (m["nodes"].get("good") or {}).get("cpu") == 12.2, what="good's cpu")

            # Ids without end: the model keeps at most max_nodes, and says how many it refused.
            for i in range(80):
                observer.client.publish(f"{P}/nodes/flood-{i}/status", b"online", qos=1)
            await wait_until(lambda: plugin.model.refused_nodes > 0 and len(plugin.model.nodes) == 50, 15,
                             what="the flood capped")
            assert not page.closed.is_set()
        finally:
            await page.close()
            await server.shutdown()

    try:
        asyncio.run(scenario())
    finally:
        for topic, _ in HOSTILE_RETAINED:
            observer.publish(topic, b"", retain=True)
        observer.close()


def _refuse(constant):
    raise ValueError(f"{constant} is not JSON")
