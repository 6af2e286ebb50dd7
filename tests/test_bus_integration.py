"""The bus against a real mosquitto: presence, reconnects, resubscription, the offline queue."""

from __future__ import annotations

import asyncio
import json

import pytest

from pidaemon import hookimpl
from pidaemon.bus import Subscription
from tests.support.nodes import make_daemon
from tests.support.plugins import catalog_with
from tests.support.waiting import wait_until


class Recorder:
    """A test plugin: subscribes to `<prefix>/test/<node id>/#` and keeps what it receives."""

    def __init__(self, node, config):
        self.received: list[bytes] = []

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topic("test", node.id, "#"), qos=1)]

    @hookimpl
    def pidaemon_message(self, node, message):
        self.received.append(message.payload)


def test_node_announces_online_and_info_retained(broker, observer):
    async def scenario():
        daemon = make_daemon("n1", broker.url)
        await daemon.start()
        assert await daemon.bus.wait_connected(10)
        status = await asyncio.to_thread(observer.wait_for, "picluster/nodes/n1/status", "online")
        info_message = await asyncio.to_thread(observer.wait_for, "picluster/nodes/n1/info")
        await daemon.shutdown()
        offline = await asyncio.to_thread(observer.wait_for, "picluster/nodes/n1/status", "offline")
        return status, info_message, offline

    status, info_message, offline = asyncio.run(scenario())
    assert status.retain or status.payload == b"online"
    info = json.loads(info_message.payload)
    assert info["id"] == "n1" and info["role"] == "worker"
    assert {"hostname", "ip", "mac", "version", "plugins"} <= set(info)
    assert info["plugins"]["ping"]["state"] in ("running", "configured")
    assert offline.payload == b"offline"


def test_ping_plugin_answers_and_survives_malformed_payloads(broker, observer, caplog):
    async def scenario():
        daemon = make_daemon("n2", broker.url)
        await daemon.start()
        assert await daemon.bus.wait_connected(10)
        # Subscriptions are in place once the node has answered once.
        await asyncio.to_thread(observer.publish, "picluster/nodes/n2/cmd/ping", b"not json {")
        await asyncio.to_thread(observer.publish, "picluster/nodes/n2/cmd/ping", b"\xff\xfe")
        await asyncio.to_thread(observer.publish, "picluster/nodes/n2/cmd/ping", json.dumps({"seq": 7}))
        reply = await asyncio.to_thread(observer.wait_for, "picluster/nodes/n2/reply/ping")
        await daemon.shutdown()
        return reply

    reply = asyncio.run(scenario())
    assert json.loads(reply.payload)["seq"] == 7
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any('plugin "ping"' in e and "picluster/nodes/n2/cmd/ping" in e and "not JSON" in e for e in errors)
    assert any("not UTF-8" in e for e in errors)


def test_broker_outage_reconnects_resubscribes_and_delivers_queued(persistent_broker):
    """Broker down for 10 s: both nodes come back, subscriptions deliver, nothing queued is lost."""
    broker = persistent_broker
    catalog = catalog_with(recorder=Recorder)
    plugins = {"recorder": {}}

    async def scenario():
        # The receiver keeps a persistent session (the broker saves it), the sender
        # a clean one: the sender must resubscribe by itself after the restart.
        receiver = make_daemon("rx", broker.url, catalog=catalog, plugins=plugins, session_expiry=600)
        sender = make_daemon("tx", broker.url, catalog=catalog, plugins=plugins)
        for d in (receiver, sender):
            await d.start()
            assert await d.bus.wait_connected(10)
        rx, tx = receiver.plugin("recorder"), sender.plugin("recorder")
        sender.publish("picluster/test/rx/before", b"before", qos=1)
        await wait_until(lambda: b"before" in rx.received)

        await asyncio.to_thread(broker.stop)
        await wait_until(lambda: not sender.bus.connected and not receiver.bus.connected)
        outage_messages = [f"during-{i}".encode() for i in range(50)]
        for payload in outage_messages:
            assert sender.publish("picluster/test/rx/during", payload, qos=1)
        assert sender.bus.queued == 50
        await asyncio.sleep(10)
        await asyncio.to_thread(broker.start)

        await wait_until(lambda: sender.bus.connected and receiver.bus.connected, timeout=30)
        try:
            await wait_until(lambda: all(p in rx.received for p in outage_messages), timeout=30)
        except TimeoutError:
            raise AssertionError(f"received {rx.received}")
        # The clean-session sender resubscribed: a message to it arrives after the restart.
        receiver.publish("picluster/test/tx/after", b"after", qos=1)
        await wait_until(lambda: b"after" in tx.received, timeout=15)
        stats = sender.bus.stats
        for d in (receiver, sender):
            await d.shutdown()
        return rx.received, stats

    received, stats = asyncio.run(scenario())
    assert [p for p in received if p.startswith(b"during")] == [f"during-{i}".encode() for i in range(50)]
    assert stats["connects"] >= 2 and stats["disconnects"] >= 1 and stats["refused_publishes"] == 0


