"""Discovery on loopback: forged, replayed, stale and future announcements change nothing, genuine ones
are followed and the worker goes back to its broker when it returns, mDNS works too, and the configuration
insists on a secret (or an explicit `insecure: true`)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import subprocess
import sys
import time

import pytest
from pidaemon_plugins.discovery.datagram import (
    HEADER,
    MAGIC,
    Announcement,
    decode,
    encode,
)

from pidaemon.daemon import DaemonError
from tests.support.control_plane import (
    SECRET,
    announce_section,
    daemon,
    discovery_section,
    free_udp_port,
    registry_section,
    wait_until,
)
from tests.support.mosquitto import Mosquitto
from tests.support.observer import Observer


def announcement_for(port: int, **kw) -> Announcement:
    fields = dict(cluster="testcluster", server="server", host="127.0.0.1", port=port, prefix="picluster",
                  time=time.time(), counter=int(time.time() * 1000) + 10**9)
    fields.update(kw)
    return Announcement(**fields)


def forged_datagrams(port: int) -> dict[str, bytes]:
    """Announcements of the broker on `port` that a node must refuse on sight, by reason."""
    good = encode(announcement_for(port), SECRET)
    body = json.dumps(announcement_for(port).to_dict()).encode()
    old = HEADER.pack(MAGIC, 1, 1, len(body)) + body
    return {
        "bad HMAC": encode(announcement_for(port), "not the cluster's secret"),
        "unsupported protocol version": HEADER.pack(MAGIC, 3, 1, len(body)) + body + good[-32:],
        "old protocol version": old + hmac.new(SECRET.encode(), old, hashlib.sha256).digest(),
        "too large": good + bytes(64 * 1024 - 100 - len(good)),
        "unsigned announcement": encode(announcement_for(port)),
    }


def send(udp_port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.sendto(data, ("127.255.255.255", udp_port))


class Recorder(asyncio.DatagramProtocol):
    """Someone on the LAN who hears the announcements on the UDP port, as every node does, and keeps them."""

    def __init__(self):
        self.datagrams: list[bytes] = []

    def datagram_received(self, data, addr):
        self.datagrams.append(data)

    def of(self, server: str) -> list[bytes]:
        return [d for d in self.datagrams if decode(d, SECRET).server == server]


async def record(udp_port: int) -> tuple[asyncio.DatagramTransport, Recorder]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("0.0.0.0", udp_port))
    sock.setblocking(False)
    return await asyncio.get_running_loop().create_datagram_endpoint(Recorder, sock=sock)


def server(node_id: str, broker: Mosquitto, tmp_path, udp_port: int, **announce):
    return daemon(node_id, broker.url, tmp_path / node_id, role="server",
                  plugins={"ping": {}, "announce": announce_section(udp_port, **announce)})


def worker(tmp_path, udp_port: int, node_id: str = "wk", **discovery):
    return daemon(node_id, None, tmp_path / node_id,
                  plugins={"ping": {}, "discovery": discovery_section(udp_port, **discovery)})


def test_at_boot_forged_and_replayed_announcements_are_refused_and_the_genuine_server_is_taken(broker, tmp_path,
                                                                                                  caplog):
    """A worker that has just booted has no reference yet (and a Pi no real-time clock): a genuine signed
    announcement recorded earlier and played back is not taken, since its sender cannot answer the
    worker's query; the server that answers is."""
    caplog.set_level(logging.INFO)
    udp_port = free_udp_port()
    other = Mosquitto(tmp_path / "other-broker").start()

    async def scenario():
        # A genuine server once announced another broker; someone on the LAN recorded its datagrams.
        transport, recorder = await record(udp_port)
        old = server("old-server", other, tmp_path, udp_port)
        await old.start()
        await wait_until(lambda: len(recorder.of("old-server")) >= 3, what="announcements recorded")
        await old.shutdown()
        transport.close()

        wk = worker(tmp_path, udp_port, log_every=0.1)
        starting = asyncio.create_task(wk.start())
        await asyncio.sleep(0.5)  # listening
        discovery = wk.plugin("discovery")
        for data in [*forged_datagrams(other.port).values(), *recorder.of("old-server")]:
            send(udp_port, data)
        await wait_until(lambda: "unconfirmed announcement" in discovery.rejected and len(discovery.rejected) >= 6,
                         what="forgeries refused and replays unconfirmed")
        found_by_forgery, queries = starting.done(), discovery.queries

        # The genuine server comes up: the worker asks it, and takes its answer.
        genuine = server("server", broker, tmp_path, udp_port)
        await genuine.start()
        await asyncio.wait_for(starting, 15)
        connected = await wk.bus.wait_connected(10)
        result = (found_by_forgery, queries, connected, wk.broker.url, discovery.via, dict(discovery.rejected),
                  genuine.plugin("announce").answered)
        await wk.shutdown()
        await genuine.shutdown()
        return result

    try:
        found_by_forgery, queries, connected, broker_url, via, rejected, answered = asyncio.run(scenario())
    finally:
        other.stop()
    assert not found_by_forgery and queries >= 1
    assert connected and broker_url == broker.url and via == "udp" and answered >= 1
    for reason in ("bad HMAC", "unsupported protocol version 3", "old protocol version 1", "too large",
                   "unsigned announcement", "unconfirmed announcement"):
        assert any(reason in k for k in rejected), (reason, rejected)
    logged = [r.getMessage() for r in caplog.records if "ignored a datagram from 127.0.0.1" in r.getMessage()]
    for reason in ("bad HMAC", "unsupported protocol version 3", "too large: 65436 bytes", "unsigned",
                   "upgrade the server", "no answer from 127.0.0.1"):
        assert any(reason in line for line in logged), (reason, logged)


