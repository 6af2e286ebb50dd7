"""Health: frozen workers become unhealthy and recover, killed ones go offline, lost servers are survived,
and the loops that watch them survive crashes."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest

from tests.support.control_plane import (
    announce_section,
    config_mapping,
    daemon,
    discovery_section,
    free_udp_port,
    latest_json,
    registry_section,
    stop_all,
    wait_until,
)
from tests.support.nodes import start_node_process, write_config

PING_INTERVAL, MISSED = 0.5, 3
# A generous failure bound for "within the configured deadline": the deadline is
# PING_INTERVAL * MISSED after the last answer, plus one interval of phase.
DEADLINE = PING_INTERVAL * (MISSED + 1)


def test_frozen_worker_is_unhealthy_then_healthy_and_killed_worker_goes_offline(broker, observer, tmp_path):
    async def scenario():
        server = daemon("server", broker.url, tmp_path / "server", role="server", plugins={
            "ping": {}, "registry": registry_section(tmp_path, ping_interval=PING_INTERVAL, missed_pings=MISSED)})
        await server.start()
        registry = server.plugin("registry")
        processes = []
        for node_id in ("frozen", "killed", "steady"):
            # keepalive 10: a frozen node keeps its connection (the broker waits 15 s) so that the
            # registry, not the last will, is what notices it.
            data = config_mapping(node_id, broker.url, tmp_path / node_id, plugins={"ping": {}}, keepalive=10)
            processes.append(start_node_process(write_config(tmp_path / f"{node_id}.yaml", data)))
        frozen, killed, steady = processes
        state = lambda node_id: (registry.record(node_id) or {}).get("state")  # noqa: E731
        try:
            # A node says `online` before its info (and so its role) arrives: wait for both.
            await wait_until(lambda: registry.healthy_nodes(role="worker") == ["frozen", "killed", "steady"],
                             timeout=30, what="workers online with their info")
            assert all(state(n) == "online" for n in ("frozen", "killed", "steady"))

            frozen.send_signal(signal.SIGSTOP)
            await wait_until(lambda: state("frozen") == "unhealthy", timeout=DEADLINE + 10, what="frozen unhealthy")
            unhealthy_record = registry.record("frozen")
            healthy_while_frozen = registry.healthy_nodes(role="worker")
            frozen.send_signal(signal.SIGCONT)
            await wait_until(lambda: state("frozen") == "online", timeout=15, what="frozen back online")

            killed.send_signal(signal.SIGKILL)
            await wait_until(lambda: state("killed") == "offline", timeout=15, what="killed offline")
            killed_record = registry.record("killed")
            health = await asyncio.to_thread(observer.wait_for, "picluster/nodes/killed/health", None, 10)
            await asyncio.sleep(PING_INTERVAL * (MISSED + 1))  # pings go on: the steady node stays online
            steady_state = state("steady")
            published = latest_json(observer, "picluster/registry")
        finally:
            stop_all(processes)
            await server.shutdown()
        return unhealthy_record, healthy_while_frozen, killed_record, health, steady_state, published

    unhealthy_record, healthy_while_frozen, killed_record, health, steady_state, published = asyncio.run(scenario())
    assert unhealthy_record["misses"] >= MISSED
    assert healthy_while_frozen == ["killed", "steady"]
    assert killed_record["since"] >= unhealthy_record["since"]
    assert steady_state == "online"
    assert json.loads(health.payload)["node"] == "killed"
    assert published["nodes"]["killed"]["state"] == "offline"
    assert published["nodes"]["frozen"]["state"] == "online"
    assert published["counts"]["offline"] == 1


def test_worker_survives_broker_restart_and_registers_again(broker, observer, tmp_path):
    """A node that loses its server keeps running, reconnects with backoff and re-registers, no restart."""
    udp_port = free_udp_port()

    async def scenario():
        server = daemon("server", broker.url, tmp_path / "server", role="server", plugins={
            "ping": {}, "registry": registry_section(tmp_path), "announce": announce_section(udp_port)})
        worker = daemon("wk", None, tmp_path / "wk", plugins={
            "ping": {}, "telemetry": {"interval": 0.2}, "discovery": discovery_section(udp_port)})
        await server.start()
        await worker.start()
        registry = server.plugin("registry")
        await wait_until(lambda: (registry.record("wk") or {}).get("state") == "online", what="wk online")
        telemetry = worker.plugin("telemetry")
        first_since = registry.record("wk")["since"]
        await asyncio.to_thread(broker.stop)
        await wait_until(lambda: not worker.bus.connected, what="worker disconnected")
        before = telemetry.seq
        await asyncio.sleep(2)
        kept_sampling = telemetry.seq - before  # local work goes on without a broker
        mark = len(observer.messages)  # before the restart: the new info may come at once
        await asyncio.to_thread(broker.start)
        await wait_until(lambda: worker.bus.connected and server.bus.connected, timeout=30, what="reconnected")
        # The restarted broker forgot every retained message: the worker publishes its info again.
        info = await asyncio.to_thread(observer.wait_for, "picluster/nodes/wk/info", None, 15, mark)
        await wait_until(lambda: registry.record("wk")["last_seen"] > first_since + 2, what="seen again")
        record = registry.record("wk")
        stats = dict(worker.bus.stats)
        await worker.shutdown()
        await server.shutdown()
        return kept_sampling, info, record, stats

    # The observer's own connection dies with the broker; it reconnects through paho's loop.
    kept_sampling, info, record, stats = asyncio.run(scenario())
    assert kept_sampling >= 5
    assert json.loads(info.payload)["id"] == "wk"
    assert record["state"] == "online"
    assert stats["connects"] >= 2 and stats["disconnects"] >= 1


def test_broadcast_ping_answers_are_spread_over_the_requested_window(broker, observer, tmp_path):
    """A thousand answers to one broadcast must not reach the server in the same instant."""
    async def scenario():
        nodes = [daemon(f"n{i:02d}", broker.url, tmp_path / f"n{i:02d}", plugins={"ping": {}}) for i in range(20)]
        for node in nodes:
            await node.start()
        try:
            for node in nodes:  # online once subscribed
                await asyncio.to_thread(observer.wait_for, f"picluster/nodes/{node.id}/status", "online")

            def answers(seq):
                found = [json.loads(m.payload) for m in observer.messages
                         if m.topic.endswith("/reply/ping") and json.loads(m.payload)["seq"] == seq]
                return found if len(found) == len(nodes) else None
            await asyncio.to_thread(observer.publish, "picluster/broadcast/ping", json.dumps({"seq": 1, "spread": 1.0}))
            spread = await wait_until(lambda: answers(1), timeout=10, what="20 answers to the spread ping")
            await asyncio.to_thread(observer.publish, "picluster/broadcast/ping", json.dumps({"seq": 2}))
            at_once = await wait_until(lambda: answers(2), timeout=10, what="20 answers to a plain ping")
            await asyncio.to_thread(observer.publish, "picluster/broadcast/ping",
                                    json.dumps({"seq": 3, "spread": -1}))
            await asyncio.to_thread(observer.publish, "picluster/broadcast/ping", json.dumps({"seq": 4}))
            still_answering = await wait_until(lambda: answers(4), timeout=10, what="answers after a bad ping")
            refused = answers(3)
        finally:
            for node in nodes:
                await node.shutdown()
        return spread, at_once, still_answering, refused

    spread, at_once, still_answering, refused = asyncio.run(scenario())
    delays = [a["delay"] for a in spread]
    assert all(0 <= d <= 1.0 for d in delays) and len(set(delays)) > 10
    # the answers really left at different times (20 draws from 0..1 s spanning under 0.3 s: p < 1e-9)
    assert max(a["time"] for a in spread) - min(a["time"] for a in spread) > 0.3
    assert [a["delay"] for a in at_once] == [0] * 20
    assert refused is None and len(still_answering) == 20      # a negative spread is refused


@pytest.mark.parametrize("interval, spread, asked", [
    (0.5, 5, 0.25),      # cut to half the ping timeout
    (120, 40, 30.0),     # cut to what a node grants (MAX_PING_SPREAD)
    (5, None, 1.0),      # default: a fifth of the timeout, at most 1 s
])
def test_the_registry_asks_for_a_spread_that_nodes_grant_within_the_timeout(tmp_path, interval, spread, asked):
    server = daemon("server", None, tmp_path / "server", role="server", plugins={
        "registry": registry_section(tmp_path, ping_interval=interval, ping_spread=spread)})
    server.load_plugins()
    assert server.plugin("registry").ping_spread == asked


def test_the_registry_puts_the_spread_in_its_ping(broker, observer, tmp_path):
    async def scenario():
        server = daemon("server", broker.url, tmp_path / "server", role="server", plugins={
            "registry": registry_section(tmp_path, ping_interval=0.5, ping_spread=0.2)})
        await server.start()
        try:
            return json.loads((await asyncio.to_thread(observer.wait_for, "picluster/broadcast/ping")).payload)
        finally:
            await server.shutdown()

    assert asyncio.run(scenario())["spread"] == 0.2


def test_a_flood_of_spread_pings_does_not_pile_up_waiting_answers(broker, observer, tmp_path):
    from pidaemon_plugins.ping import MAX_DELAYED
    pings = MAX_DELAYED + 50

    async def scenario():
        node = daemon("n1", broker.url, tmp_path / "n1", plugins={"ping": {}})
        await node.start()
        await asyncio.to_thread(observer.wait_for, "picluster/nodes/n1/status", "online")
        ping = node.plugin("ping")
        answers = lambda: [json.loads(m.payload) for m in observer.messages  # noqa: E731
                           if m.topic == "picluster/nodes/n1/reply/ping"]
        try:
            for seq in range(pings):
                await asyncio.to_thread(observer.publish, "picluster/nodes/n1/cmd/ping",
                                        json.dumps({"seq": seq, "spread": 30}))
            # every ping is either answered or waiting for its moment
            await wait_until(lambda: len(answers()) + len(ping._delayed) == pings, timeout=10, what="all pings taken")
            waiting, answered = len(ping._delayed), answers()
        finally:
            await node.shutdown()
        return waiting, answered, len(ping._delayed)

    waiting, answered, after_shutdown = asyncio.run(scenario())
    assert waiting <= MAX_DELAYED and after_shutdown == 0
    assert any(a["delay"] == 0 for a in answered)       # over the cap: answered at once


# ---------------------------------------------------------------- long-running tasks survive

def test_the_health_task_survives_poison_and_a_crash_and_still_finds_a_frozen_node(broker, observer, tmp_path):
    """The attacks of issue 10 (a node id `a+b`, `cpu_count: "many"` with a forged answer), then a crash of the
    health loop itself: the loop is restarted, counted in telemetry, and a frozen node still becomes unhealthy."""
    async def scenario():
        server = daemon("server", broker.url, tmp_path / "server", role="server", plugins={
            "ping": {}, "telemetry": {"interval": 0.2},
            "registry": registry_section(tmp_path, ping_interval=PING_INTERVAL, missed_pings=MISSED)})
        worker = daemon("frozen", broker.url, tmp_path / "frozen", plugins={"ping": {}})
        await server.start()
        await worker.start()
        registry = server.plugin("registry")
        state = lambda node_id: (registry.record(node_id) or {}).get("state")  # noqa: E731
        try:
            await wait_until(lambda: state("frozen") == "online", what="frozen online")
            poison = [("picluster/nodes/a b/reply/ping", {"node": "a b", "seq": registry.seq}),
                      ("picluster/nodes/evil/info", {"id": "evil", "cpu_count": "many", "capabilities": ["warble"]}),
                      ("picluster/nodes/frozen/reply/ping", {"node": "evil", "seq": registry.seq}),
                      ("picluster/nodes/frozen/reply/ping", {"node": "frozen", "seq": 10 ** 12})]
            for topic, payload in poison:
                await asyncio.to_thread(observer.publish, topic, json.dumps(payload))
            # and an unexpected exception in the loop itself
            count_misses, crashed = registry._count_misses, []

            def crash_once(seq):
                if not crashed:
                    crashed.append(seq)
                    raise RuntimeError("injected crash")
                count_misses(seq)
            registry._count_misses = crash_once
            await wait_until(lambda: crashed, what="the health loop crashed")
            worker.plugin("ping")._answer = lambda *args: None   # frozen: connected, but answers no ping
            await wait_until(lambda: state("frozen") == "unhealthy", timeout=DEADLINE + 10, what="frozen unhealthy")
            restarts = server.collect_telemetry().get("task_restarts")
            evil = registry.node_record("evil")
            return restarts, evil, "a+b" in registry.records
        finally:
            await worker.shutdown()
            await server.shutdown()

    restarts, evil, a_plus_b = asyncio.run(scenario())
    assert restarts == {"registry:health": 1}
    assert not a_plus_b
    assert evil is None or (evil.cpu_count is None and evil.capabilities == [])


def crash_first_run(loop_method):
    """A loop method whose first run raises at once; later runs are the real loop."""
    runs = []

    async def first_run_crashes(self):
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("injected crash")
        await loop_method(self)
    return first_run_crashes


@pytest.mark.parametrize("task", ["registry:flush", "registry:refresh", "telemetry"])
def test_every_loop_of_the_server_restarts_after_a_crash(broker, observer, tmp_path, monkeypatch, task):
    from pidaemon_plugins.registry import RegistryPlugin
    from pidaemon_plugins.telemetry import TelemetryPlugin

    owner, method = {"registry:flush": (RegistryPlugin, "_flush_loop"),
                     "registry:refresh": (RegistryPlugin, "_refresh_loop"),
                     "telemetry": (TelemetryPlugin, "_publish_forever")}[task]
    monkeypatch.setattr(owner, method, crash_first_run(getattr(owner, method)))

    async def scenario():
        server = daemon("server", broker.url, tmp_path / "server", role="server", plugins={
            "ping": {}, "telemetry": {"interval": 0.2}, "registry": registry_section(tmp_path)})
        await server.start()
        registry = server.plugin("registry")
        try:
            await wait_until(lambda: server.task_restarts.get(task) == 1, what=f"{task} restarted")
            # From here on nothing changes state or info: only the refresh loop publishes the registry.
            await wait_until(lambda: registry._publish_handle is None, what="no publication pending")
            mark = len(observer.messages)
            if task == "registry:flush":   # the loop writes a change again
                registry._dirty_db.add("server")
                await wait_until(lambda: registry._db.execute("SELECT count(*) FROM nodes").fetchone()[0] == 1,
                                 what="a record written")
            elif task == "registry:refresh":   # the loop publishes telemetry summaries again
                await asyncio.to_thread(observer.wait_for, "picluster/registry", None, 10, mark)
            else:   # the loop publishes samples again
                await asyncio.to_thread(observer.wait_for, "picluster/nodes/server/telemetry", None, 10, mark)
            return server.collect_telemetry()["task_restarts"]
        finally:
            await server.shutdown()

    assert asyncio.run(scenario()) == {task: 1}


def test_a_ping_echoes_only_a_number_as_its_seq(broker, observer, tmp_path):
    async def scenario():
        node = daemon("n1", broker.url, tmp_path / "n1", plugins={"ping": {}})
        await node.start()
        await asyncio.to_thread(observer.wait_for, "picluster/nodes/n1/status", "online")
        try:
            for seq in ("x" * 10000, [1], {"a": 1}, 1.5, True, -1, 2 ** 64):
                await asyncio.to_thread(observer.publish, "picluster/nodes/n1/cmd/ping", json.dumps({"seq": seq}))
            await asyncio.to_thread(observer.publish, "picluster/nodes/n1/cmd/ping", json.dumps({"seq": 7}))
            await asyncio.to_thread(observer.wait_for, "picluster/nodes/n1/reply/ping")
            replies = [m for m in observer.messages if m.topic == "picluster/nodes/n1/reply/ping"]
            return [json.loads(m.payload)["seq"] for m in replies]
        finally:
            await node.shutdown()

    assert asyncio.run(scenario()) == [7]   # the pings before, in order on one connection, were refused
