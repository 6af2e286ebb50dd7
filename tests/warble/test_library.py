"""The standard built-ins: every documented example, edge cases, SETPRECISION."""
import mpmath
import pytest

from pidaemon.warble import Limits, MemoryStore, RecordingEffects
from pidaemon.warble.library import SIGNATURES
from tests.support.warble import out, run, run_error


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_documented_example(name):
    sig = SIGNATURES[name]
    result = run(sig.example, store=MemoryStore(), effects=RecordingEffects())
    assert result.status == "ok", result.error
    assert result.output == (sig.expected.split("\n") if sig.expected else [])
    assert sig.doc.startswith(name + "(")


@pytest.mark.parametrize("src, expected", [
    ("PRINT(ROUND(2.5), ROUND(3.5), ROUND(-0.5))", "2 4 0"),
    ("PRINT(ROUND(1234, -2), ROUND(7))", "1200 7"),
    ("PRINT(ROUND(1.23456, 3))", "1.235"),
    ("PRINT(ABS(-3), ABS(2.5))", "3 2.5"),
    ("PRINT(CEIL(-1.5), FLOOR(2.9), CEIL(3))", "-1 2 3"),
    ("PRINT(LOG(100), LOG(EXP(2), EXP(1)), LN(EXP(3)))", "2.0 2.0 3.0"),
    ("PRINT(MIN(2.5, 1), MAX(-1, -2), MAX(\"a\", \"b\"))", "1 -1 b"),
    ("PRINT(POW(2, 0.5), POW(2, -2))", "1.4142135623730951 0.25"),
    ("PRINT(COMB(52, 5), COMB(5, 7), COMB(100, 0))", "2598960 0 1"),
    ("PRINT(SQRT(2)^2 > 1.99, SIN(0), COS(0))", "1 0.0 1.0"),
    ("PRINT(TAN(ATAN(1)), ASIN(0), ACOS(1))", "0.9999999999999999 0.0 0.0"),
    ("PRINT(ATAN2(0, -1))", "3.141592653589793"),
    ("PRINT(FLOOR(1e0))" if False else "PRINT(FLOOR(10.0^300) > 10^299)", "1"),
])
def test_math(src, expected):
    assert out(src) == [expected]


def test_random_is_in_range_and_seedable():
    values = out("FOR(i=0;i<200;i++){r=RANDOM();IF(r<0||r>=1){PRINT(\"bad\")}};PRINT(\"done\")")
    assert values == ["done"]
    assert out("PRINT(RANDOM())", seed=7) == out("PRINT(RANDOM())", seed=7)


@pytest.mark.parametrize("src, message", [
    ("COMB(2.5, 1)", "COMB needs whole numbers"),
    ("COMB(-1, 1)", "COMB needs numbers that are not negative"),
    ("COMB(10^6, 5*10^5)", "number too large (more than 10000 digits)"),
    ("ROUND(1.5, 0.5)", "ROUND: the number of decimals must be a whole number from -1000000000 to 1000000000, got 0.5"),
    ("ASIN(2)", "ASIN: the argument is outside the function's domain"),
    ("LOG(10, 1)", "division by zero"),
    ("FLOOR(EXP(710))", "number too large: decimal numbers go up to about 1.8e308 (use whole numbers, "
                        "e.g. 16^k instead of 16.0^k, or SETPRECISION)"),
    ('SLEEP("x")', "SLEEP needs a number of seconds"),
    ("SLEEP(-1)", "SLEEP needs a number of seconds, 0 or more"),
    ("SETPRECISION(0)", "SETPRECISION: the number of digits must be a whole number from 1 to 10000, got 0"),
    ("SETPRECISION(2.5)", "SETPRECISION: the number of digits must be a whole number from 1 to 10000, got 2.5"),
])
def test_library_errors(src, message):
    err = run_error(src)
    assert err.message == message
    assert (err.line, err.column) == (1, 1) or err.message.startswith("number too large")


def test_round_with_huge_negative_digits_is_cheap():
    assert out("PRINT(ROUND(12345, -1000000000))") == ["0"]


# ---- SETPRECISION -------------------------------------------------------------------

