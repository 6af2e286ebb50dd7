"""The child-process runner: isolation, limits, effects and storage in the parent."""
import os
import signal
import threading
import time

import pytest

from pidaemon.warble import (
    Builtin,
    Limits,
    MemoryStore,
    RecordingEffects,
    Runner,
    SqliteStore,
    compile_program,
    lights_builtin,
)
from tests.support.warble_builtins import DOUBLE, PID, Buzzer, broken


def test_print_one(runner):
    result = runner.run("PRINT(1)")
    assert (result.status, result.output, result.error, result.steps) == ("ok", ["1"], None, 1)
    assert result.elapsed > 0


def test_did_you_mean_in_the_sandbox(runner):
    """The worker compiles in the child with its plugins' built-ins: what the service's clients see."""
    assert runner.run("PRNT(1)").error.message == "unknown function PRNT; did you mean PRINT?"
    assert runner.run("DOUBEL(2)", builtins=[DOUBLE]).error.message == "unknown function DOUBEL; did you mean DOUBLE?"
    assert runner.run("n=1;PRINT(m+nn)").error.message == "variable m is not set"
    assert runner.run("count=1;PRINT(cont)").error.message == "variable cont is not set; did you mean count?"


def test_result_matches_in_process(runner):
    src = 'FOR(i=0;i<5;i++){PRINT(i, i^2, "x"+i)};SETPRECISION(30);PRINT(1/7);x=1/0'
    here = compile_program(src).run()
    there = runner.run(src)
    assert (there.status, there.output, there.error, there.steps) == (here.status, here.output, here.error, here.steps)


def test_syntax_error(runner):
    result = runner.run("PRINT((1)")
    assert result.status == "error"
    assert result.error.message.startswith("missing ) to close the (")


def test_program_object_and_plugin_builtin(runner):
    program = compile_program("PRINT(DOUBLE(4))", builtins=[DOUBLE])
    assert runner.run(program).output == ["8"]
    assert runner.run("PRINT(DOUBLE(5))", builtins=[DOUBLE]).output == ["10"]
    assert runner.run('x=DOUBLE("a")', builtins=[DOUBLE]).error.message == "DOUBLE needs a number"


def test_unpicklable_builtin_is_refused_clearly(runner):
    bad = Builtin("BAD", 0, 0, "BAD(): x. BAD()", perform=lambda args: 1)
    with pytest.raises(ValueError, match="cannot be sent to the sandbox"):
        runner.run("BAD()", builtins=[bad])


def test_limits_hit_in_the_child(runner):
    assert runner.run("WHILE(1){}", limits=Limits(max_steps=1000)).status == "step_limit"
    assert runner.run('WHILE(1){PRINT("spam")}').status == "output_limit"
    assert runner.run("x=9^9^9").error.message == "number too large (more than 10000 digits)"


def test_memory_bomb_then_keeps_serving(runner):
    limits = Limits(max_string_length=10**12, memory_mb=64)
    result = runner.run('s="a";WHILE(1){s=s+s}', limits=limits)
    assert result.status == "memory_limit"
    assert runner.run("PRINT(2)").output == ["2"]


def test_huge_c_level_operation_is_stopped_then_keeps_serving(runner):
    # the in-process checks are configured away: only the child's limits can stop this
    limits = Limits(max_number_digits=10**10, time_limit=1.0, kill_grace=0.2, memory_mb=512)
    result = runner.run("PRINT(1);x=7^(10^9)", limits=limits)
    assert result.status in ("timeout", "memory_limit")
    assert result.output == ["1"]
    assert runner.run("PRINT(3)").output == ["3"]


def test_busy_loop_is_killed_at_the_deadline(runner):
    limits = Limits(max_number_digits=10**10, time_limit=0.5, kill_grace=0.1)
    result = runner.run("x=10^(10^8)", limits=limits)
    assert result.status == "timeout"
    assert result.error.message == "time limit of 0.5 s reached (stopped)"


def test_output_before_a_kill_is_kept(runner):
    limits = Limits(max_number_digits=10**10, time_limit=1.0, kill_grace=0.1)
    result = runner.run('PRINT("a");PRINT("b");x=10^(10^8)', limits=limits)
    assert result.status == "timeout"
    assert result.output == ["a", "b"]


def test_effects_arrive_in_the_parent_in_order_and_in_time(runner):
    seen = []
    lights = lights_builtin(24, lambda *args: seen.append((time.monotonic(), args)))
    result = runner.run("LIGHTS(0,255,0,0);SLEEP(0.3);LIGHTS(1,0,255,0);LIGHTS(2,0,0,255)", builtins=[lights])
    assert result.status == "ok"
    assert [args for _, args in seen] == [(0, 255, 0, 0), (1, 0, 255, 0), (2, 0, 0, 255)]
    assert seen[1][0] - seen[0][0] >= 0.25          # SLEEP really separated them


