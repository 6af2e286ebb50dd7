"""The registry: health state machine, debounced publication, SQLite persistence across a server restart,
what it accepts from nodes (and from its SQLite file), and forgetting nodes."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pidaemon_plugins.registry import NodeRecord
from pidaemon_plugins.registry.telemetry_summary import summarize_telemetry
from pidaemon_plugins.warble.worker_choice import WorkerLoad, pick_worker

from pidaemon.bus import Message
from tests.support.control_plane import (
    daemon,
    latest_json,
    registry_nodes,
    registry_section,
    wait_until,
)


def make_registry(tmp_path, **extra):
    server = daemon("server", "mqtt://127.0.0.1:1", tmp_path / "server", role="server",
                    plugins={"registry": registry_section(tmp_path, **extra)})
    server.load_plugins()
    published = []
    server.publish = lambda topic, payload, qos=0, retain=False, **props: published.append(
        (topic, payload, retain)) or True
    registry = server.plugin("registry")
    registry.pidaemon_configure(server)
    return server, registry, published


def deliver(server, topic, payload, retain=False):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    server.plugin("registry").pidaemon_message(server, Message(topic=topic, payload=data, retain=retain))


def info(node_id, **extra):
    return {"schema": 1, "id": node_id, "role": "worker", "ip": "10.0.0.7", "mac": "b8:27:eb:00:00:07", "hostname": node_id,
            "capabilities": ["warble"], "plugins": {"ping": {"state": "running"}, "lights": {"state": "failed"}},
            **extra}


def test_health_state_machine(tmp_path):
    async def scenario():
        server, registry, published = make_registry(tmp_path, missed_pings=3)
        deliver(server, "picluster/nodes/pi1/status", b"online")
        deliver(server, "picluster/nodes/pi1/info", info("pi1"))
        rec = registry.records["pi1"]
        steps = [rec.state]
        for seq in (1, 2):  # two misses: still online
            registry.seq = seq
            registry._count_misses(seq)
        steps.append((rec.state, rec.misses))
        registry.seq = 3
        registry._count_misses(3)
        steps.append((rec.state, rec.misses, registry.healthy_nodes()))
        deliver(server, "picluster/nodes/pi1/status", b"online", retain=True)  # stale retained copy
        steps.append(rec.state)
        deliver(server, "picluster/nodes/pi1/reply/ping", {"node": "pi1", "seq": 3})
        steps.append((rec.state, rec.misses, registry.healthy_nodes(capability="warble")))
        deliver(server, "picluster/nodes/pi1/status", b"offline")
        registry.seq = 4
        registry._count_misses(4)  # offline nodes are not pinged
        steps.append((rec.state, rec.misses))
        deliver(server, "picluster/nodes/pi1/status", b"")  # retained status cleared: forgotten
        steps.append("pi1" in registry.records)
        return steps, published, registry

    steps, published, registry = asyncio.run(scenario())
    assert steps == ["online", ("online", 2), ("unhealthy", 3, []), "unhealthy", ("online", 0, ["pi1"]),
                     ("offline", 0), False]
    health = [p["state"] for t, p, r in published if t == "picluster/nodes/pi1/health" and p]
    assert health == ["online", "unhealthy", "online", "offline"]


def test_a_node_that_came_online_after_a_ping_is_not_blamed_for_it(tmp_path):
    async def scenario():
        server, registry, _ = make_registry(tmp_path, missed_pings=1)
        registry.seq = 10  # ping 10 is out
        deliver(server, "picluster/nodes/late/status", b"online")
        registry._count_misses(10)
        return registry.records["late"].state

    assert asyncio.run(scenario()) == "online"


def test_record_fields_and_debounced_publication(tmp_path):
    async def scenario():
        server, registry, published = make_registry(tmp_path, publish_delay=0.2)
        for i in range(500):
            deliver(server, f"picluster/nodes/pi{i}/status", b"online")
            deliver(server, f"picluster/nodes/pi{i}/info", info(f"pi{i}"))
        deliver(server, "picluster/nodes/pi1/telemetry", {"node": "pi1", "time": 5.0, "readings": {
            "cpu_percent": 12.5, "memory": {"total": 1, "available": 1, "percent": 40.0}, "cpu_temperature": 48.3,
            "load_average": [0.5, 0.4, 0.3]}})
        await asyncio.sleep(0.5)
        return [p for t, p, r in published if t == "picluster/registry"]

    registries = asyncio.run(scenario())
    assert len(registries) == 1  # 1000 changes, one publication
    record = registries[0]["nodes"]["pi1"]
    assert registries[0]["counts"]["online"] == 500
    assert {k: record[k] for k in ("id", "role", "ip", "mac", "state", "capabilities", "failed_plugins")} == {
        "id": "pi1", "role": "worker", "ip": "10.0.0.7", "mac": "b8:27:eb:00:00:07", "state": "online",
        "capabilities": ["warble"], "failed_plugins": ["lights"]}
    assert record["telemetry"] == {"time": 5.0, "cpu_percent": 12.5, "memory_percent": 40.0,
                                   "cpu_temperature": 48.3, "load_1m": 0.5}
    assert record["since"] > 0 and record["last_seen"] >= record["since"]


def test_registry_survives_a_server_restart_in_sqlite(broker, observer, tmp_path):
    """The server and the broker restart (retained messages gone): the registry comes back from SQLite."""
    async def scenario():
        server = daemon("server", broker.url, tmp_path / "server", role="server",
                        plugins={"ping": {}, "registry": registry_section(tmp_path)})
        workers = [daemon(n, broker.url, tmp_path / n, plugins={"ping": {}}) for n in ("stays", "leaves")]
        await server.start()
        for w in workers:
            await w.start()
        registry = server.plugin("registry")
        await wait_until(lambda: all((registry.record(n) or {}).get("state") == "online" for n in ("stays", "leaves")),
                         what="registered")
        await workers[1].shutdown()
        await wait_until(lambda: registry.record("leaves")["state"] == "offline", what="offline")
        before = registry.record("leaves")
        await server.shutdown()
        await workers[0].shutdown()
        await asyncio.to_thread(broker.restart)

        mark = len(observer.messages)
        again = daemon("server", broker.url, tmp_path / "server", role="server",
                       plugins={"ping": {}, "registry": registry_section(tmp_path)})
        await again.start()
        loaded = again.plugin("registry").record("leaves")
        first = await asyncio.to_thread(observer.wait_for, "picluster/registry", None, 15, mark)
        await again.shutdown()
        return before, loaded, json.loads(first.payload)

    before, loaded, published = asyncio.run(scenario())
    assert loaded == before
    assert published["nodes"]["leaves"]["state"] == "offline"
    assert published["nodes"]["leaves"]["since"] == before["since"]
    assert "stays" in published["nodes"]


# ---------------------------------------------------------------- what nodes send is checked where it enters

def registry_warnings(caplog) -> list[str]:
    """The registry's lines about what it dropped."""
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and "registry: dropped" in r.getMessage()]


