"""Control plane at cluster scale: registration time and the server's CPU under telemetry.

    python bench/control_plane_bench.py                    # N = 100, then N = 1050
    python bench/control_plane_bench.py --workers 1050 --measure 60

For each N: a mosquitto of its own (started here, on a free port), the server
as its own process (`python -m pidaemon run`: ping, telemetry, system,
registry, telemetry_store, announce), and N simulated workers as Daemon objects
on one event loop in this process, each with ping, telemetry every 5 s and
discovery (no broker configured: they find it from the server's signed UDP
announcement on 127.255.255.255, one listening socket each, and confirm it
with a query to the server, from a second socket each).  A worker's
readings are a copy of one real `system` plugin sample (psutil), so payloads
have the real size without 1050 psutil calls every 5 s.

Reported:
  * registration: time from starting the workers until the server's registry
    has every worker `online` (from the per-node retained `health` messages the
    registry publishes on each change), and until the retained registry lists
    them all (that one is debounced by the registry's publish_delay);
  * the server's CPU at steady state, from /proc/<pid>/stat of the server
    process (user + system time over the measuring window), as a percentage of
    one core; mosquitto's and this process's too, for context.

Goal (issue "Control plane"): all 1050 registered within 10 s, the server
below 25 % of one core at steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt  # noqa: E402

from pidaemon import hookimpl  # noqa: E402
from pidaemon.config import config_from_mapping  # noqa: E402
from pidaemon.daemon import Daemon  # noqa: E402
from pidaemon.plugins import PluginCatalog  # noqa: E402
from pidaemon.sim import simulated_facts  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402
from tests.support.nodes import write_config  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SECRET = "bench-cluster-secret"  # at least 16 characters
PREFIX = "picluster"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def raise_fd_limit(needed: int) -> int:
    """Raise the soft limit to the hard one (mosquitto, started afterwards, inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            print(f"warning: cannot raise the file descriptor limit: {exc}", file=sys.stderr)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < needed:
        print(f"warning: file descriptor limit {soft} is below the ~{needed} this run needs", file=sys.stderr)
    return soft


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SampleReadings:
    """Bench-only plugin: the readings of one real `system` sample, copied for every simulated worker."""

    sample: dict = {}

    def __init__(self, node, config):
        self.readings = copy.deepcopy(self.sample)

    @hookimpl
    def pidaemon_telemetry(self, node):
        return self.readings


class StaticEntryPoint:
    def __init__(self, name, value):
        self.name, self.value, self.dist = name, value, None

    def load(self):
        return self.value


class Watcher:
    """An independent client: when did each worker's health say `online`, and when did the registry list all?"""

    def __init__(self, port: int, expected: set[str]):
        self.expected = set(expected)
        self.online_at: dict[str, float] = {}
        self.registry_complete_at: float | None = None
        self.store_received: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-watch-{os.getpid()}")
        self.client.on_connect = lambda c, *a: c.subscribe([(f"{PREFIX}/nodes/+/health", 1), (f"{PREFIX}/registry", 1),
                                                            (f"{PREFIX}/nodes/server/telemetry", 0)])
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 60)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        now = time.monotonic()
        if message.topic.endswith("/health") and message.payload:
            health = json.loads(message.payload)
            if health.get("state") == "online":
                with self.lock:
                    self.online_at.setdefault(health["node"], now)
        elif message.topic == f"{PREFIX}/registry" and self.registry_complete_at is None:
            nodes = json.loads(message.payload)["nodes"]
            if all(nodes.get(n, {}).get("state") == "online" for n in self.expected):
                self.registry_complete_at = now
        elif message.topic.endswith("/server/telemetry"):
            store = json.loads(message.payload)["readings"].get("telemetry_store", {})
            if "received" in store:
                with self.lock:
                    self.store_received.append((now, store["received"]))

    def all_online(self) -> bool:
        with self.lock:
            return self.expected <= set(self.online_at)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def server_config(work: Path, broker_url: str, udp_port: int) -> Path:
    data = {
        "node": {"role": "server", "id": "server", "state_dir": str(work / "server-state")},
        "mqtt": {"broker": broker_url, "prefix": PREFIX, "keepalive": 30, "queue_limit": 100000},
        "logging": {"level": "warning"},
        "plugins": {
            "ping": {},
            "telemetry": {"interval": 5},
            "system": {},
            "registry": {"db": str(work / "registry.sqlite3"), "ping_interval": 5, "missed_pings": 3},
            "telemetry_store": {"db": str(work / "telemetry.sqlite3")},
            "announce": {"port": udp_port, "targets": ["127.255.255.255"], "broker_host": "127.0.0.1",
                         "mdns": False, "secret": SECRET, "query_port": 0},
        },
    }
    (work / "server-state").mkdir(parents=True, exist_ok=True)
    return write_config(work / "server.yaml", data)


def make_workers(count: int, udp_port: int, work: Path, catalog: PluginCatalog) -> list[Daemon]:
    workers = []
    for i in range(1, count + 1):
        node_id = f"bench-{i:04d}"
        data = {
            "node": {"role": "worker", "id": node_id, "state_dir": str(work / "worker-state")},
            "mqtt": {"broker": None, "prefix": PREFIX, "keepalive": 30,
                     "reconnect": {"min_delay": 0.5, "max_delay": 10}},
            "lifecycle": {"startup_timeout": 120},
            "plugins": {"ping": {}, "telemetry": {"interval": 5}, "bench_readings": {},
                        "discovery": {"port": udp_port, "mdns": False, "secret": SECRET, "timeout": 120}},
        }
        config = config_from_mapping(data, origin=f"<bench {node_id}>", plugin_schema=catalog.schema)
        workers.append(Daemon(config, catalog=catalog, facts=simulated_facts(i, node_id)))
    return workers


