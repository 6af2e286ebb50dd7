"""How long the command line takes to start, against a bare `python -c pass` measured in the same run.

    python bench/cli_bench.py [--runs 20]

Prints the median and the best wall time of each command, and its ratio to
`python -c pass`.  Commands that would reach a broker are not measured
(their time is the network's); `status --help` and `submit --help` build
the same parsers their commands do.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = [
    ("python -c pass", [sys.executable, "-c", "pass"]),
    ("pidaemon --help", [sys.executable, "-m", "pidaemon", "--help"]),
    ("pidaemon status --help", [sys.executable, "-m", "pidaemon", "status", "--help"]),
    ("pidaemon warble run 'PRINT(1)'", [sys.executable, "-m", "pidaemon", "warble", "run", "PRINT(1)"]),
    ("pidaemon warble run --in-process 'PRINT(1)'",
     [sys.executable, "-m", "pidaemon", "warble", "run", "--in-process", "PRINT(1)"]),
    ("pidaemon config check config/worker.yaml", [sys.executable, "-m", "pidaemon", "config", "check",
                                                   "config/worker.yaml"]),
]


def timed(command: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    baseline = None
    print(f"command start-up, {args.runs} runs each (wall time; median, best; ratio of the medians to python -c pass)")
    for name, command in COMMANDS:
        times = timed(command, args.runs)
        median = statistics.median(times)
        baseline = baseline or median
        print(f"  {name:45s} median {median * 1000:6.1f} ms  best {min(times) * 1000:6.1f} ms  "
              f"{median / baseline:5.1f}x")


if __name__ == "__main__":
    main()