def good_telemetry(node_id="pi1", **readings):
    return {"node": node_id, "time": 5.0, "readings": {"cpu_percent": 12.5, "memory": {"percent": 40.0},
                                                        "load_average": [0.5, 0.4, 0.3], **readings}}


BAD_INFO = [  # one field wrong in each: a type, a range, a length, a character, the node-id rule
    ("cpu_count", "many"), ("cpu_count", 0), ("cpu_count", 10 ** 40), ("cpu_count", True), ("cpu_count", 4.0),
    ("memory_total", -1), ("memory_total", "1 GB"),
    ("role", ["worker"]), ("role", "a+b"), ("role", {"x": 1}),
    ("hostname", "h" * 1000), ("hostname", "pi\nFAKE LOG LINE"), ("os", 12), ("version", ""),
    ("ip", "10.0.0.300"), ("ip", "x" * 10000), ("mac", "b8-27-eb-00-00-07"), ("mac", "b8:27:eb:00:00:0"), ("mac", 42),
    ("capabilities", "warble"), ("capabilities", ["warble", "a/b"]), ("capabilities", [f"c{i}" for i in range(1000)]),
    ("capabilities", [["warble"]]),
    ("plugins", {"a+b": {"state": "failed"}}), ("plugins", {"ping": "failed"}), ("plugins", ["ping"]),
    ("id", "someone-else"), ("id", None), ("schema", "x"), ("schema", None), ("schema", 0),
]