def test_during_an_outage_replayed_stale_and_future_announcements_are_refused(broker, tmp_path, caplog):
    """The worker knows both servers; its broker goes away; recorded announcements of the other server's
    broker (not newer than what it took), and signed ones too old or from the future, do not move it."""
    caplog.set_level(logging.INFO)
    udp_port = free_udp_port()
    other = Mosquitto(tmp_path / "other-broker").start()

    async def scenario():
        transport, recorder = await record(udp_port)
        first = server("server", broker, tmp_path, udp_port)
        await first.start()
        wk = worker(tmp_path, udp_port, freshness=5, follow_after=0.3, log_every=0.1)
        await asyncio.wait_for(wk.start(), 15)
        assert await wk.bus.wait_connected(10)
        discovery = wk.plugin("discovery")
        # A second genuine server announces another broker for a while: the worker asks it once and then
        # takes its announcements (it stays where it is: it is connected); the recorder keeps them.
        second = server("server2", other, tmp_path, udp_port)
        await second.start()
        seen = discovery.freshness.servers
        await wait_until(lambda: ("testcluster", "server2") in seen and seen["testcluster", "server2"].anchor,
                         what="server2 answered")
        answered_at = seen["testcluster", "server2"].counter
        await wait_until(lambda: seen["testcluster", "server2"].counter > answered_at + 2, what="server2 heard")
        await second.shutdown()
        transport.close()

        await asyncio.to_thread(broker.stop)
        await wait_until(lambda: not wk.bus.connected, what="disconnected")
        await asyncio.sleep(0.5)  # longer than follow_after: a fresh announcement would now be followed
        last = seen["testcluster", "server2"].counter
        now = time.time()
        played_back = [
            *recorder.of("server2"),  # as recorded: counters the worker has already passed
            encode(announcement_for(other.port, server="server2", counter=last + 10**6, time=now - 20), SECRET),
            encode(announcement_for(other.port, server="server2", counter=last + 2 * 10**6, time=now + 20), SECRET),
        ]
        for _ in range(3):
            for data in played_back:
                send(udp_port, data)
            await asyncio.sleep(0.3)
        await wait_until(lambda: all(k in discovery.rejected for k in (
            "replayed announcement", "stale announcement", "announcement from the future")), what="refused")
        after_replays = (wk.broker.url, wk.bus.client.port, discovery.switches, discovery.announcement.server)

        # The broker comes back: the worker is connected to it again, by itself.
        await asyncio.to_thread(broker.start)
        await wait_until(lambda: wk.bus.connected, timeout=30, what="reconnected")
        result = after_replays, wk.broker.url
        await wk.shutdown()
        await first.shutdown()
        return result

    try:
        after_replays, final_broker = asyncio.run(scenario())
    finally:
        other.stop()
    assert after_replays == (broker.url, broker.port, 0, "server")
    assert final_broker == broker.url
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "replayed announcement: counter" in logged and "the last accepted" in logged
    assert "stale announcement: sent 2" in logged and "announcement from the future: 2" in logged


