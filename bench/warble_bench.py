"""Warble benchmark: the same computations as Warble and as plain Python.

    python bench/warble_bench.py

Prints, per workload, the best of several runs of the compiled Warble
program (in-process, all safety checks on, default limits) and of the
equivalent plain Python, measured alternately, their ratio, and the best of
three runs through the child-process runner; then the runner's latency for a
trivial program. Not a test: timings depend on the machine and its load.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mpmath  # noqa: E402

from pidaemon.warble import Limits, Runner, compile_program  # noqa: E402

BBP = "s=0;FOR(k=0;k<1000;k++){s+=1/16^k*(4/(8*k+1)-2/(8*k+4)-1/(8*k+5)-1/(8*k+6))};PRINT(s)"
NESTED = "s=0;FOR(i=0;i<1000;i++){FOR(j=0;j<1000;j++){s+=i*j%7}};PRINT(s)"
WHILE = "s=0;i=0;WHILE(i<1000000){s+=i%7;i++};PRINT(s)"
LEIBNIZ = "s=0;t=1.0;FOR(k=0;k<1000000;k++){s+=t/(2*k+1);t=-t};PRINT(4*s)"
PI1000 = ("SETPRECISION(1000);s=0;FOR(k=0;k<835;k++){s+=1/16^k*(4/(8*k+1)-2/(8*k+4)-1/(8*k+5)-1/(8*k+6))};"
          "PRINT(s)")


def py_bbp():
    s = 0
    for k in range(1000):
        s += 1 / 16**k * (4 / (8 * k + 1) - 2 / (8 * k + 4) - 1 / (8 * k + 5) - 1 / (8 * k + 6))
    return [repr(s)]


def py_nested():
    s = 0
    for i in range(1000):
        for j in range(1000):
            s += i * j % 7
    return [str(s)]


def py_while():
    s = 0
    i = 0
    while i < 1000000:
        s += i % 7
        i += 1
    return [str(s)]


def py_leibniz():
    s = 0
    t = 1.0
    for k in range(1000000):
        s += t / (2 * k + 1)
        t = -t
    return [repr(4 * s)]


def py_pi1000():
    ctx = mpmath.MPContext()
    ctx.dps = 1000
    s = ctx.mpf(0)
    for k in range(835):
        s += ctx.fdiv(1, 16**k) * (ctx.fdiv(4, 8 * k + 1) - ctx.fdiv(2, 8 * k + 4)
                                   - ctx.fdiv(1, 8 * k + 5) - ctx.fdiv(1, 8 * k + 6))
    return [str(s)]


WORKLOADS = [
    ("pi by BBP, 1000 terms (float, 16^k)", BBP, py_bbp, 21),
    ("nested FOR loops, 10^6 integer steps", NESTED, py_nested, 9),
    ("WHILE loop, 10^6 integer steps", WHILE, py_while, 9),
    ("Leibniz series, 10^6 float steps", LEIBNIZ, py_leibniz, 9),
    ("1000 digits of pi, SETPRECISION(1000)", PI1000, py_pi1000, 5),
]


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def best_pair(warble, python, repeat: int) -> tuple[float, float]:
    """Best times of the two, measured alternately so that load on the machine hits both alike."""
    tw, tp = [], []
    for _ in range(repeat):
        tw.append(best(warble, 1))
        tp.append(best(python, 1))
    return min(tw), min(tp)


def latency(runner: Runner, runs: int, gap: float) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        if gap:
            time.sleep(gap)
        t = time.perf_counter()
        result = runner.run("PRINT(1)")
        times.append(time.perf_counter() - t)
        assert result.output == ["1"], result
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def main() -> None:
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"mpmath backend {mpmath.libmp.BACKEND}")
    print()
    limits = Limits()
    header = f"{'workload':40} {'Warble':>10} {'runner':>10} {'Python':>10} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    with Runner(limits) as runner:
        runner.run("PRINT(0)")
        for name, source, python, repeat in WORKLOADS:
            program = compile_program(source, limits=limits)
            result = program.run()
            expected = python()
            if result.status != "ok" or result.output != expected:
                raise SystemExit(f"{name}: Warble gave {result.status} {result.output[:1]}, Python {expected[:1]}")
            t_warble, t_python = best_pair(program.run, python, repeat)
            t_runner = best(lambda: runner.run(program), 3)
            print(f"{name:40} {t_warble * 1000:8.1f}ms {t_runner * 1000:8.1f}ms {t_python * 1000:8.1f}ms"
                  f" {t_warble / t_python:6.2f}x")
    print()
    print("runner latency for PRINT(1), 200 runs each (limits, kill timer; a sandbox process runs")
    print("up to jobs_per_child programs, 1 = a fresh process forked from the warm zygote per program):")
    for jobs_per_child in (100, 1):
        with Runner(limits, jobs_per_child=jobs_per_child) as runner:
            runner.run("PRINT(0)")
            for label, gap in (("back to back", 0.0), ("10 ms apart", 0.010)):
                median, p99 = latency(runner, 200, gap)
                print(f"  jobs_per_child {jobs_per_child:3}, {label:13} median {median * 1000:5.2f} ms   "
                      f"p99 {p99 * 1000:5.2f} ms")


if __name__ == "__main__":
    main()