@pytest.mark.parametrize("field, value", BAD_INFO, ids=[f"{f}={str(v)[:20]}" for f, v in BAD_INFO])
def test_an_info_with_a_wrong_field_is_dropped_with_one_log_line(tmp_path, caplog, field, value):
    server, registry, _ = make_registry(tmp_path)
    deliver(server, "picluster/nodes/pi1/info", info("pi1", cpu_count=4))
    before = registry.record("pi1")
    caplog.clear()
    deliver(server, "picluster/nodes/pi1/info", info("pi1", **{"cpu_count": 2, field: value}))
    assert registry.record("pi1") == before   # the whole message is dropped: the record keeps the last good one
    warnings = registry_warnings(caplog)
    assert len(warnings) == 1
    assert "picluster/nodes/pi1/info" in warnings[0] and field in warnings[0] and len(warnings[0]) < 400


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b"\xff\xfe", b'{"cpu_count": 1' + b"0" * 5000 + b"}",
                                     b"[" * 100000, b'{"os": "' + b"x" * 70000 + b'"}'],
                         ids=["not-json", "a-list", "not-utf8", "int-of-5000-digits", "deeply-nested", "oversized"])
def test_an_info_that_is_not_a_json_object_of_bounded_size_is_dropped(tmp_path, caplog, payload):
    server, registry, _ = make_registry(tmp_path)
    deliver(server, "picluster/nodes/pi1/info", payload)   # no exception out of the plugin
    assert "pi1" not in registry.records
    assert len(registry_warnings(caplog)) == 1


@pytest.mark.parametrize("topic", ["picluster/nodes/a b/status", "picluster/nodes/-x/info",
                                   "picluster/nodes/" + "n" * 65 + "/telemetry", "picluster/nodes/pi\u0085/status",
                                   "picluster/nodes/pi\u00e9/status"])
def test_a_node_id_in_a_topic_follows_the_name_rule(tmp_path, caplog, topic):
    server, registry, _ = make_registry(tmp_path)
    payload = b"online" if topic.endswith("status") else info("x") if topic.endswith("info") else good_telemetry("x")
    deliver(server, topic, payload)
    assert registry.records == {}
    assert len(registry_warnings(caplog)) == 1


BAD_TELEMETRY = [
    {"cpu_percent": "12"}, {"cpu_percent": float("nan")}, {"cpu_percent": float("inf")}, {"cpu_percent": -5},
    {"cpu_percent": 10 ** 30}, {"cpu_percent": True}, {"memory": {"percent": 101}}, {"memory": [40]},
    {"cpu_temperature": 5000}, {"load_average": "high"}, {"load_average": [-1, 0, 0]},
    {"throttling": {"raw": "<script>"}}, {"telemetry_store": {"forwarder": {"dropped": -1}}},
    {"telemetry_store": {"forwarder": {"delivered": 1.5}}},
]


@pytest.mark.parametrize("readings", BAD_TELEMETRY, ids=[str(r)[:30] for r in BAD_TELEMETRY])
def test_a_telemetry_sample_with_a_wrong_reading_is_dropped(tmp_path, caplog, readings):
    server, registry, _ = make_registry(tmp_path)
    deliver(server, "picluster/nodes/pi1/status", b"online")
    deliver(server, "picluster/nodes/pi1/telemetry", good_telemetry())
    before = registry.record("pi1")["telemetry"]
    caplog.clear()
    deliver(server, "picluster/nodes/pi1/telemetry", good_telemetry(**readings))
    assert registry.record("pi1")["telemetry"] == before
    assert len(registry_warnings(caplog)) == 1


def test_a_telemetry_sample_must_name_the_node_of_its_topic(tmp_path, caplog):
    server, registry, _ = make_registry(tmp_path)
    deliver(server, "picluster/nodes/pi1/telemetry", good_telemetry("pi2"))
    assert registry.records == {} and len(registry_warnings(caplog)) == 1


def test_the_same_bad_message_again_is_logged_once_and_counted(tmp_path, caplog):
    server, registry, _ = make_registry(tmp_path)
    for _ in range(50):
        deliver(server, "picluster/nodes/pi1/info", info("pi1", cpu_count="many"))
    deliver(server, "picluster/nodes/pi1/status", b"maybe")   # another problem: its own line
    assert len(registry_warnings(caplog)) == 2
    assert registry.snapshot()["rejected"] == {"info": 50, "status": 1}


