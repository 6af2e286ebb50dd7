"""Sandbox children run several jobs one after the other: per-job limits, clean state, replacement.

The PID, CPU_LEFT and MEMORY_LEFT built-ins (tests/support/warble_builtins.py) run inside
the child and report on its process.
"""
import os
import signal
import threading
import time

import pytest

from pidaemon.warble import Limits, Runner
from pidaemon.warble.zygote import RETIRE_GROWTH_MB
from tests.support.warble_builtins import CPU_LEFT, MEMORY_LEFT, PID


def pid_of_run(runner, source="", **kwargs) -> int:
    result = runner.run(source + ";PRINT(PID())" if source else "PRINT(PID())", builtins=[PID], **kwargs)
    return int(result.output[-1])


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_a_child_runs_jobs_per_child_jobs_then_is_replaced():
    with Runner(jobs_per_child=3) as runner:
        pids = [pid_of_run(runner) for _ in range(7)]
    assert pids[0] == pids[1] == pids[2]
    assert pids[3] == pids[4] == pids[5] != pids[2]
    assert pids[6] not in pids[:6]


def test_back_to_back_jobs_find_the_same_child_free():
    """The child says it is free before it sends its result, so the next job never waits for a fork."""
    with Runner(jobs_per_child=1000) as runner:
        pids = {pid_of_run(runner) for _ in range(200)}
    assert len(pids) == 1


def test_jobs_per_child_1_gives_every_job_a_fresh_process():
    with Runner(jobs_per_child=1) as runner:
        pids = [pid_of_run(runner) for _ in range(4)]
    assert len(set(pids)) == 4


@pytest.mark.parametrize("source, limits, status", [
    ("WHILE(1){}", Limits(max_number_digits=10**10, time_limit=0.5, kill_grace=0.1), "step_limit"),
    ("x=10^(10^8)", Limits(max_number_digits=10**10, time_limit=0.5, kill_grace=0.1), "timeout"),
    ('s="a";WHILE(1){s=s+s}', Limits(max_string_length=10**12, memory_mb=64), "memory_limit"),
])
def test_a_child_is_reused_only_after_a_job_that_ended_with_its_own_result(source, limits, status):
    with Runner(jobs_per_child=100) as runner:
        before = pid_of_run(runner)
        assert runner.run(source, limits=limits).status == status
        after = pid_of_run(runner)
    if status == "step_limit":       # an ordinary result: the child goes on
        assert after == before
    else:
        assert after != before


def left_before_and_after(limits, gauge, source):
    """Run `gauge` (a *_LEFT built-in), then `source`, then `gauge` again in one runner.

    Returns (pid, left, middle run) for the first gauge run and (pid, left) for the last.
    """
    reading = f"PRINT(PID(), {gauge.name}())"
    with Runner(limits, jobs_per_child=100) as runner:
        first, middle, second = [runner.run(src, builtins=[PID, gauge])
                                 for src in (reading, source + ";PRINT(PID())", reading)]
    pid1, left1 = first.output[0].split()
    pid2, left2 = second.output[0].split()
    return (pid1, left1, middle), (pid2, left2)


def test_each_job_gets_its_whole_cpu_allowance_in_a_reused_child():
    (pid1, left1, burn), (pid2, left2) = left_before_and_after(
        Limits(time_limit=2.0, max_steps=10**9), CPU_LEFT, "t=0;FOR(i=0;i<20000000;i++){t=t+i}")
    assert burn.status == "ok" and pid1 == burn.output[0] == pid2
    # time_limit + 1 s of slack, counted from the start of each job, not of the child
    assert float(left1) > 2.9 and float(left2) > 2.9


def test_each_job_gets_its_whole_memory_allowance_in_a_reused_child():
    (pid1, left1, grow), (pid2, left2) = left_before_and_after(
        Limits(memory_mb=64, max_string_length=10**8), MEMORY_LEFT, 's="a";FOR(i=0;i<24;i++){s=s+s}')
    assert grow.status == "ok" and pid1 == grow.output[0] == pid2
    # counted from the fresh child's size: what an earlier job left costs at most RETIRE_GROWTH_MB
    assert 60 <= float(left1) <= 64 and 64 - RETIRE_GROWTH_MB <= float(left2) <= 64


def test_a_reused_child_never_gives_a_job_more_memory_than_a_fresh_one():
    """Memory an earlier job freed but the allocator kept must not count as headroom."""
    limits = Limits(memory_mb=64, max_string_length=10**8)
    big = 'a="x"*28000000;b="y"*60000000;PRINT(PID())'      # 88 MB at once
    with Runner(limits, jobs_per_child=1) as fresh:
        alone = fresh.run(big, builtins=[PID])
    with Runner(limits, jobs_per_child=100) as reused:
        prep = reused.run('s="a"*30000000;s="";t="b"*29000000;PRINT(PID())', builtins=[PID])
        after = reused.run(big, builtins=[PID])
    assert alone.status == "memory_limit"
    assert prep.status == "ok" and after.status == "memory_limit"


def test_a_job_with_little_memory_leaves_the_child_able_to_take_the_next():
    """Between jobs the child waits for the next one without the last job's limits (a 4 MB read buffer)."""
    with Runner(jobs_per_child=100) as runner:
        tight = runner.run("PRINT(PID())", builtins=[PID], limits=Limits(memory_mb=3))
        after = runner.run("PRINT(PID())", builtins=[PID])
    assert (tight.status, after.status) == ("ok", "ok")
    assert tight.output == after.output


def test_random_numbers_are_not_shared_between_runs_in_one_child():
    with Runner(jobs_per_child=100) as runner:
        runs = [runner.run("PRINT(RANDOM());PRINT(PID())", builtins=[PID]).output for _ in range(3)]
    assert len({pid for _, pid in runs}) == 1 and len({draw for draw, _ in runs}) == 3


def test_a_child_that_ran_setprecision_is_replaced():
    """mpmath keeps process-wide caches (constants, series): a later job could time them."""
    with Runner(jobs_per_child=100) as runner:
        before = pid_of_run(runner)
        precise = runner.run("SETPRECISION(40);PRINT(1/3);PRINT(PID())", builtins=[PID])
        after = runner.run("PRINT(1/3);PRINT(PID())", builtins=[PID])
    assert precise.output[0] == "0." + "3" * 40 and int(precise.output[1]) == before
    assert after.output[0] == "0.3333333333333333" and int(after.output[1]) != before


def test_children_zombies_included_stay_within_max_jobs_plus_one_spare():
    """Concurrent jobs never fork extra children, and ended ones are reaped."""
    with Runner(max_jobs=3, jobs_per_child=1000) as runner:
        def work():
            for _ in range(20):
                assert runner.run("PRINT(1)").output == ["1"]
        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 5
        while len(children_of(runner.zygote_pid)) > 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 1 <= len(children_of(runner.zygote_pid)) <= 4


def test_jobs_per_child_must_be_positive():
    with pytest.raises(ValueError, match="jobs_per_child"):
        Runner(jobs_per_child=0)


def test_a_program_keeps_its_result_when_the_zygote_dies_while_it_runs():
    """The child cannot tell a dead zygote it is free: it still delivers its result, then ends."""
    with Runner(jobs_per_child=100) as runner:
        killer = threading.Timer(0.3, os.kill, (runner.zygote_pid, signal.SIGKILL))
        killer.start()
        result = runner.run("SLEEP(1);PRINT(1)")
        killer.join()
        after = runner.run("PRINT(2)")        # a new zygote
    assert (result.status, result.output) == ("ok", ["1"])
    assert after.output == ["2"]