def test_offline_queue_is_bounded_and_counts_refusals(broker):
    async def scenario():
        daemon = make_daemon("q1", broker.url, queue_limit=5)
        await daemon.start()
        assert await daemon.bus.wait_connected(10)
        await asyncio.to_thread(broker.stop)
        await wait_until(lambda: not daemon.bus.connected)
        accepted = [daemon.publish("picluster/x", str(i), qos=1) for i in range(8)]
        qos0 = daemon.publish("picluster/x", "t", qos=0)
        status = daemon.status()
        await daemon.shutdown()
        return accepted, qos0, status

    accepted, qos0, status = asyncio.run(scenario())
    assert accepted == [True] * 5 + [False] * 3
    assert qos0 is False
    assert status["bus"]["refused_publishes"] == 3 and status["bus"]["queued"] == 5


def test_two_hundred_daemons_share_one_event_loop(broker, observer):
    """No global state: 200 Daemon objects in one process, one loop, one broker."""
    count = 200

    async def scenario():
        daemons = [make_daemon(f"many-{i:03d}", broker.url) for i in range(count)]
        for d in daemons:
            await d.start()
        await wait_until(lambda: all(d.bus.connected for d in daemons), timeout=60)
        await asyncio.to_thread(
            lambda: [observer.wait_for(f"picluster/nodes/many-{i:03d}/status", "online", timeout=30)
                     for i in range(count)])
        # Each node answers its own ping, and only its own.
        await asyncio.to_thread(observer.publish, "picluster/nodes/many-123/cmd/ping", b'{"seq": 123}')
        reply = await asyncio.to_thread(observer.wait_for, "picluster/nodes/+/reply/ping")
        answered = [d.id for d in daemons if d.plugin("ping").answered]
        await asyncio.gather(*(d.shutdown() for d in daemons))
        return reply, answered

    reply, answered = asyncio.run(scenario())
    assert reply.topic == "picluster/nodes/many-123/reply/ping"
    assert answered == ["many-123"]
    online = {m.topic for m in observer.messages if m.payload == b"online"}
    assert len(online) == count
    for i in range(count):  # every node said goodbye itself
        observer.wait_for(f"picluster/nodes/many-{i:03d}/status", "offline", timeout=10)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_both_protocol_versions_connect(broker, observer, protocol):
    async def scenario():
        daemon = make_daemon(f"proto-{protocol.replace('.', '')}", broker.url, protocol=protocol)
        await daemon.start()
        ok = await daemon.bus.wait_connected(10)
        await daemon.shutdown()
        return ok, daemon.id

    ok, node_id = asyncio.run(scenario())
    assert ok
    observer.wait_for(f"picluster/nodes/{node_id}/status", "offline")


def test_shutdown_waits_until_every_qos1_message_is_acknowledged(broker, observer):
    async def scenario():
        daemon = make_daemon("burst", broker.url)
        await daemon.start()
        assert await daemon.bus.wait_connected(10)
        for i in range(500):
            daemon.publish("picluster/test/burst", str(i), qos=1)
        await daemon.shutdown()  # right away: the 500 are still in flight
        return daemon.status()["bus"]

    stats = asyncio.run(scenario())
    assert stats["unacknowledged"] == 0
    observer.wait_for("picluster/nodes/burst/status", "offline")
    received = [m.payload for m in observer.messages if m.topic == "picluster/test/burst"]
    assert received == [str(i).encode() for i in range(500)]


