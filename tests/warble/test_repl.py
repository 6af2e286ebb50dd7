"""The REPL echoes values: `2+3` prints 5, as Python's prompt does; statements print nothing extra."""
import pytest

from pidaemon.warble import Builtin, Limits, Runner, WarbleError, compile_program
from pidaemon.warble.session import Session
from tests.support.warble import SMALL, cli, compile_error


def echo(*lines: str, limits=None) -> list[list[str]]:
    """The output of each line typed into one session (a line with a syntax error gives its message)."""
    session = Session(limits)
    outputs = []
    for line in lines:
        try:
            result = session.run(line)
        except WarbleError as exc:
            outputs.append([f"error: {exc.message}"])
            continue
        outputs.append(result.output + ([f"{result.status}: {result.error.message}"] if result.error else []))
    return outputs


@pytest.mark.parametrize("line, shown", [
    ("2+3", ["5"]),
    ("7/2", ["3.5"]),
    ("16^20", ["1208925819614629174706176"]),
    ("-4", ["-4"]),
    ("(1+2)*3", ["9"]),
    ('"hi"+1', ["hi1"]),                 # as PRINT shows it
    ("2>1", ["1"]),
    ("!0", ["1"]),
    ("SQRT(16)", ["4.0"]),               # a built-in that gives a value: echoed
    ("ROUND(2.5)", ["2"]),
    ("MAX(3,1,2)+1", ["4"]),
    ('LOAD("nothing")', ["0"]),
    ("RANDOM()<1", ["1"]),
    ("1;2", ["1", "2"]),                 # each value at the top level, in order
])
def test_a_value_on_its_own_is_printed(line, shown):
    assert echo(line) == [shown]


@pytest.mark.parametrize("line", [
    "x=2", "x=1;x+=1", "y=3;y++", 'SAVE("k",1)', "SETPRECISION(20)", "SLEEP(0)", "LIGHTS(0,1,2,3)",
    'PLAYSOUND("beep")', "IF(1){z=SQRT(4)}", "FOR(i=0;i<2;i++){}", "WHILE(0){}", "{z=1}",
])
def test_statements_and_calls_made_for_their_effect_print_nothing(line):
    """Assignments, blocks, IF/WHILE/FOR, SETPRECISION, SAVE, SLEEP and effects are not echoed."""
    assert echo(line) == [[]]


def test_print_prints_once():
    assert echo("PRINT(1)", 'PRINT("a", 2)') == [["1"], ["a 2"]]


def test_variables_and_precision_carry_over_into_echoes():
    assert echo("x=21", "x", "x*2", "x==21", "SETPRECISION(30)", "1/7", "x") == [
        [], ["21"], ["42"], ["1"], [], ["0.142857142857142857142857142857"], ["21"]]


def test_only_the_top_level_is_echoed():
    """Inside a block or loop, a value on its own is the same error as in a program (no flood of echoes)."""
    source = "FOR(i=0;i<3;i++){i}"
    assert echo(source) == [[f"error: {compile_error(source).message}"]]


def test_an_echo_is_compiled_like_any_value():
    """No eval of text: an echoed value is Warble, with Warble's checks and messages."""
    outputs = echo("__import__", "9^9^9", "1/0", "PRINT", "x=")
    assert outputs == [
        ["error: variable __import__ is not set"],
        ["error: number too large (more than 10000 digits)"],
        ["error: division by zero"],
        ["error: PRINT is a built-in function: call it as PRINT(...)"],
        ["error: expected a value, found the end of the program"],
    ]


def test_echoes_count_as_output():
    assert echo("1;2", limits=Limits(max_output_lines=1)) == [
        ["1", "output_limit: output limit reached: more than 1 lines"]]


def test_an_effect_builtin_of_a_plugin_is_not_echoed_and_a_plain_one_is():
    buzz = Builtin("BUZZ", 1, 1, "BUZZ(n): buzz. BUZZ(1)", perform=lambda args: 7, effect=True)
    twice = Builtin("TWICE", 1, 1, "TWICE(x): twice x. PRINT(TWICE(2))", perform=lambda args: args[0] * 2)
    program = compile_program("BUZZ(1);TWICE(21)", builtins=[buzz, twice], repl_vars=())
    assert program.run().output == ["42"]


def test_programs_outside_the_repl_do_not_echo():
    """Only the REPL compiles a value on its own: a program, the runner (and so the service) refuse it."""
    assert compile_error("2+3").message == "expected a statement, found the number 2"
    assert compile_error("x=1;x").message.startswith("expected =, +=")
    assert compile_program("SQRT(2)").run().output == []
    with Runner(SMALL) as runner:
        refused, silent = runner.run("2+3"), runner.run("SQRT(2)")
    assert (refused.status, refused.output, silent.status, silent.output) == ("error", [], "ok", [])


def test_the_repl_command_echoes():
    session = "\n".join(["2+3", "x=2", "x", "PRINT(x)", "SQRT(16)", "LIGHTS(0,1,2,3)", "SETPRECISION(20)", "1/3"])
    r = cli("warble", "repl", stdin=session + "\n")
    assert r.code == 0
    assert r.lines == ["Warble REPL. :help for help, :quit to leave.",
                       "5", "2", "2", "4.0", "[LIGHTS 0 1 2 3]", "0.33333333333333333333"]


def test_the_repl_help_says_values_are_shown():
    assert "2+3" in cli("warble", "repl", stdin=":help\n").stdout


def test_ctrl_c_stops_the_running_line_and_keeps_the_session():
    """SIGINT while a line runs (here a long SLEEP) stops that line; the REPL goes on with its variables."""
    import os
    import signal
    import subprocess
    import sys
    import time

    repl = subprocess.Popen([sys.executable, "-m", "pidaemon", "warble", "repl", "--limit", "time_limit=60"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        repl.stdin.write('x=5\nPRINT("go")\nx=6;SLEEP(30)\n')
        repl.stdin.flush()
        seen = []
        while "go" not in seen:
            line = repl.stdout.readline()
            assert line, f"the REPL ended early: {seen} {repl.stderr.read()}"
            seen.append(line.strip())
        time.sleep(0.5)  # the next line, already written, is running by then (SLEEP holds it for 30 s)
        repl.send_signal(signal.SIGINT)
        assert repl.stdout.readline().strip() == "interrupted (the variables are as they were before this line)"
        out, err = repl.communicate('PRINT(x)\n', timeout=20)
    finally:
        repl.kill()
    assert out.splitlines() == ["5"] and repl.returncode == 0, err