def test_summaries_for_displays_leave_out_what_is_wrong_and_never_raise():
    payload = good_telemetry(cpu_percent=float("nan"), cpu_temperature=10 ** 400, memory="full",
                             throttling={"raw": "0x50005"})
    assert summarize_telemetry(payload) == {"time": 5.0, "load_1m": 0.5, "throttled": "0x50005"}
    assert summarize_telemetry({"readings": [1]}) == {} and summarize_telemetry("x") == {}


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                        max_size=4), max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cpu_count=JSON, cpu_percent=JSON, capabilities=JSON, role=JSON)
def test_whatever_a_node_sends_its_record_holds_values_of_the_right_type(tmp_path, cpu_count, cpu_percent,
                                                                         capabilities, role):
    """What the Warble server's worker choice reads (cpu_count, cpu_percent, capabilities) is always usable."""
    server, registry, _ = make_registry(tmp_path / "h")
    deliver(server, "picluster/nodes/pi1/status", b"online")
    deliver(server, "picluster/nodes/pi1/info", info("pi1", cpu_count=cpu_count, capabilities=capabilities, role=role))
    deliver(server, "picluster/nodes/pi1/telemetry", good_telemetry(cpu_percent=cpu_percent))
    rec = registry.node_record("pi1")
    assert rec.cpu_count is None or (type(rec.cpu_count) is int and 1 <= rec.cpu_count <= 4096)
    assert rec.role is None or isinstance(rec.role, str)
    assert isinstance(rec.capabilities, list) and all(isinstance(c, str) for c in rec.capabilities)
    cpu = (rec.telemetry or {}).get("cpu_percent")
    assert cpu is None or (type(cpu) is float and math.isfinite(cpu) and 0 <= cpu <= 100)
    registry.healthy_nodes("warble", role="worker")
    pick_worker([WorkerLoad("pi1", cpu, rec.cpu_count or 1, 0)])   # as the Warble server does: no TypeError
    json.dumps(registry.snapshot(), allow_nan=False)                # and the registry stays publishable JSON
    registry._db.close()


def test_the_registry_holds_at_most_max_nodes(tmp_path, caplog):
    server, registry, _ = make_registry(tmp_path, max_nodes=3)
    for i in range(10):
        deliver(server, f"picluster/nodes/pi{i}/status", b"online")
    assert sorted(registry.records) == ["pi0", "pi1", "pi2"]
    assert len(registry_warnings(caplog)) == 1


# ---------------------------------------------------------------- ping answers

def test_a_ping_answer_from_a_node_id_outside_the_rule_is_dropped(tmp_path, caplog):
    async def scenario():
        server, registry, published = make_registry(tmp_path)
        registry.seq = 1
        for node in ("a+b", "a/b", "", 5, None, "n" * 65, ["pi1"]):  # as a topic level, or in the answer
            deliver(server, f"picluster/nodes/{node}/reply/ping", {"node": node, "seq": 1})
            deliver(server, "picluster/nodes/pi1/reply/ping", {"node": node, "seq": 1})
        registry._count_misses(1)
        return registry.records, [t for t, p, r in published if "/health" in t]

    records, health_topics = asyncio.run(scenario())
    assert records == {} and health_topics == []
    assert len(registry_warnings(caplog)) == 1   # one kind of problem: one line


def test_a_ping_answer_counts_only_on_its_nodes_own_topic(tmp_path):
    """Answers used to come on one shared topic naming the node in the payload: any node could answer
    for another.  Only `nodes/<id>/reply/ping` counts now, which the ACL lets only client id <id> write."""
    async def scenario():
        server, registry, _ = make_registry(tmp_path, missed_pings=1)
        deliver(server, "picluster/nodes/pi1/status", b"online")
        registry.seq = 1
        deliver(server, "picluster/registry/pong/server", {"node": "pi1", "seq": 1})
        registry._count_misses(1)
        return registry.records["pi1"].state

    assert asyncio.run(scenario()) == "unhealthy"


@pytest.mark.parametrize("topic", ["picluster/nodes/pi1/reply/ping"])
def test_a_forged_ping_number_does_not_keep_a_silent_node_online(tmp_path, topic):
    """An answer with a number beyond the pings sent would count every later ping as answered."""
    async def scenario():
        server, registry, _ = make_registry(tmp_path, missed_pings=3)
        deliver(server, "picluster/nodes/pi1/status", b"online")
        registry.seq = 1
        deliver(server, topic, {"node": "pi1", "seq": 10 ** 9, "time": 1.0, "delay": 0})
        for seq in (2, 3, 4):   # pings that get no answer
            registry.seq = seq
            registry._count_misses(seq)
        return registry.records["pi1"].state

    assert asyncio.run(scenario()) == "unhealthy"