def test_after_following_another_broker_the_worker_goes_back_once_its_own_is_back(broker, tmp_path, caplog):
    """Signed: two genuine servers; the worker's broker goes away, it follows the other one, and goes back
    when its own broker is announced again and reachable, although the other one still works."""
    caplog.set_level(logging.INFO)
    udp_port = free_udp_port()
    other = Mosquitto(tmp_path / "other-broker").start()
    other_observer = Observer(other.port)
    home_observer = Observer(broker.port)

    async def scenario():
        first = server("server", broker, tmp_path, udp_port)
        await first.start()
        wk = worker(tmp_path, udp_port, follow_after=0.3)
        await asyncio.wait_for(wk.start(), 15)
        assert await wk.bus.wait_connected(10)
        discovery = wk.plugin("discovery")
        second = server("server2", other, tmp_path, udp_port)
        await second.start()

        await asyncio.to_thread(broker.stop)
        await wait_until(lambda: wk.broker.url == other.url and wk.bus.connected, timeout=30,
                         what="followed the other broker")
        await asyncio.to_thread(other_observer.wait_for, "picluster/nodes/wk/status", "online", 10)
        followed = (discovery.switches, list(discovery.earlier))

        mark = len(home_observer.messages)
        await asyncio.to_thread(broker.start)
        await wait_until(lambda: wk.broker.url == broker.url and wk.bus.connected, timeout=30, what="went back")
        online = await asyncio.to_thread(home_observer.wait_for, "picluster/nodes/wk/status", "online", 15, mark)
        info = json.loads((await asyncio.to_thread(home_observer.wait_for, "picluster/nodes/wk/info", None, 15,
                                                   mark)).payload)
        # It left the other broker on purpose: its retained status there says so (no last will fires).
        left = await asyncio.to_thread(other_observer.wait_for, "picluster/nodes/wk/status", "offline", 10)
        result = followed, discovery.switches, list(discovery.earlier), online.payload, info["discovery"]
        assert left.payload == b"offline"
        await wk.shutdown()
        await second.shutdown()
        await first.shutdown()
        return result

    try:
        followed, switches, earlier, online, info = asyncio.run(scenario())
    finally:
        other_observer.close()
        home_observer.close()
        other.stop()
    assert followed == (1, [broker.url])
    assert switches == 2 and earlier == [] and online == b"online"
    assert info["server"] == "server" and info["broker"] == broker.url
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"now announces {other.url}: switching from {broker.url}" in m for m in messages)
    assert any(f"{broker.url} is announced again and reachable: going back to it from {other.url}" in m
               for m in messages)


def test_insecure_a_worker_redirected_during_an_outage_comes_back(broker, tmp_path, caplog):
    """`insecure: true` (a desk): anyone can redirect the worker while its broker is away; it still goes
    back once the server announces its broker again and the broker answers, while the other keeps
    announcing itself. Both plugins say at start-up that discovery is not signed."""
    caplog.set_level(logging.INFO)
    udp_port = free_udp_port()
    intruder = Mosquitto(tmp_path / "intruder-broker").start()
    insecure = {"secret": None, "insecure": True}

    async def scenario():
        first = server("server", broker, tmp_path, udp_port, **insecure)
        await first.start()
        wk = worker(tmp_path, udp_port, follow_after=0.3, **insecure)
        await asyncio.wait_for(wk.start(), 15)
        assert await wk.bus.wait_connected(10)
        stop = asyncio.Event()

        async def intrude():
            while not stop.is_set():
                send(udp_port, encode(announcement_for(intruder.port, server="intruder")))
                await asyncio.sleep(0.2)

        intrusion = asyncio.create_task(intrude())
        await asyncio.to_thread(broker.stop)
        await wait_until(lambda: wk.broker.url == intruder.url and wk.bus.connected, timeout=30, what="redirected")
        await asyncio.to_thread(broker.start)
        await wait_until(lambda: wk.broker.url == broker.url and wk.bus.connected, timeout=30, what="came back")
        await asyncio.sleep(1.0)  # the intruder goes on announcing: the worker stays where it is
        result = wk.broker.url, wk.bus.connected, wk.plugin("discovery").switches
        stop.set()
        await intrusion
        await wk.shutdown()
        await first.shutdown()
        return result

    try:
        final_broker, connected, switches = asyncio.run(scenario())
    finally:
        intruder.stop()
    assert final_broker == broker.url and connected and switches == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("discovery is not signed (insecure: true): any host on the LAN can redirect this node" in m
               for m in warnings), warnings
    assert any("announce: discovery is not signed (insecure: true)" in m for m in warnings), warnings


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
        for _ in range(3):  # not even worth a query: another cluster's
            send(udp_port, encode(announcement_for(1883, cluster="neighbours"), SECRET))
        try:
            await starting
        except Exception as exc:  # DaemonError: no valid announcement within the timeout
            error = exc
        await worker.shutdown()
        return error, worker.plugin("discovery")

    error, discovery = asyncio.run(scenario())
    assert "no valid server announcement within 1.5 s" in str(error)
    assert discovery.accepted == 0 and discovery.queries == 0
    assert any("another cluster" in k for k in discovery.rejected)


