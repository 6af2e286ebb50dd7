"""The server's telemetry sink: SQLite storage, no duplicates, downsampling, forwarding, dropped counts,
and what forged telemetry cannot do to it: grow the file past its cap, crowd out real nodes, flood the log."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

from pidaemon_plugins.telemetry_store.database import TelemetryStore, flatten_numbers
from pidaemon_plugins.telemetry_store.limits import DropLog, NodeRates, count_keys

from tests.support.control_plane import daemon, wait_until
from tests.support.observer import Observer
from tests.support.rest_endpoint import Endpoint

MIB = 1 << 20


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
    store.open(logging.getLogger("test"))
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


def size_on_disk(db) -> int:
    """The SQLite file with its write-ahead log and shared-memory index, as `du` would count them."""
    return sum(os.stat(f"{db}{suffix}").st_size for suffix in ("", "-wal", "-shm") if os.path.exists(f"{db}{suffix}"))


def sample(node: str, t: float, readings: dict | None = None, pad: int = 0) -> str:
    readings = {"cpu_percent": 12.5, "memory": {"percent": 40.0}, **(readings or {})}
    if pad:
        readings["note"] = "x" * pad
    return json.dumps({"node": node, "time": t, "seq": 1, "interval": 5, "readings": readings})


def test_forged_telemetry_cannot_grow_the_store_past_its_cap(broker, tmp_path, caplog):
    """A flood of oversized, key-stuffed, too frequent, malformed, future and forged-id samples.

    The file (with -wal and -shm) never grows past max_db_bytes although several times that
    is accepted from made-up node ids; each kind of drop is counted and logged once; a real
    node's samples are still stored.
    """
    caplog.set_level(logging.WARNING)
    db = tmp_path / "telemetry.sqlite3"
    cap = MIB
    store_section = {"db": str(db), "flush_interval": 0.05, "maintenance_interval": 3600, "max_db_bytes": cap,
                     "max_sample_bytes": 8192, "max_keys": 64, "max_samples_per_node": 20, "rate_interval": 60}
    prefix = "picluster/nodes"
    forged_ids = [f"forged-{i:05d}" for i in range(2400)]
    attacks = {  # kind: (topic node id, payload)
        "too_big": [(f"big-{i}", sample(f"big-{i}", time.time(), pad=9000)) for i in range(100)],
        "too_many_keys": [(f"keys-{i}", sample(f"keys-{i}", time.time(), {f"k{j}": j for j in range(100)}))
                          for i in range(100)],
        "rate": [("hammer", sample("hammer", time.time() + i * 1e-3)) for i in range(300)],
        "bad_node_id": [(bad, sample("x", time.time())) for bad in ("bad id", "-dash", "x" * 65, "dot/..", "é")],
        "malformed": [("junk", "not json"), ("junk2", "[1, 2]"), ("junk3", '{"time": "now"}'),
                      ("junk4", '{"time": ' + "9" * 5000 + "}"), ("junk5", "[" * 3000 + "]" * 3000)],
        "future": [("clockless", sample("clockless", time.time() + 86400))],
    }
    expected_drops = {kind: len(items) for kind, items in attacks.items()}
    expected_drops["rate"] = 300 - 20
    expected_drops["bad_node_id"] = 4  # "dot/.." is two topic levels: not a telemetry topic at all

    async def scenario():
        server = daemon("server", broker.url, tmp_path / "server", role="server",
                        plugins={"telemetry_store": store_section})
        await server.start()
        store = server.plugin("telemetry_store")
        client = await asyncio.to_thread(Observer, broker.port, ["nothing/here"])
        while not store.received:  # until the server's subscription is in place
            await asyncio.to_thread(client.publish, f"{prefix}/probe/telemetry", sample("probe", time.time()), 0)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        sizes = []
        sent = store.received

        async def send(messages):
            nonlocal sent
            for node_id, payload in messages:
                await asyncio.to_thread(client.publish, f"{prefix}/{node_id}/telemetry", payload, 0)
            sent += sum(1 for node_id, _ in messages if "/" not in node_id)
            await wait_until(lambda: store.received >= sent, what=f"the store received every message ({sent})")
            await wait_until(lambda: not store.pending, what="written")
            sizes.append(size_on_disk(db))

        legit_times = []
        for messages in attacks.values():
            await send(messages)
        for start in range(0, len(forged_ids), 200):  # about six times the cap, within every per-sample limit
            legit_times.append(time.time())
            batch = [(n, sample(n, time.time(), pad=2000)) for n in forged_ids[start:start + 200]]
            await send(batch + [("legit-1", sample("legit-1", legit_times[-1]))])
        for _ in range(3):  # and after the flood
            legit_times.append(time.time())
            await send([("legit-1", sample("legit-1", legit_times[-1]))])
        legit = await store.samples("legit-1")
        telemetry = server.collect_telemetry()["telemetry_store"]
        await server.shutdown()
        await asyncio.to_thread(client.close)
        return sizes, legit, legit_times, telemetry, store.store.evicted

    sizes, legit, legit_times, telemetry, evicted = asyncio.run(scenario())
    assert max(sizes) <= cap, sizes
    assert size_on_disk(db) <= cap
    assert evicted > 1000  # the cap was reached many times over: the oldest forged samples went
    assert telemetry["dropped"] == {**expected_drops, "backlog": 0}
    assert telemetry["stored"] >= 2400 + 20 and 0 < telemetry["db_bytes"] <= cap
    # The real node: never dropped; its samples from after the flood are all there, with the newest before it.
    assert [r["time"] for r in legit] == legit_times[-len(legit):] and len(legit) >= 4
    # Logged twice: at the first drop, and what followed (under a minute) at shutdown.
    summaries = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(summaries) == 2 and "most from hammer 280" in summaries[1], summaries


def test_the_size_cap_deletes_the_oldest_rollups_and_samples_first(tmp_path):
    db = tmp_path / "t.sqlite3"
    store = TelemetryStore(db, max_bytes=MIB)
    store.open(logging.getLogger("test"))
    # A week of rollups, then raw samples: 4 MiB in all, in batches as the writer gets them.
    rollup_rows = [("n", float(b), 1, json.dumps({"cpu_percent": [1.0, 1.0, 1.0, 1]})) for b in range(0, 600_000, 300)]
    with store.db:
        store.db.execute("BEGIN")
        store.db.executemany("INSERT INTO rollups (node, bucket, count, readings) VALUES (?, ?, ?, ?)", rollup_rows)
    sizes = []
    for batch in range(40):
        t0 = 1_000_000.0 + batch * 100
        store.insert([(f"n{i % 50}", t0 + i, sample(f"n{i % 50}", t0 + i, pad=900)) for i in range(100)])
        sizes.append(size_on_disk(db))
    samples, rollups = store.counts()
    oldest = store.db.execute("SELECT MIN(time) FROM samples").fetchone()[0]
    newest = store.db.execute("SELECT MAX(time) FROM samples").fetchone()[0]
    # Downsampling within the cap as well (every sample is past the retention).
    folded = store.downsample(now=2_000_000.0, raw_retention=10, interval=300, rollup_retention=10**9)
    after = store.counts()
    store.close()
    assert max(sizes) <= MIB, sizes
    assert rollups == 0 and store.evicted >= len(rollup_rows)  # every rollup was older than every sample
    assert 0 < samples < 4000 and newest == 1_000_000.0 + 39 * 100 + 99 and oldest > 1_000_000.0
    assert folded == samples and after[0] == 0 and after[1] > 0
    assert size_on_disk(db) <= MIB


def test_store_loops_are_supervised(broker, tmp_path):
    """A crash of the maintenance loop restarts it (it was a plain task: one crash, no downsampling ever again)."""
    async def scenario():
        server = daemon("server", broker.url, tmp_path / "server", role="server", plugins={
            "telemetry_store": {"db": str(tmp_path / "t.sqlite3"), "maintenance_interval": 0.1}})
        await server.start()
        store = server.plugin("telemetry_store")
        calls = []
        downsample = store.store.downsample

        def failing_once(*args):
            calls.append(args)
            if len(calls) == 1:
                raise RuntimeError("disk on fire")
            return downsample(*args)

        store.store.downsample = failing_once
        await wait_until(lambda: len(calls) >= 3, what="maintenance runs again after its crash")
        restarts = dict(server.task_restarts)
        await server.shutdown()
        return restarts

    restarts = asyncio.run(scenario())
    assert restarts == {"telemetry-store:maintenance": 1}


def test_node_rates_are_token_buckets_with_a_bounded_memory():
    now = [0.0]
    rates = NodeRates(limit=3, interval=60, max_nodes=2, clock=lambda: now[0])
    assert [rates.allow("a") for _ in range(4)] == [True, True, True, False]
    now[0] = 20.0  # one sample's worth refilled
    assert [rates.allow("a") for _ in range(2)] == [True, False]
    assert rates.allow("b") and rates.allow("c") and len(rates) == 2  # "a", the least recent, is forgotten
    assert [rates.allow("a") for _ in range(4)] == [True, True, True, False]


def test_count_keys_counts_nested_keys_and_items_and_stops_at_the_limit():
    assert count_keys({"memory": {"total": 1, "percent": 5}, "load": [1, 2, 3]}, 100) == 7
    deep: list = []
    for _ in range(100_000):  # deeper than any recursion limit
        deep = [deep]
    assert count_keys(deep, 10**6) == 100_000
    assert count_keys({str(i): i for i in range(10_000)}, 50) == 10_000  # one dict at once
    assert 50 < count_keys([[[1] * 10 for _ in range(10)] for _ in range(1000)], 50) <= 1000  # not all 111000


def test_drop_log_logs_one_summary_per_interval_naming_the_worst_nodes(caplog):
    now = [0.0]
    drops = DropLog(logging.getLogger("test.drops"), every=60, max_named=3, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.drops"):
        for i in range(1000):
            drops.drop("rate", "hammer")
            drops.drop("too_big", f"n{i}", f"{i} bytes")
        now[0] = 61.0
        drops.maybe_log()
        drops.maybe_log()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0] == "telemetry store: dropped 1 samples (rate 1), most from hammer 1"
    assert lines[1] == ("telemetry store: dropped 1999 samples in the last 61 s (too_big 1000, rate 999), "
                        "most from hammer 999, (other nodes) 998, n0 1, n1 1; last: 999 bytes")
    assert drops.totals["rate"] == 1000 and drops.totals["too_big"] == 1000
