"""Limits: configuration, and resource attacks that must end fast with a clear status."""
import pytest

from pidaemon.warble import Limits, MemoryStore, RecordingEffects
from tests.support.warble import SMALL, compile_error, out, run, run_error

TOO_LARGE = "number too large (more than 10000 digits)"


# ---- configuration ---------------------------------------------------------------

def test_from_mapping_converts_and_rejects_unknown_keys():
    limits = Limits.from_mapping({"max_steps": 5, "time_limit": 2, "sounds": ["a", "b"]})
    assert limits.max_steps == 5 and limits.time_limit == 2.0 and limits.sounds == ("a", "b")
    with pytest.raises(ValueError, match="unknown Warble limit.*max_stepz"):
        Limits.from_mapping({"max_stepz": 5})
    with pytest.raises(ValueError, match="max_steps"):
        Limits.from_mapping({"max_steps": "many"})
    with pytest.raises(ValueError, match="max_steps"):
        Limits.from_mapping({"max_steps": -1})
    with pytest.raises(ValueError, match="sounds"):
        Limits.from_mapping({"sounds": "beep"})
    assert Limits.from_mapping(None) == Limits()
    assert Limits.from_mapping(Limits().to_dict()) == Limits()


def test_defaults():
    limits = Limits()
    assert limits.max_program_length == 280
    assert limits.max_steps > 0 and limits.time_limit > 0


# ---- program text --------------------------------------------------------------------

def test_program_length():
    assert out("PRINT(1)" + " " * 272) == ["1"]          # exactly 280 characters
    err = compile_error("PRINT(1)" + " " * 273)
    assert err.message == "program is 281 characters long; the limit is 280"
    assert (err.line, err.column) == (1, 281)
    err = compile_error("x" * 10_000_000)
    assert err.message.startswith("program is 10000000 characters long")


def test_300_nested_parentheses():
    src = "x=" + "(" * 300 + "1" + ")" * 300
    assert compile_error(src).message == "program is 603 characters long; the limit is 280"
    err = compile_error(src, limits=Limits(max_program_length=1000))
    assert err.message == "nesting too deep (more than 40 levels)"
    assert (err.line, err.column) == (1, 43)


def test_deep_nesting_within_280_characters():
    assert compile_error("x=" + "(" * 130 + "1" + ")" * 130).message.startswith("nesting too deep")
    assert compile_error("x=" + "!" * 270 + "1").message.startswith("nesting too deep")
    assert compile_error("x=" + "2^" * 130 + "2").message.startswith("nesting too deep")
    assert compile_error("{" * 100 + "}" * 100).message.startswith("nesting too deep")
    assert compile_error("FOR(;;){" * 17 + "}" * 17).message == "loops nested too deeply (at most 16)"
    assert out("x=" + "+".join(["1"] * 130) + ";PRINT(x)") == ["130"]


def test_unbalanced_brackets():
    assert compile_error("PRINT((((1)").message.startswith("missing ) to close")
    assert compile_error("x=1)))").message == "expected a statement, found ')'"
    assert compile_error("{{PRINT(1)}").message.startswith("missing } to close")
    assert compile_error("WHILE(1){}}").message == "unexpected } (no { to close)"


def test_nul_bytes():
    err = compile_error("PRINT(1)\x00PRINT(2)")
    assert err.message == "unexpected character U+0000: NUL bytes are not allowed"
    assert (err.line, err.column) == (1, 9)


def test_huge_literal():
    err = compile_error("x=" + "9" * 500, limits=Limits(max_program_length=1000, max_number_digits=400))
    assert err.message == "number too large (more than 400 digits)"


# ---- running ---------------------------------------------------------------------------

@pytest.mark.parametrize("src", ["WHILE(1<2){}", "WHILE(1){}", "FOR(;;){}", "FOR(i=0;i<10^100;i++){}",
                                 "i=0;WHILE(i>=0){i++}", "FOR(i=0;i<1;i+=0){}", "WHILE(1){x=1}"])
def test_endless_loops_hit_the_step_limit(src):
    result = run(src, limits=SMALL)
    assert result.status == "step_limit"
    assert result.steps == SMALL.max_steps
    assert result.error.message == f"step limit of {SMALL.max_steps} reached (an endless loop?)"
    assert result.error.line == 1


def test_steps_include_calls():
    result = run("WHILE(1){x=ABS(1)}", limits=Limits(max_steps=100))
    assert result.status == "step_limit"
    assert 100 <= result.steps <= 102


