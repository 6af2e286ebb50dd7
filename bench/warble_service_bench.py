"""End-to-end Warble throughput and latency: client -> mosquitto -> server -> 4 workers -> client.

    python bench/warble_service_bench.py [--jobs 2000] [--workers 4] [--rate 50]

Starts mosquitto (with config/mosquitto.conf), a server process and worker
processes, then measures
- throughput: `--jobs` trivial programs (PRINT(1)) submitted at once, time to the last result;
- latency p50/p99: programs submitted one at a time at `--rate` per second (not saturated);
- per-job overhead: the same program run directly through the isolating runner, in this process.
Goals (issue "The Warble service"): over 300 Warbles per second, p99 under 50 ms when not saturated.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import socket
import subprocess
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pidaemon.warble import Runner  # noqa: E402
from tests.support.warble_cluster import server_config, worker_config  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402
from tests.support.nodes import start_node_process, write_config  # noqa: E402
from tests.support.observer import Observer  # noqa: E402


class Client:
    def __init__(self, port: int):
        self.sent: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.lock = threading.Lock()
        self.all_done = threading.Event()
        self.expected = 0
        self.failed = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-client")
        ready = threading.Event()
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        # Measure the cluster, not this client's Nagle delays (paho leaves TCP_NODELAY off).
        self.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.subscribe("picluster/warble/results/+", 1)
        self.client.loop_start()
        ready.wait(10)

    def _on_message(self, client, userdata, message):
        now = time.perf_counter()
        answer = json.loads(message.payload)
        if answer["status"] in ("queued", "dispatched", "running"):  # progress, not the result
            return
        with self.lock:
            self.done[answer["id"]] = now
            if answer["status"] != "ok":
                self.failed += 1
            if len(self.done) >= self.expected:
                self.all_done.set()

    def submit(self, job_id: str, user: str) -> None:
        self.sent[job_id] = time.perf_counter()
        self.client.publish("picluster/warble/submit",
                            json.dumps({"id": job_id, "user": user, "source": "PRINT(1)"}), qos=1)

    def reset(self, expected: int) -> None:
        with self.lock:
            self.sent.clear()
            self.done.clear()
            self.expected = expected
            self.failed = 0
            self.all_done.clear()


async def watch_stalls(stalls: list, tick: float = 0.01, report_over: float = 0.02) -> None:
    """Record (time, seconds) whenever this event loop woke up more than `report_over` late."""
    import asyncio
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        await asyncio.sleep(tick)
        now = loop.time()
        if now - last - tick > report_over:
            stalls.append((time.time(), now - last - tick))
        last = now


def host_workers(count: int, broker_url: str, slots: int, runner_jobs: int, jobs_per_child: int) -> None:
    """`--host-workers N`: N simulated workers on one event loop, sharing one sandboxed runner."""
    import asyncio

    from pidaemon.config import config_from_mapping
    from pidaemon.daemon import Daemon
    from pidaemon.logs import setup_logging
    from pidaemon.plugins import PluginCatalog
    from pidaemon.sim import simulated_facts
    from pidaemon.warble import Limits

    setup_logging("warning")
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    state = Path(tempfile.mkdtemp(prefix="pidaemon-bench-workers-"))

    async def run() -> None:
        catalog = PluginCatalog()
        runner = Runner(Limits(), max_jobs=runner_jobs, jobs_per_child=jobs_per_child)
        await asyncio.to_thread(runner.start)
        workers = []
        for i in range(1, count + 1):
            node_id = f"scale-{i:04d}"
            data = {"node": {"role": "worker", "id": node_id, "state_dir": str(state / node_id)},
                    "mqtt": {"broker": broker_url, "keepalive": 30, "reconnect": {"min_delay": 0.2, "max_delay": 5}},
                    "plugins": {"ping": {}, "warble_worker": {"slots": slots}}}
            config = config_from_mapping(data, plugin_schema=catalog.schema)
            workers.append(Daemon(config, catalog=catalog, facts=simulated_facts(i, node_id), lend=[runner]))
        for worker in workers:
            await worker.start()
        stalls: list[tuple[float, float]] = []
        watcher = asyncio.ensure_future(watch_stalls(stalls))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        watcher.cancel()
        print(json.dumps({"stalls": stalls}), flush=True)   # read by main() for its report
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.to_thread(runner.close)

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--jobs-per-child", type=int, default=100,
                        help="programs per sandbox process (the worker's jobs_per_child; 1 = fork per program)")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--latency-jobs", type=int, default=300)
    parser.add_argument("--sim-workers", type=int, default=0, metavar="N",
                        help="instead of worker processes: N simulated workers in one process, one shared runner")
    parser.add_argument("--ping-interval", type=float, default=5, help="the registry's health pings, seconds")
    parser.add_argument("--host-workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host_workers:
        return host_workers(args.host_workers, args.broker, args.slots, runner_jobs=4,
                            jobs_per_child=args.jobs_per_child)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if args.sim_workers and soft < 20000:  # mosquitto, started from here, needs a socket per worker
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(20000, hard), hard))
    work = Path(tempfile.mkdtemp(prefix="pidaemon-warble-bench-"))
    broker = Mosquitto(work / "broker", cluster_config=ROOT / "config" / "mosquitto.conf").start()
    state = work / "server"
    state.mkdir()
    server = server_config("server", broker.url, state, per_user_rate=1e6, per_user_burst=10**6,
                           per_user_queued=10**6, slots_per_worker=args.slots)
    server["logging"] = {"level": "warning"}
    server["plugins"]["registry"].update(ping_interval=args.ping_interval, publish_delay=1)  # the cluster's pace, not a test's
    processes = [start_node_process(write_config(work / "server.yaml", server))]
    if args.sim_workers:
        args.workers = args.sim_workers
        host = subprocess.Popen([sys.executable, __file__, "--host-workers", str(args.sim_workers),
                                 "--broker", broker.url, "--slots", str(args.slots),
                                 "--jobs-per-child", str(args.jobs_per_child)], stdout=subprocess.PIPE)
        processes.append(host)
    else:
        for i in range(1, args.workers + 1):
            worker = worker_config(f"worker-{i}", broker.url, slots=args.slots)
            worker["plugins"]["warble_worker"]["jobs_per_child"] = args.jobs_per_child
            worker["logging"] = {"level": "warning"}
            processes.append(start_node_process(write_config(work / f"worker-{i}.yaml", worker)))
    observer = Observer(broker.port, topics=["picluster/registry"])
    client = Client(broker.port)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the registry lists every worker online
            registry = [json.loads(m.payload) for m in observer.messages if m.topic == "picluster/registry"]
            if registry and registry[-1]["counts"]["online"] >= args.workers + 1:
                break
            time.sleep(0.2)

        client.reset(50)  # warm-up
        for i in range(50):
            client.submit(f"warm-{i}", f"u{i % 5}")
        client.all_done.wait(60)

        client.reset(args.jobs)
        t0 = time.perf_counter()
        for i in range(args.jobs):
            client.submit(f"tp-{i}", f"u{i % 5}")
        finished = client.all_done.wait(300)
        elapsed = time.perf_counter() - t0
        completed, failed = len(client.done), client.failed
        throughput = completed / elapsed

        client.reset(args.latency_jobs)
        latency_window = [time.time(), None]
        for i in range(args.latency_jobs):
            client.submit(f"lat-{i}", f"u{i % 5}")
            time.sleep(1 / args.rate)
        client.all_done.wait(60)
        latency_window[1] = time.time()
        latencies = sorted((client.done[j] - client.sent[j]) * 1000 for j in client.done)
    finally:
        observer.close()
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(20)
        broker.stop()

    host_stalls = None
    if args.sim_workers:
        lines = host.stdout.read().decode().splitlines()
        stalls = json.loads(lines[-1])["stalls"] if lines else []
        host_stalls = [s for t, s in stalls if latency_window[0] <= t <= latency_window[1]]
    with Runner(jobs_per_child=args.jobs_per_child) as runner:
        runner.run("PRINT(1)")
        direct = []
        for _ in range(200):
            t = time.perf_counter()
            runner.run("PRINT(1)")
            direct.append((time.perf_counter() - t) * 1000)
    direct.sort()
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]
    where = ("in one process sharing one runner (4 jobs at once)" if args.sim_workers
             else "each its own process")
    print(f"cluster: mosquitto, 1 server process, {args.workers} workers x {args.slots} slots {where}, "
          f"{args.jobs_per_child} programs per sandbox process, on this machine")
    print(f"throughput: {completed}/{args.jobs} results in {elapsed:.2f} s = {throughput:.0f} Warbles/s "
          f"(goal > 300){'' if finished else '  [INCOMPLETE]'}; not ok: {failed}")
    print(f"latency at {args.rate:g}/s ({len(latencies)} jobs): p50 {p50:.1f} ms, p99 {p99:.1f} ms (goal p99 < 50)")
    if host_stalls is not None:
        print(f"the simulated workers' shared process during the latency run: {len(host_stalls)} event-loop "
              f"stalls over 20 ms, longest {max(host_stalls, default=0) * 1000:.0f} ms")
    print(f"direct runner, same program: p50 {statistics.median(direct):.1f} ms, "
          f"p99 {direct[int(0.99 * (len(direct) - 1))]:.1f} ms; per-job overhead of the service at p50: "
          f"{p50 - statistics.median(direct):.1f} ms ({p50 / statistics.median(direct):.1f}x the direct run)")


if __name__ == "__main__":
    main()
