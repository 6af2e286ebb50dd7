"""Idle worker daemon: resident memory, CPU over a minute, and time from process start to `online`.

    python bench/daemon_bench.py [--seconds 60] [--starts 5]

Starts its own mosquitto on a free port.  Goals (issue "The daemon core"):
under 35 MB RSS, under 0.5 % of one core idle, online in under 1 s on a PC.
A bare `python -c pass` is measured in the same run as a baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.mosquitto import Mosquitto  # noqa: E402
from tests.support.nodes import node_config, write_config  # noqa: E402
from tests.support.observer import Observer  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_daemon(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pidaemon", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pidaemon-bench-"))
    broker = Mosquitto(work / "broker").start()
    observer = Observer(broker.port, topics=["picluster/nodes/+/status"])
    try:
        baseline = []
        for _ in range(args.starts):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            baseline.append(time.perf_counter() - t0)

        startups = []
        for i in range(args.starts):
            config = write_config(work / f"start{i}.yaml", node_config(f"bench-start-{i}", broker.url))
            mark = len(observer.messages)
            t0 = time.perf_counter()
            process = start_daemon(config)
            observer.wait_for(f"picluster/nodes/bench-start-{i}/status", "online", since=mark, timeout=30)
            startups.append(time.perf_counter() - t0)
            process.terminate()
            process.wait(10)

        config = work / "idle.yaml"
        write_config(config, {**node_config("bench-idle", broker.url), "plugins": {"ping": {}}})
        process = start_daemon(config)
        observer.wait_for("picluster/nodes/bench-idle/status", "online", timeout=30)
        time.sleep(2)  # let start-up work settle
        cpu0, t0 = cpu_seconds(process.pid), time.monotonic()
        time.sleep(args.seconds)
        cpu = (cpu_seconds(process.pid) - cpu0) / (time.monotonic() - t0)
        rss = rss_mb(process.pid)
        process.terminate()
        process.wait(10)
    finally:
        observer.close()
        broker.stop()

    start_median = statistics.median(startups)
    base_median = statistics.median(baseline)
    print(f"idle worker over {args.seconds:.0f} s: RSS {rss:.1f} MB (goal < 35), CPU {cpu * 100:.2f} % of one core "
          f"(goal < 0.5)")
    print(f"process start to online: median {start_median * 1000:.0f} ms, max {max(startups) * 1000:.0f} ms "
          f"over {args.starts} starts (goal < 1000 ms); bare `python -c pass`: {base_median * 1000:.0f} ms "
          f"(ratio {start_median / base_median:.1f}x)")


if __name__ == "__main__":
    main()
