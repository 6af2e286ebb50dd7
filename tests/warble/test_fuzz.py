"""Property tests: the parser never breaks, and the optimised code agrees with
a reference compilation that calls a checked helper for every operation."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pidaemon.warble import (
    Limits,
    MemoryStore,
    RecordingEffects,
    WarbleError,
    compile_program,
)
from pidaemon.warble.compiler import Compiler
from pidaemon.warble.inference import TypeInfo
from pidaemon.warble.library import EFFECT_NAMES, FLT, INT, SIGNATURES, STR
from pidaemon.warble.parser import parse
from pidaemon.warble.program import Program
from pidaemon.warble.result import STATUSES

FUZZ_LIMITS = Limits(max_program_length=4000, max_steps=3000, time_limit=10.0, max_output_lines=100,
                     max_number_digits=500, max_string_length=2000)

WARBLE_CHARS = st.sampled_from(list("PRINT(IF)ELSE{WHILE}FOR;x=yi+1-2*3/4%5^6<>!&|,.\"“”²³ \n0123456789")
                               + ["PRINT", "FOR", "WHILE", "IF", "ELSE", "BREAK", "SQRT", "i++", "#pi{",
                                  "SETPRECISION(", "SAVE(", "LOAD(", "\x00", "\uff30", "\u0661"])


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.lists(WARBLE_CHARS, max_size=120).map("".join)))
def test_parser_never_breaks(source):
    try:
        program = compile_program(source, limits=FUZZ_LIMITS)
    except WarbleError as exc:
        assert exc.line is not None and exc.line >= 1 and exc.column >= 1
        assert exc.line <= source.count("\n") + 1
        return
    result = program.run(limits=FUZZ_LIMITS, store=MemoryStore(), effects=RecordingEffects())
    assert result.status in STATUSES
    if result.error is not None:
        assert "internal error" not in result.error.message


# ---- valid programs, optimised vs reference ---------------------------------------------

VARS = ["a", "b", "c", "s", "i"]
ints = st.one_of(st.integers(-5, 20), st.integers(-10**30, 10**30))
literals = st.one_of(
    ints.map(lambda n: str(n) if n >= 0 else f"({n})"),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: repr(abs(f)) if "e" not in repr(f) else "1.5"),
    st.sampled_from(['"x"', '"ab"', '""', '"%s"']),
)


def expressions():
    leaf = st.one_of(literals, st.sampled_from(VARS))

    def extend(inner):
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%", "^", "==", "<", ">=", "&&", "||"]), inner)
            .map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
            inner.map(lambda e: f"(-({e}))"),
            inner.map(lambda e: f"!{e}"),
            inner.map(lambda e: f"{e}²"),
            st.tuples(st.sampled_from(["ABS", "FLOOR", "CEIL", "SQRT", "ROUND", "EXP"]), inner)
            .map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(st.sampled_from(["MAX", "MIN", "ROUND", "POW", "COMB", "LOG"]), inner, inner)
            .map(lambda t: f"{t[0]}({t[1]},{t[2]})"),
            st.just('LOAD("k")'),
        )
    return st.recursive(leaf, extend, max_leaves=6)


def statements(depth=2):
    simple = st.one_of(
        st.tuples(st.sampled_from(VARS), st.sampled_from(["=", "+=", "-=", "*="]), expressions())
        .map(lambda t: f"{t[0]}{t[1]}{t[2]}"),
        st.sampled_from(VARS).map(lambda v: f"{v}++"),
        expressions().map(lambda e: f"PRINT({e})"),
        st.tuples(st.sampled_from(VARS), expressions()).map(lambda t: f"PRINT({t[0]},{t[1]})"),
        expressions().map(lambda e: f'SAVE("k",{e})'),
    )
    if depth == 0:
        return simple

    def block(inner):
        return st.lists(inner, min_size=0, max_size=3).map(lambda xs: "{" + ";".join(xs) + "}")

    inner = statements(depth - 1)
    loop_body = st.lists(st.one_of(inner, st.sampled_from(["BREAK", "CONTINUE"]).map(
        lambda k: "IF(RANDOM()<0.3){" + k + "}")), max_size=3).map(lambda xs: "{" + ";".join(xs) + "}")
    return st.one_of(
        simple,
        st.tuples(expressions(), block(inner), block(inner)).map(lambda t: f"IF({t[0]}){t[1]}ELSE{t[2]}"),
        st.tuples(st.sampled_from(["j", "k"]), st.integers(-3, 3), st.sampled_from(["<", "<=", ">", ">="]),
                  st.integers(-3, 6), st.sampled_from(["++", "--", "+=2", "-=3"]), loop_body)
        .map(lambda t: f"FOR({t[0]}={t[1]};{t[0]}{t[2]}{t[3]};{t[0]}{t[4]}){t[5]}"),
        st.tuples(st.integers(0, 5), loop_body).map(lambda t: f"w=0;WHILE(w<{t[0]}){{w++;{t[1][1:-1]}}}"),
    )


def reference(source: str, limits: Limits) -> Program:
    """compile_program without the inline fast paths."""
    functions = {n: (s.min_args, s.max_args) for n, s in SIGNATURES.items()}
    tree = parse(source, limits, functions)
    info = TypeInfo(tree, limits.max_int_bits, EFFECT_NAMES)
    compiled = Compiler(info, EFFECT_NAMES, "SETPRECISION" in source, inline=False).compile(tree)
    return Program(source, limits, {}, compiled)


def audit_types(source: str, limits: Limits) -> None:
    """Every variable's final value has a type (and size) that the inference allowed."""
    functions = {n: (s.min_args, s.max_args) for n, s in SIGNATURES.items()}
    tree = parse(source, limits, functions)
    info = TypeInfo(tree, limits.max_int_bits, EFFECT_NAMES)
    compiled = Compiler(info, EFFECT_NAMES, "SETPRECISION" in source, repl_vars=frozenset()).compile(tree)
    state: dict = {}
    Program(source, limits, {}, compiled, repl=True).run(
        limits=limits, store=MemoryStore(), effects=RecordingEffects(), seed=1, state=state)
    for name, value in state["variables"].items():
        kind = INT if type(value) is int else STR if type(value) is str else FLT
        assert kind & info.var_types[name], (name, value, info.var_types[name], source)
        if kind == INT and info.var_bounds[name] < limits.max_int_bits:
            assert value.bit_length() <= info.var_bounds[name], (name, value, source)


