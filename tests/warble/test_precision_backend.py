"""SETPRECISION with and without GMP: mpmath uses gmpy2 by itself when it is installed.

The results must not depend on the backend; the sandbox must use the same
backend as its caller, have mpmath loaded (by the zygote) before any job, and
report a program that runs out of memory inside GMP as out of memory.
Warble itself loads mpmath only for SETPRECISION.
"""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from pidaemon.warble import Limits, Runner
from pidaemon.warble.precision import mpmath_backend
from tests.support.warble_builtins import MEMORY_LEFT, MPMATH_BACKEND

HAS_GMPY2 = importlib.util.find_spec("gmpy2") is not None

PRECISION_PROGRAMS = [
    "SETPRECISION(1000);s=0;FOR(k=0;k<835;k++){s+=1/16^k*(4/(8*k+1)-2/(8*k+4)-1/(8*k+5)-1/(8*k+6))};PRINT(s)",
    "SETPRECISION(50);PRINT(2*ACOS(0))",
    "SETPRECISION(100);PRINT(SQRT(2), EXP(1), LN(10), SIN(1), COS(1), TAN(1))",
    "SETPRECISION(60);PRINT(ASIN(0.5), ATAN(1), ATAN2(1, 2), LOG(8, 2), LOG(1000), 2^0.5, POW(3, -2))",
    "SETPRECISION(30);x=1/3;PRINT(ROUND(x, 5), FLOOR(-x), CEIL(x*100), ROUND(2.5), ABS(-x), MIN(x, 0.3))",
    'SETPRECISION(40);SAVE("p", 1/7);PRINT(LOAD("p")*7, "x="+1/7)',
    "SETPRECISION(25);PRINT(RANDOM(), RANDOM())",
    "SETPRECISION(50);PRINT(2.0^100000, 10^-30)",
    "SETPRECISION(10000);PRINT(EXP(1))",
    "SETPRECISION(20);PRINT(SQRT(-1))",
    "SETPRECISION(20);PRINT(1/0)",
    "SETPRECISION(20);x=EXP(10^6)",
    "SETPRECISION(10001)",
    "x=0.1;SETPRECISION(30);PRINT(x, 0.1, x+0.1)",
]

RUN_BOTH = textwrap.dedent("""
    import json, sys
    from pidaemon.warble import Limits, MemoryStore, Runner, compile_program
    from pidaemon.warble.precision import mpmath_backend
    programs = json.loads(sys.stdin.read())
    def show(r):
        return [r.status, r.output, r.error and r.error.to_dict(), r.steps]
    in_process = [show(compile_program(p).run(seed=7, store=MemoryStore())) for p in programs]
    with Runner(Limits()) as runner:
        sandboxed = [show(runner.run(p, seed=7, store=MemoryStore())) for p in programs]
    print(json.dumps({"backend": mpmath_backend(), "in_process": in_process, "runner": sandboxed}))
""")


def results_with(nogmpy: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MPMATH_NOGMPY"}
    if nogmpy:
        env["MPMATH_NOGMPY"] = "1"
    done = subprocess.run([sys.executable, "-c", RUN_BOTH], input=json.dumps(PRECISION_PROGRAMS), env=env,
                          capture_output=True, text=True, timeout=240, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(not HAS_GMPY2, reason="gmpy2 is not installed")
def test_the_same_results_with_and_without_gmp():
    with_gmp, without = results_with(nogmpy=False), results_with(nogmpy=True)
    assert (with_gmp["backend"], without["backend"]) == ("gmpy", "python")
    for i, program in enumerate(PRECISION_PROGRAMS):
        assert with_gmp["in_process"][i] == without["in_process"][i], program
        assert with_gmp["runner"][i] == without["runner"][i] == with_gmp["in_process"][i], program
    assert with_gmp["in_process"][0][1][0].startswith("3.14159265358979323846264338327950288419716939937510582097")


def test_the_sandbox_computes_with_the_callers_backend():
    with Runner(Limits()) as runner:
        # before any SETPRECISION: the zygote loaded mpmath (and gmpy2) before it forked the child
        assert runner.run("PRINT(MPMATH_BACKEND())", builtins=[MPMATH_BACKEND]).output == [mpmath_backend()]


def test_mpmath_nogmpy_reaches_the_sandbox(monkeypatch):
    """MPMATH_NOGMPY=1 (mpmath's own switch) turns GMP off in the sandbox too, not only in the caller."""
    monkeypatch.setenv("MPMATH_NOGMPY", "1")
    with Runner(Limits()) as runner:
        assert runner.run("PRINT(MPMATH_BACKEND())", builtins=[MPMATH_BACKEND]).output == ["python"]


def test_a_precision_job_has_its_whole_memory_allowance():
    """mpmath and gmpy2 are mapped before the fork: a job does not pay for loading them."""
    limits = Limits(memory_mb=64)
    with Runner(limits, jobs_per_child=1) as runner:
        plain = runner.run("PRINT(MEMORY_LEFT())", builtins=[MEMORY_LEFT])
        precise = runner.run("SETPRECISION(1000);x=2*ACOS(0);PRINT(MEMORY_LEFT())", builtins=[MEMORY_LEFT])
    assert plain.status == precise.status == "ok"
    assert float(plain.output[0]) - float(precise.output[0]) < 3


def test_running_out_of_memory_during_setprecision_is_a_memory_limit():
    """GMP aborts the process when an allocation fails; under the sandbox's RLIMIT_AS that is out of memory."""
    limits = Limits(max_precision=10**9, memory_mb=64)
    with Runner(limits) as runner:
        result = runner.run("PRINT(1);SETPRECISION(10^8);PRINT(SQRT(2))")
        assert (result.status, result.output) == ("memory_limit", ["1"])
        assert "out of memory" in result.error.message
        assert runner.run("PRINT(2)").output == ["2"]


def test_warble_loads_mpmath_only_for_setprecision():
    """mpmath (with gmpy2) is most of Warble's import time: a program without SETPRECISION does not load it."""
    code = textwrap.dedent("""
        import sys
        import pidaemon
        before = set(sys.modules)
        import pidaemon.warble.cli, pidaemon.warble.runner
        from pidaemon.warble import MemoryStore, compile_program
        result = compile_program('x=SQRT(2);SAVE("k",x);PRINT(x, "a"+LOAD("k"))').run(store=MemoryStore())
        assert result.output == ["1.4142135623730951 a1.4142135623730951"], result
        loaded = set(sys.modules) - before
        print(sorted(m for m in ("mpmath", "gmpy2", "sqlite3", "ctypes", "yaml") if m in loaded))
        assert compile_program("SETPRECISION(20);PRINT(1/3)").run().output == ["0.33333333333333333333"]
        print("mpmath" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.splitlines() == ["[]", "True"]