def test_default_effects_and_validation_in_the_child(runner):
    effects = RecordingEffects()
    result = runner.run('PLAYSOUND("bell");LIGHTS(0,1,2,3);LIGHTS(30,0,0,0)', effects=effects)
    assert result.status == "error"
    assert result.error.message == "LIGHTS: the light index must be a whole number from 0 to 23, got 30"
    assert effects.events == [("PLAYSOUND", ("bell",)), ("LIGHTS", (0, 1, 2, 3))]


def test_plugin_effect_is_performed_in_the_parent(runner):
    buzzer = Buzzer()
    buzz = Builtin("BUZZ", 1, 1, "BUZZ(n): buzz. BUZZ(2)", perform=buzzer, effect=True)
    assert runner.run("BUZZ(2);BUZZ(3)", builtins=[buzz]).status == "ok"
    assert buzzer.calls == [(2,), (3,)]          # this process's object: not a copy in the child


def test_a_failing_device_is_an_error_at_the_call_and_the_child_goes_on():
    buzz = Builtin("BUZZ", 0, 0, "BUZZ(): buzz. BUZZ()", perform=broken, effect=True)
    with Runner(jobs_per_child=100) as runner:
        failed = runner.run("PRINT(PID());x=BUZZ()", builtins=[buzz, PID])
        after = runner.run("PRINT(PID())", builtins=[PID])
    assert failed.status == "error" and "0xdeadbeef" not in failed.error.message
    assert (failed.error.message, failed.error.line, failed.error.column) == ("BUZZ could not be performed", 1, 16)
    assert after.output == failed.output          # the same sandbox process: the runner did not stop it


def test_save_load_go_to_the_parents_store(runner, tmp_path):
    store = SqliteStore(str(tmp_path / "w.db"))
    assert runner.run('SAVE("pi",1)', store=store, user="ada").status == "ok"
    result = runner.run('x=LOAD("pi");x++;SAVE("pi",x);PRINT(x)', store=store, user="ada")
    assert result.output == ["2"]
    assert store.get("ada", "pi") == 2
    quota = MemoryStore(max_keys=2)
    result = runner.run('i=0;WHILE(1){SAVE("k"+i,i);i++}', store=quota)
    assert result.error.message == "SAVE: each user can keep at most 2 names"
    store.close()


def test_zygote_death_is_survived():
    with Runner() as runner:
        os.kill(runner.zygote_pid, signal.SIGKILL)
        time.sleep(0.1)
        assert runner.run("PRINT(1)").output == ["1"]
        assert runner.run("PRINT(2)").output == ["2"]


def test_threads_can_share_a_runner():
    results = []
    with Runner(max_jobs=2) as runner:
        def work(n):
            results.append(runner.run(f"FOR(i=0;i<3;i++){{}};PRINT({n})").output)
        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(results) == [[str(n)] for n in range(6)]


def test_runner_restarts_after_close():
    runner = Runner()
    assert runner.run("PRINT(1)").output == ["1"]     # starts on first use
    runner.close()
    runner.start()
    assert runner.run("PRINT(2)").output == ["2"]
    runner.close()


def test_sandbox_gets_no_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("PIDAEMON_BROKER_PASSWORD", "hunter2")
    with Runner() as runner:
        with open(f"/proc/{runner.zygote_pid}/environ", "rb") as f:
            environ = f.read()
        assert runner.run("PRINT(1)").output == ["1"]
    assert b"hunter2" not in environ
    assert b"PYTHONPATH=" in environ


def test_store_object_never_leaves_the_parent(runner, tmp_path):
    # an SQLite connection cannot be pickled: the run works because only SAVE/LOAD messages travel
    store = SqliteStore(str(tmp_path / "s.db"))
    assert runner.run('SAVE("a", "b");PRINT(LOAD("a"))', store=store).output == ["b"]
    store.close()


def test_runner_works_with_file_descriptors_past_1023():
    """A process hosting a thousand simulated workers has more than 1024 sockets open."""
    import resource
    import socket

    from pidaemon.warble import Runner
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Raising the hard limit needs root (CI runs as root); elsewhere this raises ValueError.
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2100), max(hard, 2100)))
    pairs = [socket.socketpair() for _ in range(520)]  # 1040 descriptors
    try:
        with Runner() as runner:
            result = runner.run("PRINT(6*7)")
    finally:
        for a, b in pairs:
            a.close()
            b.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert result.status == "ok" and result.output == ["42"]