def outcome(program: Program, limits: Limits):
    store = MemoryStore()
    store.set("anonymous", "k", 3)
    r = program.run(limits=limits, store=store, effects=RecordingEffects(), seed=1)
    return r.status, r.output, r.error, r.steps, store.get("anonymous", "k")


STATEMENTS = st.lists(statements(), min_size=1, max_size=6)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
@settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(STATEMENTS, st.booleans())
def test_optimised_code_matches_reference(body, precision):
    source = ("SETPRECISION(30);" if precision else "") + 'a=1;b=2.5;c="x";s=0;i=3;' + ";".join(body) + ";PRINT(a,b,c,s,i)"
    try:
        fast = compile_program(source, limits=FUZZ_LIMITS)
    except WarbleError as exc:
        # only size limits can reject a generated program
        assert exc.message.startswith(("number too large", "nesting too deep", "loops nested")), exc
        return
    expected = outcome(reference(source, FUZZ_LIMITS), FUZZ_LIMITS)
    got = outcome(fast, FUZZ_LIMITS)
    audit_types(source, FUZZ_LIMITS)
    if "step_limit" in (got[0], expected[0]):
        # general loops charge the iteration that finds the condition false before
        # giving it back, so at the exact end of the budget they may stop one step early;
        # and where the limit hits differs between the loop kinds
        assert {got[0], expected[0]} <= {"ok", "step_limit"}, source
        shorter, longer = sorted([got[1], expected[1]], key=len)
        assert longer[:len(shorter)] == shorter, source
        return
    assert got == expected, source
    if got[2] is not None:
        assert "internal error" not in got[2].message
