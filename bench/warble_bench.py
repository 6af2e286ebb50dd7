"""Warble benchmark: the same computations as Warble and as plain Python.

    python bench/warble_bench.py

Prints, per workload, the best of several runs of the compiled Warble
program (in-process, all safety checks on, default limits) and of the
equivalent plain Python, measured alternately, their ratio, and the best of
three runs through the child-process runner; then the runner's latency for a
trivial program; then digits of pi through the runner with mpmath on GMP
(gmpy2) and without it (the same programs in a subprocess with
MPMATH_NOGMPY=1), and the start-up of `pidaemon warble run 'PRINT(1)'`.
Not a test: timings depend on the machine and its load.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import mpmath  # noqa: E402

from pidaemon.warble import Limits, Runner, compile_program  # noqa: E402
from pidaemon.warble.precision import mpmath_backend  # noqa: E402

BBP = "s=0;FOR(k=0;k<1000;k++){s+=1/16^k*(4/(8*k+1)-2/(8*k+4)-1/(8*k+5)-1/(8*k+6))};PRINT(s)"
NESTED = "s=0;FOR(i=0;i<1000;i++){FOR(j=0;j<1000;j++){s+=i*j%7}};PRINT(s)"
WHILE = "s=0;i=0;WHILE(i<1000000){s+=i%7;i++};PRINT(s)"
LEIBNIZ = "s=0;t=1.0;FOR(k=0;k<1000000;k++){s+=t/(2*k+1);t=-t};PRINT(4*s)"
PI1000 = ("SETPRECISION(1000);s=0;FOR(k=0;k<835;k++){s+=1/16^k*(4/(8*k+1)-2/(8*k+4)-1/(8*k+5)-1/(8*k+6))};"
          "PRINT(s)")
PI10000 = ("SETPRECISION(10000);s=0;FOR(k=0;k<8300;k++){s+=1/16^k*(4/(8*k+1)-2/(8*k+4)-1/(8*k+5)-1/(8*k+6))};"
           "PRINT(s)")
PI_ACOS = "SETPRECISION(10000);PRINT(2*ACOS(0))"


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


PI_WORKLOADS = [          # name, program, runs (each in a fresh sandbox: mpmath's caches start empty)
    ("1000 digits of pi, BBP, 835 terms", PI1000, 5),
    ("10000 digits of pi, BBP, 8300 terms", PI10000, 2),
    ("10000 digits of pi, 2*ACOS(0)", PI_ACOS, 3),
]
LEADERBOARD_DIGITS = 100_000


def pi_figures() -> dict:
    """Seconds for each pi workload through the runner, with this process's mpmath backend."""
    figures = {"backend": mpmath_backend()}
    with Runner(Limits()) as runner:
        runner.run("PRINT(0)")
        for name, source, runs in PI_WORKLOADS:
            result = runner.run(source)
            if result.status != "ok" or not result.output[0].startswith("3.14159265358979323846"):
                raise SystemExit(f"{name}: {result.status} {result.error}")
            figures[name] = best(lambda: runner.run(source), runs)
    # what plugins/warble/leaderboard.py computes once in the server, as a reference for scores
    t = time.perf_counter()
    with mpmath.workdps(LEADERBOARD_DIGITS + 20):
        mpmath.nstr(mpmath.pi, LEADERBOARD_DIGITS + 10, strip_zeros=False)
    figures["leaderboard"] = time.perf_counter() - t
    return figures


def print_pi_figures() -> None:
    mine = pi_figures()
    env = dict(os.environ, MPMATH_NOGMPY="1")
    if mine["backend"] == "gmpy":
        done = subprocess.run([sys.executable, __file__, "--pi-figures"], env=env, capture_output=True,
                              text=True, check=True)
        gmpy, python = mine, json.loads(done.stdout)
    else:
        gmpy, python = None, mine
    print()
    if gmpy is None:
        print("digits of pi through the runner (gmpy2 is not installed: mpmath's python backend only):")
    else:
        print("digits of pi through the runner, mpmath on GMP (gmpy2) and without it (MPMATH_NOGMPY=1):")
    header = f"{'workload':40} {'gmpy':>10} {'python':>10} {'speed-up':>9}"
    print(header)
    print("-" * len(header))
    rows = [(name, name) for name, _, _ in PI_WORKLOADS]
    rows.append((f"leaderboard's {LEADERBOARD_DIGITS} digits (mpmath.pi)", "leaderboard"))
    for label, key in rows:
        slow = python[key]
        if gmpy is None:
            print(f"{label:40} {'-':>10} {slow * 1000:8.1f}ms")
        else:
            fast = gmpy[key]
            print(f"{label:40} {fast * 1000:8.1f}ms {slow * 1000:8.1f}ms {slow / fast:8.1f}x")


def print_startup(runs: int = 20) -> None:
    """Wall time of the command-line run of a trivial program, against a bare interpreter."""
    commands = [("python -c pass", ["-c", "pass"]),
                ("pidaemon warble run 'PRINT(1)'", ["-m", "pidaemon", "warble", "run", "PRINT(1)"]),
                ("  the same with --in-process", ["-m", "pidaemon", "warble", "run", "--in-process", "PRINT(1)"])]
    print()
    print(f"start-up, {runs} runs each (median):")
    for label, args in commands:
        times = []
        for _ in range(runs + 1):
            t = time.perf_counter()
            subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, check=True)
            times.append(time.perf_counter() - t)
        print(f"  {label:34} {statistics.median(times[1:]) * 1000:6.1f} ms")


def main() -> None:
    if sys.argv[1:] == ["--pi-figures"]:
        print(json.dumps(pi_figures()))
        return
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"mpmath backend {mpmath_backend()}")
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
    print_pi_figures()
    print_startup()


if __name__ == "__main__":
    main()
