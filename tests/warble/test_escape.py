"""Escape attempts: user text can never reach Python names, builtins or formatting."""
import pytest

from pidaemon.warble import MemoryStore, SqliteStore, compile_program
from tests.support.warble import compile_error, out, run, run_error

HELPERS = {"_add", "_mul", "_mod", "_div", "_pow", "_chk", "_dec", "_range", "_forever", "_vars",
           "refund_after", "refund_from", "finish"}


def assert_sealed(program):
    """The code object names only our helpers; every local is ours or a renamed Warble variable."""
    code = program.compiled.code
    for name in code.co_names:
        assert name in HELPERS or name.startswith(("_b_", "_x_", "v_")), name
    for name in code.co_varnames:
        assert name.startswith(("v_", "_t", "_it", "_k", "_init")), name
    assert not any(hasattr(c, "co_code") for c in code.co_consts)


PYTHON_NAMES = "__import__=1;eval=2;exec=3;open=4;os=5;__builtins__=6;__class__=7;_add=8;v_x=9"


def test_python_names_are_just_variables():
    program = compile_program(PYTHON_NAMES + ";PRINT(__import__+eval+exec+open+os+__builtins__+__class__+_add+v_x)")
    assert_sealed(program)
    assert program.run().output == ["45"]


@pytest.mark.parametrize("name", ["__builtins__", "__import__", "_add", "_b_PRINT", "v_x", "globals", "x"])
def test_python_names_cannot_be_read(name):
    assert run_error(f"x=1;PRINT({name}+0)" if name != "x" else "PRINT(y)").message.startswith("variable ")


@pytest.mark.parametrize("src", ['__import__("os")', 'eval("1")', 'exec("x")', 'open("/etc/passwd")',
                                 'getattr(1,"x")', '_add(1,2)', '_b_PRINT(1)', 'v_x(1)'])
def test_python_callables_are_not_functions(src):
    assert f"{src.split('(')[0]} is not a function" in compile_error(src).message


@pytest.mark.parametrize("src", ['EVAL("1")', 'IMPORT("os")', 'SYSTEM("ls")', 'OPEN("x")', '__IMPORT__("os")'])
def test_unknown_upper_case_functions(src):
    assert compile_error(src).message.startswith("unknown function")


@pytest.mark.parametrize("src", ["x=1;y=x.__class__", "PRINT(().__class__)", "x=[1]", 'PRINT("a".upper())',
                                 "lambda=1;PRINT(lambda:1)", "x=1 if 1 else 2"])
def test_python_syntax_is_not_warble(src):
    compile_error(src)


@pytest.mark.parametrize("src", ['PRINT("%s %s" % 1)', 'x="%d";PRINT(x%5)', 'PRINT("{0}".format(1))',
                                 'PRINT(f"{1}")', 'PRINT("%(x)s"%1)'])
def test_format_strings(src):
    try:
        program = compile_program(src)
    except Exception as exc:  # noqa: BLE001 - syntax errors are fine
        assert type(exc).__name__ == "WarbleError"
        return
    result = program.run()
    assert result.status == "error"
    assert result.error.message == "cannot use % with a string"


def test_format_string_from_storage():
    store = MemoryStore()
    out('SAVE("f","%s%s")', store=store)
    assert run('PRINT(LOAD("f")%2)', store=store).error.message == "cannot use % with a string"


@pytest.mark.parametrize("src, char", [
    ("\uff30\uff32\uff29\uff2e\uff34(1)", "\uff30"),  # full-width PRINT
    ("x=\uff11", "\uff11"),                          # full-width 1
    ("x=\u0661\u0662", "\u0661"),                    # Arabic-Indic digits
    ("x=1\u0662", "\u0662"),
    ("x=\u09e7", "\u09e7"),                          # Bengali digit
    ("pr\u0131nt=1", "\u0131"),                      # dotless i
    ("\u0440=1", "\u0440"),                          # Cyrillic er
])
def test_non_ascii_letters_and_digits_are_rejected(src, char):
    err = compile_error(src)
    assert err.message.startswith(f"unexpected character '{char}'")
    assert src[err.column - 1] == char


def test_injection_through_string_literals_is_inert():
    text = "__import__('os').system('echo pwned'); exec('x') {0} %s"
    assert out(f'PRINT("{text}")') == [text]
    assert out('x="\\";PRINT(x)') == ["\\"]               # no escapes: a backslash is a backslash
    assert out('PRINT("a\\nb")') == ["a\\nb"]
    with pytest.raises(Exception):
        compile_program('PRINT("\\");__import__("os").system("id");#")')


def test_newlines_and_control_characters_cannot_enter_output():
    assert compile_error('PRINT("a\nb")').message == "unterminated string: it needs a closing quote"
    assert compile_error('PRINT("a\rb")').message == "character U+000D is not allowed in a string"
    assert compile_error('PRINT("a\x1b[2Jb")').message == "character U+001B is not allowed in a string"
    assert compile_error('PRINT("a\u202eb")').message == "character U+202E is not allowed in a string"
    assert compile_error("PRINT(\"\ud800\")").message == "character U+D800 is not allowed in a string"
    for line in run("PRINT(1);PRINT(\"a\", \"b\")").output:
        assert "\n" not in line


def test_emoji_and_accents_in_strings_are_fine():
    assert out('PRINT("h\u00e9llo \U0001f600 \u4e16\u754c")') == ["h\u00e9llo \U0001f600 \u4e16\u754c"]


def test_sql_injection_through_save_names(tmp_path):
    store = SqliteStore(str(tmp_path / "w.db"))
    name = "x'); DROP TABLE warble_values; --"
    assert out(f'SAVE("{name}", 1);PRINT(LOAD("{name}"))', store=store) == ["1"]
    assert out('SAVE("y", 2);PRINT(LOAD("y"))', store=store) == ["2"]
    assert store.names("anonymous") == sorted([name, "y"])


@pytest.mark.parametrize("sound", ["../../etc/passwd", "/dev/zero", "http://evil.example/a.wav",
                                   "C:\\x.wav", ".hidden", "beep/../../x"])
def test_playsound_rejects_paths_and_urls(sound):
    assert run_error(f'PLAYSOUND("{sound}")').message == \
        "PLAYSOUND takes a sound name from the library, not a path or URL"


@pytest.mark.parametrize("src", [
    "x=1;y=\"a\";z=x+y;w=z*2;FOR(i=0;i<3;i++){x=x*x+i;y=y+i};PRINT(x,y,z,w)",
    "SETPRECISION(20);x=0.5;WHILE(x<3){x=x*1.5};IF(x>2&&!0){PRINT(x%2)}ELSE{PRINT(-x)}",
    "x=LOAD(\"a\");SAVE(\"b\",x+1);LIGHTS(0,1,2,3);PLAYSOUND(\"beep\");PRINT(MIN(1,2),RANDOM()<2)",
    PYTHON_NAMES,
])
def test_compiled_code_is_sealed(src):
    assert_sealed(compile_program(src))


def test_namespace_has_empty_builtins():
    from pidaemon.warble import Limits
    from pidaemon.warble.runtime import Run
    ns = Run(limits=Limits()).namespace({"PRINT"}, set())
    assert ns["__builtins__"] == {}
    assert all(k.startswith("_") for k in ns)