async def run_one(count: int, measure: float, settle: float, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    (work / "worker-state").mkdir(exist_ok=True)
    broker = Mosquitto(work / "broker", extra="max_connections -1\n").start()
    udp_port = free_udp_port()
    server = subprocess.Popen([sys.executable, "-m", "pidaemon", "run", "--config",
                               str(server_config(work, broker.url, udp_port))],
                              stdout=open(work / "server.log", "wb"), stderr=subprocess.STDOUT)
    catalog = PluginCatalog()
    catalog.entry_points["bench_readings"] = StaticEntryPoint("bench_readings", SampleReadings)
    names = {f"bench-{i:04d}" for i in range(1, count + 1)}
    watcher = Watcher(broker.port, names)
    workers: list[Daemon] = []
    try:
        t_build = time.monotonic()
        workers = make_workers(count, udp_port, work, catalog)
        build_time = time.monotonic() - t_build
        await asyncio.sleep(1.0)  # the server process is up and announcing
        t0 = time.monotonic()
        await asyncio.gather(*(w.start() for w in workers))
        started = time.monotonic() - t0
        deadline = t0 + 120
        while not watcher.all_online() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        with watcher.lock:
            registered = len(names & set(watcher.online_at))
            last_online = max((watcher.online_at[n] for n in names if n in watcher.online_at), default=None)
        registration = (last_online - t0) if registered == count else None
        while watcher.registry_complete_at is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        registry_time = watcher.registry_complete_at - t0 if watcher.registry_complete_at else None

        await asyncio.sleep(settle)
        proc_self = os.getpid()
        c_server, c_broker, c_self = cpu_seconds(server.pid), cpu_seconds(broker.process.pid), cpu_seconds(proc_self)
        w0 = time.monotonic()
        await asyncio.sleep(measure)
        elapsed = time.monotonic() - w0
        server_cpu = (cpu_seconds(server.pid) - c_server) / elapsed * 100
        broker_cpu = (cpu_seconds(broker.process.pid) - c_broker) / elapsed * 100
        self_cpu = (cpu_seconds(proc_self) - c_self) / elapsed * 100
        with watcher.lock:
            window = [(t, n) for t, n in watcher.store_received if t >= w0 - 5]
        rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]) if len(window) >= 2 else None
        rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{server.pid}/status").read_text().splitlines()
                      if line.startswith("VmRSS:"))
        return {"workers": count, "build_s": build_time, "start_calls_s": started, "registered": registered,
                "registration_s": registration, "registry_s": registry_time, "server_cpu": server_cpu,
                "broker_cpu": broker_cpu, "workers_process_cpu": self_cpu, "measure_s": elapsed,
                "telemetry_rate": rate, "server_rss_mb": rss_kb / 1024}
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        watcher.close()
        broker.stop()


def take_sample_readings(work: Path) -> dict:
    from pidaemon_plugins.system import SystemReadings

    class Node:
        state_dir = work

    system = SystemReadings(Node(), SystemReadings.config_schema.defaults())
    time.sleep(0.5)
    return system.readings()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[100, 1050], metavar="N")
    parser.add_argument("--measure", type=float, default=30, help="seconds of steady state measured")
    parser.add_argument("--settle", type=float, default=10, help="seconds after registration before measuring")
    args = parser.parse_args()
    fd_limit = raise_fd_limit(3 * max(args.workers) + 200)
    root = Path(tempfile.mkdtemp(prefix="pidaemon-cp-bench-"))
    SampleReadings.sample = take_sample_readings(root)
    payload = len(json.dumps({"node": "bench-0001", "time": time.time(), "seq": 1, "interval": 5,
                              "readings": SampleReadings.sample}))
    print(f"pidaemon control-plane bench: {os.cpu_count()} CPUs, fd limit {fd_limit}, "
          f"telemetry payload {payload} bytes, telemetry every 5 s, pings every 5 s")
    for count in args.workers:
        result = asyncio.run(run_one(count, args.measure, args.settle, root / f"n{count}"))
        reg = f"{result['registration_s']:.2f} s" if result["registration_s"] is not None else \
            f"NOT all registered ({result['registered']}/{count})"
        rega = f"{result['registry_s']:.2f} s" if result["registry_s"] is not None else "never"
        rate = f"{result['telemetry_rate']:.0f}" if result["telemetry_rate"] is not None else "?"
        print(f"N={count}: all registered (health online) after {reg}; retained registry complete after {rega} "
              f"(Daemon objects built in {result['build_s']:.2f} s before the clock started; "
              f"start() calls returned after {result['start_calls_s']:.2f} s)")
        print(f"N={count}: steady state over {result['measure_s']:.0f} s: server {result['server_cpu']:.1f} % of one "
              f"core (RSS {result['server_rss_mb']:.0f} MB), telemetry stored {rate} samples/s; "
              f"mosquitto {result['broker_cpu']:.1f} %, "
              f"the {count} workers' process {result['workers_process_cpu']:.1f} %")


if __name__ == "__main__":
    main()