@pytest.mark.parametrize("answer", [{"node": "pi1", "seq": "1"}, {"node": "pi1", "seq": 1, "delay": "soon"},
                                    {"node": "pi1", "seq": 1, "delay": -1}, {"node": "pi2", "seq": 1},
                                    {"node": "pi1", "seq": True}, {"node": "pi1", "seq": 1, "time": float("nan")}],
                         ids=["seq-str", "delay-str", "delay-negative", "other-node", "seq-bool", "time-nan"])
def test_a_wrong_ping_answer_on_a_reply_topic_is_not_a_sign_of_life(tmp_path, caplog, answer):
    async def scenario():
        server, registry, _ = make_registry(tmp_path, missed_pings=1)
        deliver(server, "picluster/nodes/pi1/status", b"online")
        registry.seq = 1
        registry._count_misses(1)
        deliver(server, "picluster/nodes/pi1/reply/ping", answer)
        return registry.records["pi1"].state

    assert asyncio.run(scenario()) == "unhealthy"
    assert len(registry_warnings(caplog)) == 1


# ---------------------------------------------------------------- records from SQLite

def write_old_registry(path, rows):
    """The table as an older registry wrote it: whatever nodes said."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE nodes (id TEXT PRIMARY KEY, record TEXT NOT NULL, updated REAL NOT NULL)")
    db.executemany("INSERT INTO nodes VALUES (?, ?, 1.0)",
                   [(i, r if isinstance(r, str) else json.dumps(r)) for i, r in rows])
    db.commit()
    db.close()


def test_records_loaded_from_sqlite_are_checked_like_messages(tmp_path, caplog):
    good = {"id": "good", "state": "offline", "since": 100.0, "role": "worker", "cpu_count": 4,
            "capabilities": ["warble"], "telemetry": {"time": 99.0, "cpu_percent": 3.5}}
    write_old_registry(tmp_path / "registry.sqlite3", [
        ("good", good), ("also", dict(good, id="also", state="online")),
        ("many", dict(good, id="many", cpu_count="many")),
        ("a+b", dict(good, id="a+b")),
        ("zombie", dict(good, id="zombie", state="zombie")),
        ("misses", dict(good, id="misses", misses="3")),
        ("nan", dict(good, id="nan", telemetry={"cpu_percent": "NaN"})),
        ("caps", dict(good, id="caps", capabilities="warble")),
        ("other", dict(good, id="someone")),
        ("broken", "{not json"),
    ])
    caplog.set_level(logging.INFO)
    _, registry, _ = make_registry(tmp_path)
    lines = [r.getMessage() for r in caplog.records if "registry" in r.getMessage()]
    assert sorted(registry.records) == ["also", "good"]
    assert registry.record("good") == {**NodeRecord(id="x").to_dict(), **good}
    dropped = [line for line in lines if "dropped" in line]
    assert len(dropped) == 1 and "8 invalid records" in dropped[0] and "registry.sqlite3" in dropped[0]
    assert any("2 nodes loaded from" in line and "1 of them offline" in line for line in lines)
    registry._db.close()
    rows = sqlite3.connect(tmp_path / "registry.sqlite3").execute("SELECT id FROM nodes").fetchall()
    assert sorted(r[0] for r in rows) == ["also", "good"]   # dropped for good, not again at every start


# ---------------------------------------------------------------- forgetting nodes

def forget_command(server, nodes, retain=False, **extra):
    payload = json.dumps({"nodes": nodes, "reply_to": "picluster/replies/me", **extra}).encode()
    server.plugin("registry").pidaemon_message(
        server, Message(topic="picluster/registry/forget", payload=payload, retain=retain))


def test_forget_command_removes_records_and_clears_their_retained_topics(tmp_path):
    async def scenario():
        server, registry, published = make_registry(tmp_path)
        for node, status in (("gone", b"offline"), ("up", b"online"), ("sick", b"online")):
            deliver(server, f"picluster/nodes/{node}/status", status)
            deliver(server, f"picluster/nodes/{node}/info", info(node))
        for seq in (1, 2, 3):   # "sick" misses three pings: unhealthy
            registry.seq = seq
            deliver(server, "picluster/nodes/up/reply/ping", {"node": "up", "seq": seq})
            registry._count_misses(seq)
        mark = len(published)
        forget_command(server, ["gone", "up", "sick", "never"])
        first = published[mark:]
        forget_command(server, ["up"], force=True)
        registry._flush(everything=True)
        stored = [r[0] for r in registry._db.execute("SELECT id FROM nodes")]
        return first, published, registry, stored

    first, published, registry, stored = asyncio.run(scenario())
    answers = [p for t, p, r in published if t == "picluster/replies/me"]
    assert answers[0] == {"server": "server", "forgotten": ["gone", "sick"], "refused": {"up": "online"},
                          "unknown": ["never"]}
    assert answers[1]["forgotten"] == ["up"]
    cleared = {t for t, p, r in first if p == b"" and r}
    assert cleared == {f"picluster/nodes/{n}/{k}" for n in ("gone", "sick") for k in ("status", "info", "telemetry",
                                                                                        "health")}
    assert registry.records == {} and stored == []


@pytest.mark.parametrize("retain, extra", [(True, {}), (False, {"reply_to": "picluster/nodes/gone/cmd/warble"}),
                                           (False, {"reply_to": "elsewhere/replies"}), (False, {"force": "yes"}),
                                           (False, {"ids": ["gone", "a+b"]})],
                         ids=["retained", "reply-on-a-node-topic", "reply-outside-the-prefix", "force-not-a-boolean",
                              "an-id-outside-the-rule"])
def test_a_doubtful_forget_command_forgets_nothing(tmp_path, caplog, retain, extra):
    server, registry, published = make_registry(tmp_path)
    deliver(server, "picluster/nodes/gone/status", b"offline")
    forget_command(server, extra.pop("ids", ["gone"]), retain=retain, **extra)
    assert "gone" in registry.records and len(registry_warnings(caplog)) == 1
    assert not [t for t, p, r in published if "replies" in t or "/cmd/" in t]


def retained_under(port: int, topic_filter: str) -> list[tuple[str, bytes]]:
    """What a newcomer subscribing to `topic_filter` receives retained (a barrier message marks the end)."""
    from tests.support.observer import Observer

    newcomer = Observer(port, topics=(topic_filter, "test/barrier"))
    try:
        newcomer.publish("test/barrier", b"end")   # after the subscription, hence after its retained messages
        newcomer.wait_for("test/barrier")
        return [(m.topic, m.payload) for m in newcomer.messages if m.topic != "test/barrier"]
    finally:
        newcomer.close()


def test_forget_after_ages_out_offline_nodes_for_good(broker, observer, tmp_path):
    """`forget_after`: an offline node goes from the registry, its SQLite row and the broker's retained messages."""
    async def scenario():
        section = registry_section(tmp_path, forget_after=0.5, health_topics=True)
        server = daemon("server", broker.url, tmp_path / "server", role="server",
                        plugins={"ping": {}, "registry": section})
        workers = [daemon(n, broker.url, tmp_path / n, plugins={"ping": {}, "telemetry": {"interval": 0.2}})
                   for n in ("stays", "leaves")]
        await server.start()
        for w in workers:
            await w.start()
        registry = server.plugin("registry")
        try:
            await wait_until(lambda: all((registry.record(n) or {}).get("state") == "online"
                                         for n in ("stays", "leaves")), what="registered")
            await workers[1].shutdown()
            await wait_until(lambda: registry.record("leaves") is None, what="leaves forgotten")
            await wait_until(lambda: "leaves" not in registry_nodes(observer), what="registry published without it")
            published = latest_json(observer, "picluster/registry")
            retained = await asyncio.to_thread(retained_under, broker.port, "picluster/nodes/+/+")
        finally:
            await workers[0].shutdown()
            await server.shutdown()
        again = daemon("server", broker.url, tmp_path / "server", role="server", plugins={"registry": section})
        again.load_plugins()
        again.plugin("registry").pidaemon_configure(again)   # what a restarted server loads from SQLite
        return published, retained, again.plugin("registry").records

    published, retained, reloaded = asyncio.run(scenario())
    assert not [t for t, p in retained if "/leaves/" in t]            # nothing left to bring it back
    assert published["counts"]["offline"] == 0 and published["forget_after"] == 0.5
    assert ("picluster/nodes/stays/status", b"online") in retained     # what a newcomer does see
    assert sorted(reloaded) == ["server", "stays"]
