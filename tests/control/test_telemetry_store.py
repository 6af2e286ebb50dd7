"""The server's telemetry sink: SQLite storage, no duplicates, downsampling, forwarding, dropped counts."""

from __future__ import annotations

import asyncio
import json
import time

from pidaemon_plugins.telemetry_store.database import TelemetryStore, flatten_numbers
from tests.control.helpers import daemon, wait_until
from tests.control.test_forwarder import Endpoint


def test_store_forward_and_skip_retained_duplicates(broker, tmp_path):
    endpoint = Endpoint()
    db = tmp_path / "telemetry.sqlite3"
    store_section = {"db": str(db), "flush_interval": 0.1,
                     "forward": {"url": endpoint.url, "interval": 0.1, "max_backoff": 0.4, "batch_size": 20}}

    async def scenario():
        server = daemon("server", broker.url, tmp_path / "server", role="server", plugins={
            "telemetry": {"interval": 0.2}, "telemetry_store": store_section})
        workers = [daemon(n, broker.url, tmp_path / n, plugins={"telemetry": {"interval": 0.1},
                                                                 "system": {"vcgencmd": ""}}) for n in ("a", "b")]
        endpoint.fail_until = time.monotonic() + 1.0
        await server.start()
        for w in workers:
            await w.start()
        store = server.plugin("telemetry_store")
        await wait_until(lambda: store.forwarder.failures >= 2, what="forwarder failing")
        await asyncio.sleep(1.0)
        for w in workers:
            await w.shutdown()
        published = {w.id: w.plugin("telemetry").published for w in workers}
        await wait_until(lambda: store.forwarder.buffered == 0 and not store.pending, what="drained")
        server_telemetry = server.collect_telemetry()["telemetry_store"]
        samples = {n: await store.samples(n) for n in ("a", "b")}
        await server.shutdown()

        # A new server on the same database: the retained last samples are not stored twice.
        again = daemon("server", broker.url, tmp_path / "server", role="server",
                       plugins={"telemetry_store": {"db": str(db), "flush_interval": 0.1}})
        await again.start()
        store2 = again.plugin("telemetry_store")
        await wait_until(lambda: store2.received >= 3, what="retained samples received")
        await asyncio.sleep(0.3)
        skipped, stored_again = store2.skipped, store2.stored
        await again.shutdown()
        return published, samples, server_telemetry, skipped, stored_again

    try:
        published, samples, server_telemetry, skipped, stored_again = asyncio.run(scenario())
    finally:
        endpoint.close()
    for node, rows in samples.items():
        # Every sample the worker published is stored once, in order (loopback loses nothing at QoS 0;
        # samples taken before the first connection were refused, hence the first seq may be above 1).
        seqs = [r["seq"] for r in rows]
        assert seqs == list(range(seqs[0], seqs[0] + published[node])), node
        assert "memory" in rows[-1]["readings"]
    delivered = [(r["node"], r["time"]) for r in endpoint_readings(endpoint)]
    worker_samples = {(n, r["time"]) for n, rows in samples.items() for r in rows}
    assert worker_samples <= set(delivered)
    assert len(delivered) == len(set(delivered))  # exactly once
    forwarder = server_telemetry["forwarder"]
    assert forwarder["failures"] >= 2 and forwarder["dropped"] == 0 and forwarder["buffered"] == 0
    assert skipped == 3 and stored_again == 0  # a, b and the first server's own last samples


def endpoint_readings(endpoint):
    with endpoint.lock:
        return [r for _, status, readings in endpoint.requests if status == 200 for r in readings]


def test_downsampling_folds_old_samples_into_rollups(tmp_path):
    store = TelemetryStore(tmp_path / "t.sqlite3")
    store.open()
    now = 10_000.0
    rows = []
    for i, t in enumerate([100.0, 110.0, 130.0, 9_990.0]):
        payload = {"node": "n", "time": t, "readings": {"cpu_percent": 10.0 * (i + 1), "memory": {"percent": 50.0},
                                                         "load_average": [1.0, 2.0, 3.0], "ok": True, "name": "x"}}
        rows.append(("n", t, json.dumps(payload)))
    store.insert(rows)
    folded = store.downsample(now, raw_retention=3600, interval=60, rollup_retention=86400)
    rollups = store.rollups("n")
    remaining = store.samples("n")
    # A second run folding a late sample into an existing bucket merges (weighted) with it.
    store.insert([("n", 115.0, json.dumps({"node": "n", "time": 115.0, "readings": {"cpu_percent": 70.0}}))])
    store.downsample(now, raw_retention=3600, interval=60, rollup_retention=86400)
    merged = store.rollups("n")
    store.downsample(now + 86400, raw_retention=3600, interval=60, rollup_retention=3600)  # all expired
    expired = store.counts()
    store.close()

    assert folded == 3
    assert [r["bucket"] for r in rollups] == [60.0, 120.0]
    first = rollups[0]
    assert first["count"] == 2
    assert first["readings"]["cpu_percent"] == [15.0, 10.0, 20.0, 2]
    assert first["readings"]["memory.percent"] == [50.0, 50.0, 50.0, 2]
    assert first["readings"]["load_average.2"] == [3.0, 3.0, 3.0, 2]
    assert "ok" not in first["readings"] and "name" not in first["readings"]
    assert [r["time"] for r in remaining] == [9_990.0]
    assert merged[0]["count"] == 3 and merged[0]["readings"]["cpu_percent"] == [(10 + 20 + 70) / 3, 10.0, 70.0, 3]
    assert expired == (0, 0)


def test_flatten_numbers():
    assert flatten_numbers({"a": 1, "b": {"c": 2.5, "d": [1, 2]}, "e": True, "f": "x", "g": float("inf")}) == {
        "a": 1.0, "b.c": 2.5, "b.d.0": 1.0, "b.d.1": 2.0}