def test_setprecision_digits_and_math_functions():
    assert out("SETPRECISION(30);PRINT(1/3)") == ["0.333333333333333333333333333333"]
    assert out("SETPRECISION(40);PRINT(SQRT(2))") == ["1.41421356237309504880168872420969807857"]
    assert out("SETPRECISION(25);PRINT(EXP(1), LN(10))") == [
        "2.718281828459045235360287 2.302585092994045684017991"]


def test_setprecision_applies_to_decimal_literals_and_rest_of_program():
    assert out("PRINT(0.1+0.2);SETPRECISION(20);PRINT(0.1+0.2)") == ["0.30000000000000004", "0.3"]


def test_setprecision_1000_digits_of_pi():
    (line,) = out("SETPRECISION(1000);PRINT(4*ATAN(1))")
    mpmath.mp.dps = 1000
    try:
        assert line == str(+mpmath.pi)
    finally:
        mpmath.mp.dps = 15
    assert len(line) == 1001


def test_setprecision_bbp_series():
    src = "SETPRECISION(60);s=0;FOR(k=0;k<60;k++){s+=1/16^k*(4/(8*k+1)-2/(8*k+4)-1/(8*k+5)-1/(8*k+6))};PRINT(s)"
    assert out(src) == ["3.14159265358979323846264338327950288419716939937510582097494"]


def test_precision_does_not_leak_between_runs_or_into_mpmath():
    before = mpmath.mp.dps
    assert out("SETPRECISION(80);x=1/3") == []
    assert out("PRINT(1/3)") == ["0.3333333333333333"]
    assert mpmath.mp.dps == before


def test_setprecision_cap_is_configurable():
    err = run_error("SETPRECISION(101)", limits=Limits(max_precision=100))
    assert err.message == "SETPRECISION: at most 100 digits are allowed here"
    assert out("SETPRECISION(100);PRINT(1/7)", limits=Limits(max_precision=100)) == ["0." + "142857" * 16 + "1429"]


def test_precision_domain_errors_stay_errors():
    assert run_error("SETPRECISION(20);x=SQRT(-1)").message == "SQRT: the argument is outside the function's domain"
    assert run_error("SETPRECISION(20);x=LN(0)").message == "LN: the argument is outside the function's domain"
    assert run_error("SETPRECISION(20);x=1/0").message == "division by zero"
    assert run_error("SETPRECISION(20);x=\"a\"/2").message == "cannot use / with a string"


def test_precision_round_floor_and_integers():
    assert out("SETPRECISION(30);x=2*ACOS(0);PRINT(ROUND(x,5), FLOOR(x), CEIL(x), ROUND(x))") == ["3.14159 3 4 3"]
    assert out("SETPRECISION(30);PRINT(16^2, 2^-1, 2^0.5)") == [
        "256 0.5 1.41421356237309504880168872421"]


# ---- SAVE and LOAD ---------------------------------------------------------------------

def test_save_load_types_round_trip():
    store = MemoryStore()
    out('SAVE("i", 2^100);SAVE("f", 1.25);SAVE("s", "hi");SETPRECISION(30);SAVE("d", 1/3)', store=store)
    assert out('PRINT(LOAD("i"), LOAD("f"), LOAD("s"), LOAD("d"))', store=store) == [
        "1267650600228229401496703205376 1.25 hi 0.3333333333333333"]
    assert out('SETPRECISION(30);PRINT(LOAD("d"))', store=store) == ["0.333333333333333333333333333333"]


def test_save_is_per_user():
    store = MemoryStore()
    out('SAVE("n", 1)', store=store, user="ada")
    assert out('PRINT(LOAD("n"))', store=store, user="bob") == ["0"]
    assert out('PRINT(LOAD("n"))', store=store, user="ada") == ["1"]


@pytest.mark.parametrize("src, message", [
    ('SAVE(1, 2)', 'SAVE: the name must be a string, e.g. SAVE("score", 1)'),
    ('SAVE("", 2)', "SAVE: names are 1 to 64 characters long"),
    ('x=LOAD(5)', 'LOAD: the name must be a string, e.g. LOAD("score")'),
    ('SAVE("x", 1.0/0.0)' if False else 'SAVE("x", 10.0^300*10^10)', "SAVE: cannot save inf or nan"),
])
def test_save_load_errors(src, message):
    assert run_error(src).message == message
