"""`pidaemon warble run|check|repl` through an argparse like the core CLI's."""
import json

from tests.support.warble import cli


def test_run_prints_output():
    r = cli("warble", "run", '#pi{FOR(i=0;i<3;i++){PRINT("n", i)}}')
    assert (r.code, r.lines, r.stderr) == (0, ["n 0", "n 1", "n 2"], "")


def test_run_error_goes_to_stderr_with_a_caret():
    r = cli("warble", "run", 'PRINT("a");x=1+y')
    assert r.code == 1
    assert r.lines == ["a"]
    assert r.stderr == ("error: line 1, column 16: variable y is not set\n"
                        '  PRINT("a");x=1+y\n'
                        "                 ^\n")


def test_run_caret_on_the_right_line():
    r = cli("warble", "run", "x=1\nPRINT(x/0)")
    assert r.code == 1
    assert r.stderr.splitlines() == ["error: line 2, column 8: division by zero", "  PRINT(x/0)", "         ^"]


def test_run_limit_status_is_labelled():
    r = cli("warble", "run", "--limit", "max_steps=50", "WHILE(1){}")
    assert r.code == 1
    assert r.stderr.splitlines()[0] == "step_limit: line 1, column 1: step limit of 50 reached (an endless loop?)"


def test_run_json():
    r = cli("warble", "run", "--json", "LIGHTS(0,255,0,0);PRINT(1);x=1/0")
    assert r.code == 1
    data = json.loads(r.stdout)
    assert data["status"] == "error"
    assert data["output"] == ["1"]
    assert data["error"] == {"message": "division by zero", "line": 1, "column": 31}
    assert data["effects"] == [["LIGHTS", [0, 255, 0, 0]]]
    assert data["steps"] == 2
    assert r.stderr == ""


def test_run_in_process_and_show_effects():
    r = cli("warble", "run", "--in-process", "--show-effects", 'PLAYSOUND("beep");PRINT(2)')
    assert (r.code, r.lines) == (0, ["2"])
    assert r.stderr == "[PLAYSOUND beep]\n"


def test_run_from_stdin():
    r = cli("warble", "run", "-", stdin="x=2\nPRINT(x^10)\n")
    assert (r.code, r.lines) == (0, ["1024"])


def test_run_store_keeps_values_between_runs(tmp_path):
    db = str(tmp_path / "w.db")
    assert cli("warble", "run", "--store", db, "--user", "ada", 'SAVE("pi",1)').code == 0
    r = cli("warble", "run", "--store", db, "--user", "ada", 'x=LOAD("pi");x++;SAVE("pi",x);PRINT(x)')
    assert r.lines == ["2"]
    r = cli("warble", "run", "--store", db, "--user", "bob", 'PRINT(LOAD("pi"))')
    assert r.lines == ["0"]


def test_the_newline_that_ends_standard_input_is_not_part_of_the_program():
    longest = "PRINT(1);" + "x=1;" * 67 + "x=1"           # 280 characters, the limit
    assert len(longest) == 280
    for ending in ("", "\n", "\r\n"):
        r = cli("warble", "run", "-", stdin=longest + ending)
        assert (r.code, r.lines) == (0, ["1"]), (ending, r.stderr)
    assert cli("warble", "run", "-", stdin=longest + "2\n").code != 0   # 281: too long, as before


def test_a_store_file_that_cannot_be_used_is_one_clear_error(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database\n" * 100)
    r = cli("warble", "run", "--store", str(garbage), 'SAVE("a",1)')
    assert (r.code, r.stderr) == (2, f"error: --store {garbage} is not a usable SQLite database "
                                     "(file is not a database)\n")
    r = cli("warble", "run", "--store", str(tmp_path), 'SAVE("a",1)')      # a directory
    assert r.code == 2 and r.stderr.startswith(f"error: --store {tmp_path}: cannot open it (")
    assert garbage.read_text() == "not a database\n" * 100                 # left as it was


def test_bad_limit_option():
    r = cli("warble", "run", "--limit", "max_stepz=5", "PRINT(1)")
    assert r.code == 2
    assert r.stderr.startswith("error: unknown Warble limit(s): max_stepz")


def test_check():
    r = cli("warble", "check", "FOR(i=0;i<3;i++){PRINT(i)}")
    assert (r.code, r.stdout, r.stderr) == (0, "ok\n", "")
    r = cli("warble", "check", "PRINT((1)")
    assert r.code == 1
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        "error: line 1, column 10: missing ) to close the ( at line 1, column 6; found the end of the program",
        "  PRINT((1)", "           ^"]


def test_check_does_not_run():
    assert cli("warble", "check", "WHILE(1){}").code == 0


def test_repl_keeps_variables_and_precision():
    session = "\n".join([
        "x=21",
        "PRINT(x*2)",
        "FOR(i=0;i<2;i++){",
        "  PRINT(i)",
        "}",
        "PRINT(y)",
        "PRINT(1,",
        ")",
        "SETPRECISION(30)",
        "PRINT(1/7)",
        ":vars",
        "LIGHTS(1,2,3,4)",
        ":nope",
        ":quit",
        "PRINT(99)",
    ]) + "\n"
    r = cli("warble", "repl", stdin=session)
    assert r.code == 0
    assert r.lines == [
        "Warble REPL. :help for help, :quit to leave.",
        "42",
        "0",
        "1",
        "error: line 1, column 7: variable y is not set",
        "  PRINT(y)",
        "        ^",
        "error: line 2, column 1: expected a value before )",
        "  )",
        "  ^",
        "0.142857142857142857142857142857",
        "i = 2",
        "x = 21",
        "[LIGHTS 1 2 3 4]",
        "unknown command :nope (:help lists them)",
    ]


def test_repl_help_lists_builtins():
    r = cli("warble", "repl", stdin=":builtins\n")
    assert "SQRT(x): square root" in r.stdout
    assert "e.g. PRINT(SQRT(16))" in r.stdout


def test_repl_reports_an_unfinished_program_at_the_end():
    r = cli("warble", "repl", stdin="PRINT(1\n")
    assert r.lines[1:] == ["error: line 1, column 8: missing ) to close the ( at line 1, column 6; "
                           "found the end of the program", "  PRINT(1", "         ^"]


def test_check_run_and_repl_say_did_you_mean():
    r = cli("warble", "check", "PRNT(1)")
    assert r.code == 1
    assert r.stderr.splitlines() == ["error: line 1, column 1: unknown function PRNT; did you mean PRINT?",
                                     "  PRNT(1)", "  ^"]
    r = cli("warble", "check", "x=1;for(i=0;i<3;i++){}")
    assert r.stderr.splitlines()[0] == "error: line 1, column 5: for is not a function: keywords are upper case (FOR)"
    r = cli("warble", "run", "total=1;PRINT(totl)")            # through the runner
    assert r.code == 1
    assert r.stderr.splitlines()[0] == "error: line 1, column 15: variable totl is not set; did you mean total?"
    r = cli("warble", "run", "--in-process", "Sqrt(2)")
    assert r.stderr.splitlines()[0] == ("error: line 1, column 1: unknown function Sqrt: "
                                        "built-in names are upper case (SQRT)")
    # the REPL suggests variables of earlier lines too
    r = cli("warble", "repl", stdin="total=5\nPRINT(totl)\nPRNT(1)\n")
    assert r.lines[1:] == ["error: line 1, column 7: variable totl is not set; did you mean total?", "  PRINT(totl)",
                           "        ^",
                           "error: line 1, column 1: unknown function PRNT; did you mean PRINT?", "  PRNT(1)", "  ^"]
