"""The live WebSocket of the dashboard, with a real broker, registry and worker: the picture, then the changes,
batched; pages that do not read are cut off, and more pages than allowed are refused."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp

from pidaemon.placement import Place, write_placement
from pidaemon_plugins.dashboard import routes as dashboard_routes

from tests.support.nodes import make_daemon
from tests.support.observer import Observer
from tests.support.waiting import wait_until

FAST_REGISTRY = {"ping_interval": 0.3, "missed_pings": 2, "publish_delay": 0.1, "flush_interval": 0.2}


def server_plugins(tmp_path, http, **dashboard):
    return {"ping": {}, "registry": {**FAST_REGISTRY, "db": str(tmp_path / "registry.sqlite3")},
            **http.plugins(**dashboard)}


def telemetry(node_id, cpu, **readings):
    return json.dumps({"node": node_id, "time": 1.7e9, "readings": {"cpu_percent": cpu, **readings}})


def test_a_page_gets_the_picture_then_the_changes_in_batches(broker, tmp_path, dashboard_http, open_page):
    placement = write_placement(tmp_path / "placement.yaml", {"B8:27:EB:00:00:01": Place(2, 3, 4)})
    observer = Observer(broker.port)

    async def scenario():
        server = make_daemon("server", broker.url, role="server",
                             plugins=server_plugins(tmp_path, dashboard_http, placement=str(placement),
                                                    push_interval=0.5))
        worker = make_daemon("w1", broker.url, plugins={"ping": {}, "telemetry": {"interval": 0.2},
                                                        "simulated_system": {}})
        worker.facts["mac"] = "b8:27:eb:00:00:01"
        await server.start()
        await worker.start()
        registry = server.plugin("registry")
        await wait_until(lambda: registry.healthy_nodes() == ["server", "w1"], 20, what="both nodes online")
        page = await open_page(dashboard_http.url("/dashboard/live"))
        try:
            snapshot = await page.wait_for(lambda m: m["type"] == "snapshot", what="the snapshot")
            assert page.messages[0] is snapshot  # the first message, before any update
            # The worker placed by its MAC (given in upper case), the server in the tray; its readings simulated.
            w1 = await page.wait_for(lambda m: (m.get("nodes", {}).get("w1") or {}).get("cpu") is not None,
                                     what="w1 with readings")
            w1 = w1["nodes"]["w1"]
            assert w1["place"] == [2, 3, 4] and w1["state"] == "online" and w1["simulated"] is True
            assert w1["role"] == "worker" and 0 <= w1["cpu"] <= 100 and 5 <= w1["mem"] <= 95
            assert snapshot["server"] == "server" and snapshot["layout"] == {"racks": [5, 5, 5, 6], "slots": 50}
            assert snapshot["nodes"]["server"]["place"] is None
            assert set(snapshot) >= {"lamp", "feed", "leaderboard", "totals", "history"}

            # Telemetry of 20 nodes at once arrives in a few updates, not one each, whole views of changed nodes.
            start = len(page.messages)
            for i in range(20):
                observer.publish(f"picluster/nodes/probe-{i}/telemetry", telemetry(f"probe-{i}", 40 + i, ), qos=0)
            await page.wait_for(lambda m: all(page.node(f"probe-{i}") is not None for i in range(20)),
                                what="the 20 probes")
            carrying = [m for m in page.messages[start:] if any(k.startswith("probe-") for k in m["nodes"])]
            assert all(m["type"] == "update" for m in carrying)
            assert len(carrying) < 20
            assert page.node("probe-7") == {"id": "probe-7", "role": None, "place": None, "state": "unknown",
                                            "cpu": 47.0, "temp": None, "mem": None, "warble": None,
                                            "simulated": False}
            totals = [m["totals"] for m in page.messages if "totals" in m][-1]
            assert totals["nodes"]["unknown"] == 20 and totals["nodes"]["online"] == 2

            # A worker that stops: offline on the page (its clean exit's status, then the registry's health).
            await worker.shutdown()
            await page.wait_for(lambda m: (m["nodes"].get("w1") or {}).get("state") == "offline",
                                what="w1 offline")
            # A node forgotten (its retained status cleared, as the registry does): null on the page.
            registry.forget(["w1"])
            await page.wait_for(lambda m: "w1" in m["nodes"] and m["nodes"]["w1"] is None, what="w1 forgotten")
            assert not page.closed.is_set()
        finally:
            await page.close()
            await server.shutdown()

    try:
        asyncio.run(scenario())
    finally:
        observer.close()


async def _stalled_page(port: int) -> socket.socket:
    """A WebSocket client that never reads, with a tiny receive buffer: the server's frames pile up."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, (f"GET /dashboard/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), 10)
        assert chunk, "the server closed the upgrade"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_a_page_that_does_not_read_is_cut_off_and_pages_beyond_the_cap_are_refused(broker, tmp_path, dashboard_http,
                                                                                  open_page):
    observer = Observer(broker.port)

    async def scenario():
        server = make_daemon("server", broker.url, role="server",
                             plugins=server_plugins(tmp_path, dashboard_http, push_interval=0.05, max_clients=2,
                                                    max_client_backlog=64 * 1024))
        await server.start()
        hub = server.plugin("dashboard").hub
        reader = await open_page(dashboard_http.url("/dashboard/live"))
        stalled = await _stalled_page(dashboard_http.port)
        try:
            await wait_until(lambda: len(hub.pages) == 2, 10, what="two pages")
            # A third page: refused while two are open (max_clients), with a JSON answer.
            async with aiohttp.ClientSession() as session:
                async with session.get(dashboard_http.url("/dashboard/live"),
                                       headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                                "Sec-WebSocket-Version": "13"}) as answer:
                    assert answer.status == 503
                    assert "max_clients" in (await answer.json())["error"]
            # Changes that the stalled page does not read, until its backlog passes the bound.
            round_ = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while hub.stats["dropped_slow"] == 0:
                assert loop.time() < deadline, f"the stalled page was never cut off: {hub.stats}"
                round_ += 1
                for i in range(100):
                    node = f"probe-{i:03d}-" + "x" * 50
                    observer.client.publish(f"picluster/nodes/{node}/telemetry",
                                            telemetry(node, (round_ * 7 + i) % 100), qos=0)
                await asyncio.sleep(0.1)
            assert hub.stats["dropped_slow"] == 1 and len(hub.pages) == 1
            # Its connection is gone: what was buffered for it, then the end.
            while True:
                try:
                    chunk = await asyncio.wait_for(loop.sock_recv(stalled, 65536), 10)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                        # The page that reads goes on getting updates, and a new page is admitted in the freed place.
            mark = len(reader.messages)
            observer.publish("picluster/nodes/after/telemetry", telemetry("after", 12.5), qos=1)
            await reader.wait_for(lambda m: (m["nodes"].get("after") or {}).get("cpu") == 12.5, what="after")
            assert len(reader.messages) > mark and not reader.closed.is_set()
            again = await open_page(dashboard_http.url("/dashboard/live"))
            snapshot = await again.wait_for(lambda m: m["type"] == "snapshot", what="a snapshot")
            assert snapshot["nodes"]["after"]["cpu"] == 12.5
            await again.close()
            # The server stops: the page is told it goes away (1001), and would reconnect.
            await server.shutdown()
            await asyncio.wait_for(reader.closed.wait(), 10)
            assert reader.ws.close_code == 1001
        finally:
            stalled.close()
            await reader.close()
            await server.shutdown()

    try:
        asyncio.run(scenario())
    finally:
        observer.close()