def test_a_node_waiting_for_its_server_stops_on_sigterm(tmp_path):
    from tests.support.control_plane import config_mapping
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


# ---------------------------------------------------------------- configuration: signed unless said otherwise

def config_check(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pidaemon", "config", "check", str(path)], capture_output=True,
                          text=True)


ROLE_FILE = """\
node:
  role: {role}
  id: node-1
mqtt:
  broker: {broker}
plugins:
  ping: {{}}
  {plugin}:
    required: true
{extra}"""


def role_file(tmp_path, plugin: str, extra: str = "", name: str = "role.yaml"):
    broker = "null" if plugin == "discovery" else "mqtt://127.0.0.1:1883"
    role = "worker" if plugin == "discovery" else "server"
    path = tmp_path / name
    path.write_text(ROLE_FILE.format(role=role, broker=broker, plugin=plugin, extra=extra))
    return path


def test_config_check_refuses_discovery_with_neither_a_secret_nor_insecure(tmp_path):
    for plugin in ("discovery", "announce"):
        path = role_file(tmp_path, plugin, name=f"{plugin}.yaml")
        result = config_check(path)
        assert result.returncode == 2, result
        first = result.stderr.splitlines()[0]
        assert first.startswith(f"{path}:8: plugins.{plugin}.secret_file: missing: discovery is signed"), first
        for hint in ("secret_file: /etc/pidaemon/cluster-secret", "openssl rand -hex 32 >", "chmod 600",
                     "on the server and on every node", "insecure: true"):
            assert hint in first, (hint, first)


def test_config_check_refuses_contradictory_or_weak_signing_settings(tmp_path):
    cases = {
        "    secret: 0123456789abcdef0123\n    secret_file: /etc/pidaemon/cluster-secret\n":
            ":11: plugins.discovery.secret_file: give secret or secret_file, not both",
        "    insecure: true\n    secret_file: /etc/pidaemon/cluster-secret\n":
            ":10: plugins.discovery.insecure: true, but a secret is configured too",
        "    secret: short\n": ":10: plugins.discovery.secret: too short: at least 16 characters",
        "    insecure: yes please\n": ":10: plugins.discovery.insecure: expected true or false",
    }
    for i, (extra, expected) in enumerate(cases.items()):
        path = role_file(tmp_path, "discovery", extra, name=f"case{i}.yaml")
        result = config_check(path)
        assert result.returncode == 2 and f"{path}{expected}" in result.stderr, (extra, result.stderr)
        assert result.stderr.count(f"{path}:") == 1, result.stderr  # one problem, reported once


def test_config_check_accepts_insecure_and_a_secret_file_it_does_not_read(tmp_path):
    """The role file is checked where it is written; the secret file lives on the nodes: config check
    does not read it, the plugin does when it starts, and says what to do when it is missing."""
    insecure = role_file(tmp_path, "discovery", "    insecure: true\n", name="desk.yaml")
    absent = tmp_path / "no-such-dir" / "cluster-secret"
    signed = role_file(tmp_path, "discovery", f"    secret_file: {absent}\n", name="signed.yaml")
    for path in (insecure, signed):
        result = config_check(path)
        assert result.returncode == 0 and result.stdout.strip() == f"{path}: ok", result
    missing = creation_error(tmp_path, absent)
    assert 'required plugin "discovery" failed' in missing and f"cannot read {absent}" in missing, missing
    assert "openssl rand -hex 32" in missing, missing
    short = tmp_path / "short-secret"
    short.write_text("tiny\n")
    assert f"secret_file {short} holds a secret too short (at least 16 characters)" in creation_error(tmp_path, short)


def creation_error(tmp_path, secret_file) -> str:
    node = daemon("wk", None, tmp_path / "wk", plugins={"discovery": {"secret_file": str(secret_file),
                                                                      "required": True}})
    with pytest.raises(DaemonError) as failure:
        node.load_plugins()
    return str(failure.value)


def test_a_secret_file_others_can_read_is_used_with_a_warning(tmp_path, caplog):
    loose = tmp_path / "cluster-secret"
    loose.write_text(SECRET + "\n")
    loose.chmod(0o644)
    node = daemon("wk", None, tmp_path / "wk", plugins={"discovery": {"secret_file": str(loose), "required": True}})
    node.load_plugins()
    assert node.plugin("discovery").secret == SECRET
    assert any(f"discovery: secret_file {loose} is readable by others (mode 644)" in r.getMessage()
               for r in caplog.records)
    loose.chmod(0o600)
    caplog.clear()
    daemon("wk2", None, tmp_path / "wk2", plugins={"discovery": {"secret_file": str(loose)}}).load_plugins()
    assert not any("readable by others" in r.getMessage() for r in caplog.records)
