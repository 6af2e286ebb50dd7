"""Discovery on loopback: forged announcements change nothing, valid ones are followed, mDNS works too."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

from pidaemon_plugins.discovery.datagram import HEADER, MAGIC, Announcement, encode
from tests.control.helpers import (SECRET, announce_section, daemon, discovery_section, free_udp_port,
                                   registry_section, wait_until)
from tests.support.mosquitto import Mosquitto
from tests.support.observer import Observer


def announcement_for(port: int, **kw) -> Announcement:
    fields = dict(cluster="testcluster", server="server", host="127.0.0.1", port=port, prefix="picluster",
                  time=time.time())
    fields.update(kw)
    return Announcement(**fields)


def forged_datagrams(port: int) -> dict[str, bytes]:
    """Announcements of the broker on `port` that a node must refuse, by reason."""
    good = encode(announcement_for(port), SECRET)
    body = json.dumps(announcement_for(port).to_dict()).encode()
    return {
        "bad HMAC": encode(announcement_for(port), "not the cluster's secret"),
        "unsupported protocol version": HEADER.pack(MAGIC, 2, 1, len(body)) + body + good[-32:],
        "too large": good + bytes(64 * 1024 - 100 - len(good)),
        "unsigned announcement": encode(announcement_for(port)),
    }


def send(udp_port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.sendto(data, ("127.255.255.255", udp_port))


def test_forged_announcements_are_ignored_and_logged_and_the_node_does_not_move(broker, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    udp_port = free_udp_port()
    other = Mosquitto(tmp_path / "other-broker").start()
    other_observer = Observer(other.port)

    async def scenario():
        worker = daemon("wk", None, tmp_path / "wk", plugins={
            "ping": {}, "discovery": discovery_section(udp_port, follow_after=0.3, log_every=0.1)})
        starting = asyncio.create_task(worker.start())
        await asyncio.sleep(0.5)  # listening
        discovery = worker.plugin("discovery")
        # Before discovery: forged announcements of the real broker do not make the node connect.
        for data in forged_datagrams(broker.port).values():
            send(udp_port, data)
        await wait_until(lambda: sum(discovery.rejected.values()) >= 4, what="forged datagrams rejected")
        await asyncio.sleep(0.3)
        found_by_forgery = starting.done()
        send(udp_port, encode(announcement_for(broker.port), SECRET))
        await asyncio.wait_for(starting, 10)
        assert await worker.bus.wait_connected(10)
        first_broker = worker.broker.url

        # The broker goes away: the node would now follow a valid announcement, but not a forged one.
        await asyncio.to_thread(broker.stop)
        await wait_until(lambda: not worker.bus.connected, what="disconnected")
        await asyncio.sleep(0.5)  # longer than follow_after
        rejected_before = sum(discovery.rejected.values())
        for _ in range(5):
            for data in forged_datagrams(other.port).values():
                send(udp_port, data)
            await asyncio.sleep(0.2)
        await wait_until(lambda: sum(discovery.rejected.values()) >= rejected_before + 20, what="all rejected")
        after_forgery = (worker.broker.url, worker.bus.client.host, worker.bus.client.port, discovery.switches)

        # A genuine announcement of the new broker is followed, without a restart.
        send(udp_port, encode(announcement_for(other.port, server="server2"), SECRET))
        await wait_until(lambda: worker.bus.connected, timeout=15, what="connected to the new broker")
        online = await asyncio.to_thread(other_observer.wait_for, "picluster/nodes/wk/status", "online", 10)
        info = json.loads((await asyncio.to_thread(other_observer.wait_for, "picluster/nodes/wk/info")).payload)
        await worker.shutdown()
        return found_by_forgery, first_broker, after_forgery, online, info, dict(discovery.rejected)

    try:
        found_by_forgery, first_broker, after_forgery, online, info, rejected = asyncio.run(scenario())
    finally:
        other_observer.close()
        other.stop()
    assert not found_by_forgery
    assert first_broker == broker.url
    assert after_forgery == (broker.url, "127.0.0.1", broker.port, 0)
    assert online.payload == b"online"
    assert info["discovery"]["server"] == "server2" and info["discovery"]["broker"] == other.url
    for reason in ("bad HMAC", "unsupported protocol version 2", "too large", "unsigned announcement"):
        assert any(reason in k for k in rejected), (reason, rejected)
    logged = [r.getMessage() for r in caplog.records if "ignored a datagram from 127.0.0.1" in r.getMessage()]
    for reason in ("bad HMAC", "unsupported protocol version 2", "too large: 65436 bytes", "unsigned"):
        assert any(reason in line for line in logged), (reason, logged)
    assert any("switching from " + broker.url in r.getMessage() for r in caplog.records)


def test_discovery_by_mdns_on_loopback_adopts_the_announced_prefix(broker, tmp_path):
    """No UDP announcements at all: the node finds the server through mDNS (on 127.0.0.1 only)."""
    cluster = f"mdns{int(time.time() * 1000) % 10**8}"
    lab_observer = Observer(broker.port, topics=["labnet/#"])

    async def scenario():
        server = daemon("mdns-server", broker.url, tmp_path / "server", role="server", prefix="labnet", plugins={
            "ping": {}, "registry": registry_section(tmp_path),
            "announce": announce_section(free_udp_port(), targets=[], cluster=cluster, mdns=True,
                                         mdns_interfaces=["127.0.0.1"])})
        worker = daemon("mdns-worker", None, tmp_path / "wk", plugins={
            "ping": {}, "discovery": discovery_section(free_udp_port(), cluster=cluster, mdns=True,
                                                       mdns_interfaces=["127.0.0.1"])})
        await server.start()
        await asyncio.wait_for(worker.start(), 20)
        registry = server.plugin("registry")
        await wait_until(lambda: (registry.record("mdns-worker") or {}).get("state") == "online", what="registered")
        via, prefix = worker.plugin("discovery").via, worker.topics.prefix
        await worker.shutdown()
        await server.shutdown()
        return via, prefix

    try:
        via, prefix = asyncio.run(scenario())
        status = lab_observer.wait_for("labnet/nodes/mdns-worker/status", "online")
    finally:
        lab_observer.close()
    assert via == "mdns" and prefix == "labnet" and status.payload == b"online"


def test_announcements_of_another_cluster_are_not_taken(tmp_path):
    udp_port = free_udp_port()

    async def scenario():
        worker = daemon("picky", None, tmp_path / "wk", plugins={"discovery": discovery_section(udp_port, timeout=1.5)})
        starting = asyncio.create_task(worker.start())
        await asyncio.sleep(0.3)
        send(udp_port, encode(announcement_for(1883, cluster="neighbours"), SECRET))
        try:
            await starting
        except Exception as exc:  # DaemonError: no valid announcement within the timeout
            error = exc
        await worker.shutdown()
        return error, worker.plugin("discovery")

    error, discovery = asyncio.run(scenario())
    assert "no valid server announcement within 1.5 s" in str(error)
    assert discovery.accepted == 0 and any("another cluster" in k for k in discovery.rejected)


def test_a_node_waiting_for_its_server_stops_on_sigterm(tmp_path):
    from tests.control.helpers import config_mapping
    from tests.support.nodes import start_node_process, wait_for_log, write_config

    data = config_mapping("waiting", None, tmp_path / "state",
                          plugins={"discovery": discovery_section(free_udp_port())})
    process = start_node_process(write_config(tmp_path / "waiting.yaml", data))
    try:
        log_path = process.log_path
        wait_for_log(process, "waiting for the server's announcement")
        process.terminate()
        code = process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0  # a clean stop: the core cancels the start-up, discovery closes its socket
    assert "[waiting] stopped" in open(log_path).read()