def test_a_page_closed_by_the_heartbeat_with_unread_bytes_does_not_keep_its_connection(broker, tmp_path,
                                                                                      dashboard_http, monkeypatch):
    """A page that never reads nor answers pings is closed by the heartbeat; the bytes it did not take must
    not keep its connection (and its place in the http plugin's caps) open for as long as its TCP lives."""
    monkeypatch.setattr(dashboard_routes, "HEARTBEAT", 3.0)
    observer = Observer(broker.port)
    lamp = json.dumps({"pixels": [[255, 255, 255, 255]] * 1024, "brightness": 1, "on": True})

    async def scenario():
        server = make_daemon("server", broker.url, role="server",
                             plugins=server_plugins(tmp_path, dashboard_http, push_interval=0.05))
        await server.start()
        hub, http = server.plugin("dashboard").hub, server.plugin("http").server
        stalled = await _stalled_page(dashboard_http.port)
        try:
            await wait_until(lambda: len(hub.pages) == 1, 10, what="the stalled page")
            page = next(iter(hub.pages))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not page.unsent():  # its bytes pile up beyond the kernel's buffers, before the heartbeat
                assert loop.time() < deadline and hub.pages, f"nothing piled up for the stalled page: {hub.stats}"
                observer.client.publish("picluster/lights/state", lamp, qos=0)
                await asyncio.sleep(0.02)
            await wait_until(lambda: not hub.pages, 15, what="the heartbeat closing the stalled page")
            await wait_until(lambda: http.open_connections == 0, 10, what="its connection closed")
        finally:
            stalled.close()
            await server.shutdown()

    try:
        asyncio.run(scenario())
    finally:
        observer.publish("picluster/lights/state", b"", retain=True)
        observer.close()