HOSTILE_TOPICS = ["picluster/replies/\x01", "picluster/replies/a\x7fb", "picluster/replies/\uffff",
                  "picluster/replies/\U0010fffe", "picluster/replies/\x85", "picluster/replies/+", "",
                  "picluster/replies/" + "x" * 70_000]


def test_a_publish_to_an_invalid_topic_is_refused_and_the_connection_stays_up(broker, observer, caplog):
    """mosquitto drops a client that publishes to such a topic; a retry would drop it again, for good."""
    async def scenario():
        node = make_daemon("topics", broker.url)
        await node.start()
        try:
            assert await node.bus.wait_connected(10)
            refused = [node.publish(topic, {"n": 1}, qos=1) for topic in HOSTILE_TOPICS]
            assert node.publish("picluster/replies/after", {"n": 2}, qos=1)
            await asyncio.to_thread(observer.wait_for, "picluster/replies/after", timeout=10)
            return refused, dict(node.bus.stats), node.bus.connected
        finally:
            await node.shutdown()

    refused, stats, connected = asyncio.run(scenario())
    assert refused == [False] * len(HOSTILE_TOPICS)
    assert (stats["invalid_topics"], stats["disconnects"], connected) == (len(HOSTILE_TOPICS), 0, True)
    warnings = [r.getMessage() for r in caplog.records if "refused to publish" in r.getMessage()]
    assert len(warnings) == 1 and "U+0001" in warnings[0]  # once, not once per message


def test_an_invalid_topic_is_not_queued_while_offline():
    async def scenario():
        node = make_daemon("offline-topics", "mqtt://127.0.0.1:1")
        node._make_state_dir()
        node.load_plugins()
        node.broker = node.config["mqtt"]["broker"]
        node._start_bus()
        try:
            results = [node.publish(topic, b"x", qos=1) for topic in HOSTILE_TOPICS]
            return results, node.bus.queued
        finally:
            await node.bus.stop()

    results, queued = asyncio.run(scenario())
    assert results == [False] * len(HOSTILE_TOPICS) and queued == 0


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_two_nodes_with_one_id_are_told_that_another_client_uses_it(broker, caplog, protocol):
    async def scenario():
        first = make_daemon("twin", broker.url, protocol=protocol)
        second = make_daemon("twin", broker.url, protocol=protocol)
        await first.start()
        assert await first.bus.wait_connected(10)
        await second.start()
        try:
            await wait_until(lambda: first.bus.stats["taken_over"] + second.bus.stats["taken_over"] > 0, 30,
                             what="the takeover is recognised")
        finally:
            await asyncio.gather(first.shutdown(), second.shutdown())

    asyncio.run(scenario())
    assert any("another client uses this client id 'twin'" in r.getMessage() for r in caplog.records)


def test_a_broker_that_takes_the_connection_but_never_answers_is_named_and_tried_again(monkeypatch, caplog):
    """Before: against a listener that never sends CONNACK (an MQTT 3.1.1-only broker given an MQTT 5
    CONNECT, in one case seen), the node waited for good without a log line, even at debug level."""
    import socket

    from pidaemon import bus as bus_module
    monkeypatch.setattr(bus_module, "CONNACK_TIMEOUT", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)   # accepts connections (the kernel does), never answers
        url = f"mqtt://127.0.0.1:{silent.getsockname()[1]}"

        async def scenario():
            daemon = make_daemon("patient", url)
            await daemon.start()
            await wait_until(lambda: daemon.bus.stats["failed_attempts"] >= 2, 20, what="two attempts given up")
            connected = daemon.bus.connected
            await daemon.shutdown()
            return connected

        connected = asyncio.run(scenario())
    assert connected is False
    warnings = [r.getMessage() for r in caplog.records if "did not answer the MQTT 5 CONNECT" in r.getMessage()]
    assert warnings and url.removeprefix("mqtt://") in warnings[0]