def test_time_limit_with_a_huge_step_budget():
    result = run("WHILE(1){x=1}", limits=Limits(max_steps=10**15, time_limit=0.2))
    assert result.status == "timeout"
    assert result.error.message == "time limit of 0.2 s reached"


def test_sleep_counts_against_the_time_limit():
    effects = RecordingEffects()              # does not really wait
    result = run("SLEEP(0.2);PRINT(1);SLEEP(0.2);PRINT(2)", limits=Limits(time_limit=0.3), effects=effects)
    assert result.status == "timeout"
    assert result.output == ["1"]
    assert result.error.message == "time limit of 0.3 s reached (SLEEP(0.2) would end after it)"
    assert effects.events == [("SLEEP", (0.2,))]
    result = run("WHILE(1){SLEEP(0.05)}", limits=Limits(time_limit=1), effects=RecordingEffects())
    assert result.status == "timeout"


@pytest.mark.parametrize("src", [
    "x=9^9^9", "x=2^2^2^2^2^2", "x=(10^5000)^3", "x=10^5000;y=x*x*x", "x=3;WHILE(1){x=x*x}",
    "x=2;WHILE(1){x=x*2}", "x=1;WHILE(1){x=x+x}", "x=7;WHILE(1){x=x*x+1}", "x=10^4000;y=x*x;z=y*x",
    "x=5;WHILE(1){x=POW(x,2)}", "x=2;WHILE(1){x*=x}", "x=2;FOR(i=0;i<99;i++){x=x^2}",
    "x=2;s=\"\"+1;WHILE(1){x=x*x;s=x}", "x=COMB(10^5,5*10^4)", "x=ROUND(2.5)+1;WHILE(1){x=x*x}",
    "x=ABS(-3);WHILE(1){x=x*x}", "x=MAX(2,1.5);WHILE(1){x=x*x}", "x=FLOOR(2.5)+1;WHILE(1){x=x*x}",
])
def test_number_size_attacks(src):
    assert run_error(src).message == TOO_LARGE


def test_big_numbers_below_the_limit_work():
    (line,) = out("x=10^4000;y=x*x;PRINT(y-y+1)")
    assert line == "1"
    assert len(out("PRINT(2^33000)")[0]) == 9934


@pytest.mark.parametrize("src", ['s="a";WHILE(1){s=s+s}', 's="ab"*10^9', 's="x";WHILE(1){s=s*2}',
                                 's="x";WHILE(1){s=s+s+s}', 's="x";FOR(i=0;i<30;i++){s=s+s};PRINT(s)'])
def test_string_size_attacks(src):
    err = run_error(src, limits=SMALL)
    assert err.message.startswith("string too long:")
    assert err.message.endswith("the limit is 100000")


def test_huge_setprecision():
    err = run_error("SETPRECISION(10^9)")
    assert err.message == "SETPRECISION: at most 10000 digits are allowed here"


@pytest.mark.parametrize("src", ['WHILE(1){PRINT("spam")}', 's="x"*50000;WHILE(1){PRINT(s)}',
                                 'FOR(i=0;i<10^6;i++){PRINT(i,i,i)}'])
def test_endless_print(src):
    result = run(src)
    assert result.status == "output_limit"
    assert result.error.message.startswith("output limit reached: more than")
    assert 0 < len(result.output) <= Limits().max_output_lines
    assert sum(len(line) + 1 for line in result.output) <= Limits().max_output_chars


def test_endless_save():
    store = MemoryStore(max_keys=10)
    result = run('i=0;WHILE(1){SAVE("k"+i,i);i++}', store=store, user="eve")
    assert result.status == "error"
    assert result.error.message == "SAVE: each user can keep at most 10 names"
    assert len(store.names("eve")) == 10
    result = run('WHILE(1){SAVE("k",1)}', store=MemoryStore())
    assert result.error.message == "SAVE: at most 1000 saves per run"
    result = run('s="x"*5000;SAVE("k",s)', store=MemoryStore())
    assert result.error.message == "SAVE: the value is too long; the limit is 4096 characters"


def test_float_overflow_is_a_clear_error():
    err = run_error("x=16.0^256")
    assert err.message.startswith("number too large: decimal numbers go up to about 1.8e308")
    assert out("x=16.0^255;PRINT(x>1)") == ["1"]


def test_endless_effects(run_anywhere):
    effects = RecordingEffects()
    result = run_anywhere("WHILE(1){LIGHTS(0,1,2,3)}", effects=effects, limits=Limits(max_effects=50))
    assert result.error.message == "too many effects: at most 50 LIGHTS, PLAYSOUND and the like per run"
    assert len(effects.events) == 50
