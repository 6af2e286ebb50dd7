"""The extension point (Builtin), the standard effect built-ins and RecordingEffects."""
from decimal import Decimal

import pytest

from pidaemon.warble import (
    Builtin,
    Limits,
    RecordingEffects,
    UnknownFunction,
    WarbleError,
    compile_program,
    lights_builtin,
    playsound_builtin,
)
from tests.support.warble import compile_error, out, run, run_error
from tests.support.warble_builtins import BROKEN, DOUBLE, GREET, Buzzer


def test_plugin_builtins_are_callable():
    assert out("PRINT(DOUBLE(21), GREET(\"ada\", 1), GREET())", builtins=[DOUBLE, GREET]) == [
        "42 hello ada+1 hello "]


def test_plugin_validation_error_has_the_call_position():
    result = run('x=1;y=DOUBLE("a")', builtins=[DOUBLE])
    assert result.status == "error"
    assert (result.error.message, result.error.line, result.error.column) == ("DOUBLE needs a number", 1, 7)


def test_plugin_failure_shows_no_python_internals():
    result = run("BROKEN()", builtins=[BROKEN])
    assert result.error.message == "BROKEN failed"
    assert "0xdeadbeef" not in result.error.message


def test_plugin_arity_is_checked_at_compile_time():
    assert compile_error("DOUBLE(1,2)", builtins=[DOUBLE]).message == "DOUBLE takes 1 argument, not 2"


def test_unknown_without_the_plugin():
    assert compile_error("DOUBLE(1)").message == "unknown function DOUBLE"


@pytest.mark.parametrize("src, name, message, maybe", [
    ("x=1;DOUBLE(x)", "DOUBLE", "unknown function DOUBLE", True),
    ("x=1;BUZZ_2(x)", "BUZZ_2", "unknown function BUZZ_2", True),
    ("x=1;print(x)", "print", "unknown function print: built-in names are upper case (PRINT)", False),
    ("x=1;Sqrt(x)", "Sqrt", "unknown function Sqrt: built-in names are upper case (SQRT)", False),
])
def test_an_unknown_function_is_its_own_error_type(src, name, message, maybe):
    """A service that compiles without the workers' plugins decides by the type, not the message."""
    error = compile_error(src)
    assert isinstance(error, UnknownFunction)
    assert (error.name, error.message, error.line, error.column) == (name, message, 1, 5)
    assert error.may_be_plugin_builtin is maybe


def test_a_lower_case_name_that_is_no_built_in_is_not_an_unknown_function():
    error = compile_error("bar(1)")
    assert error.message == "bar is not a function" and not isinstance(error, UnknownFunction)
    error = compile_error("foo(1)")
    assert error.message == "foo is not a function; did you mean FLOOR?" and not isinstance(error, UnknownFunction)


@pytest.mark.parametrize("src, builtins, name, message, maybe", [
    ("DOUBEL(2)", [DOUBLE], "DOUBEL", "unknown function DOUBEL; did you mean DOUBLE?", True),
    ("DOUBEL(2)", [], "DOUBEL", "unknown function DOUBEL", True),
    ("x=GRET(1)", [DOUBLE, GREET], "GRET", "unknown function GRET; did you mean GREET?", True),
    ("double(2)", [DOUBLE], "double", "unknown function double: built-in names are upper case (DOUBLE)", False),
    ("PRNT(2)", [DOUBLE], "PRNT", "unknown function PRNT; did you mean PRINT?", True),
])
def test_did_you_mean_knows_the_builtins_given(src, builtins, name, message, maybe):
    """The hint is drawn from the built-ins this compile has (a plugin's included); the error stays an
    UnknownFunction with the name as written, for the service to let a possible plugin built-in through."""
    error = compile_error(src, builtins=builtins)
    assert isinstance(error, UnknownFunction)
    assert (error.message, error.name, error.may_be_plugin_builtin) == (message, name, maybe)


@pytest.mark.parametrize("name", ["PRINT", "SAVE", "SQRT", "SETPRECISION", "IF", "WHILE"])
def test_plugins_cannot_shadow_the_standard_library(name):
    with pytest.raises(ValueError, match=f"would shadow Warble's own {name}"):
        compile_program("PRINT(1)", builtins=[Builtin(name, 0, 0, f"{name}(): x. {name}()", perform=print)])


def test_duplicate_plugin_names():
    with pytest.raises(ValueError, match="defined twice"):
        compile_program("PRINT(1)", builtins=[DOUBLE, DOUBLE])


@pytest.mark.parametrize("kwargs", [{"name": "buzz"}, {"name": "1X"}, {"name": "A-B"},
                                    {"min_args": 2, "max_args": 1}, {"perform": "not callable"}])
def test_builtin_definition_is_validated(kwargs):
    fields = {"name": "BUZZ", "min_args": 0, "max_args": 1, "doc": "BUZZ(): x. BUZZ()", "perform": print}
    fields.update(kwargs)
    with pytest.raises(ValueError):
        Builtin(**fields)


def test_lights_and_playsound_can_be_replaced():
    seen = []
    lights = lights_builtin(32, lambda *a: seen.append(("L",) + a))
    sound = playsound_builtin(["ding"], lambda name: seen.append(("S", name)))
    assert out('LIGHTS(31,1,2,3);PLAYSOUND("DING")', builtins=[lights, sound]) == []
    assert seen == [("L", 31, 1, 2, 3), ("S", "ding")]
    assert run_error('PLAYSOUND("beep")', builtins=[sound]).message == 'PLAYSOUND: unknown sound "beep" (sounds: ding)'


def test_plugin_effect_builtin_runs_in_process():
    buzzer = Buzzer()
    buzz = Builtin("BUZZ", 1, 1, "BUZZ(n): buzz. BUZZ(2)", perform=buzzer, effect=True)
    assert out("BUZZ(2);BUZZ(3)", builtins=[buzz]) == []
    assert buzzer.calls == [(2,), (3,)]


def test_an_effect_returns_what_its_perform_returned(run_anywhere):
    buzzer = Buzzer()
    buzz = Builtin("BUZZ", 1, 1, "BUZZ(n): buzz. BUZZ(2)", perform=buzzer, effect=True)
    result = run_anywhere("PRINT(BUZZ(2), BUZZ(3));PRINT(LIGHTS(0,1,2,3), PLAYSOUND(\"bell\"))", builtins=[buzz])
    assert (result.status, result.output) == ("ok", ["2 5", "0 0"])
    assert buzzer.calls == [(2,), (3,)]


@pytest.mark.parametrize("value, src, printed", [
    (7, "PRINT(FX())", "7"), (10**30, "PRINT(FX())", "1" + "0" * 30), (2.5, "PRINT(FX())", "2.5"),
    ("done", "PRINT(FX())", "done"), (True, "PRINT(FX())", "1"), (None, "PRINT(FX())", "0"),
    (Decimal("0.12345678901234567891"), "PRINT(FX())", "0.12345678901234568"),
    (Decimal("0.12345678901234567891"), "SETPRECISION(20);PRINT(FX())", "0.12345678901234567891"),
])
def test_an_effects_value_is_converted_like_a_plugin_builtins(run_anywhere, value, src, printed):
    effect = Builtin("FX", 0, 0, "FX(): x. FX()", perform=lambda args: value, effect=True)
    assert run_anywhere(src, builtins=[effect]).output == [printed]


def test_an_effect_error_is_the_programs_error_at_the_call(run_anywhere):
    def busy(args):
        raise WarbleError("BUZZ: the buzzer is busy")
    buzz = Builtin("BUZZ", 1, 1, "BUZZ(n): buzz. BUZZ(2)", perform=busy, effect=True)
    result = run_anywhere('PRINT("a")\nx=1+BUZZ(1);PRINT("b")', builtins=[buzz])
    assert (result.status, result.output) == ("error", ["a"])
    assert (result.error.message, result.error.line, result.error.column) == ("BUZZ: the buzzer is busy", 2, 5)


def test_an_effects_unusable_value_is_an_error_at_the_call(run_anywhere):
    odd = Builtin("ODD", 0, 0, "ODD(): x. ODD()", perform=lambda args: object(), effect=True)
    error = run_anywhere("x=1;ODD()", builtins=[odd]).error
    assert (error.message, error.line, error.column) == ("ODD returned a value Warble cannot use", 1, 5)


@pytest.mark.parametrize("src, message", [
    ("LIGHTS(24,0,0,0)", "LIGHTS: the light index must be a whole number from 0 to 23, got 24"),
    ("LIGHTS(-1,0,0,0)", "LIGHTS: the light index must be a whole number from 0 to 23, got -1"),
    ("LIGHTS(0.5,0,0,0)", "LIGHTS: the light index must be a whole number from 0 to 23, got 0.5"),
    ("LIGHTS(0,256,0,0)", "LIGHTS: red must be a whole number from 0 to 255, got 256"),
    ("LIGHTS(0,0,-1,0)", "LIGHTS: green must be a whole number from 0 to 255, got -1"),
    ('LIGHTS(0,0,0,"x")', 'LIGHTS: blue must be a whole number from 0 to 255, got "x"'),
    ("LIGHTS(0,0,0,10^400)", "LIGHTS: blue must be a whole number from 0 to 255, got 1000000000000000000000000000000000000..."),
    ('PLAYSOUND("nope")', 'PLAYSOUND: unknown sound "nope" (sounds: beep, bell, chime, applause, drum, whistle)'),
    ("PLAYSOUND(1)", 'PLAYSOUND: the sound name must be a string, e.g. PLAYSOUND("beep")'),
])
def test_effect_validation(src, message):
    effects = RecordingEffects()
    err = run_error(src, effects=effects)
    assert (err.message, err.line, err.column) == (message, 1, 1)
    assert effects.events == []


def test_effects_are_recorded_in_order_with_whole_numbers():
    effects = RecordingEffects()
    assert out('LIGHTS(1,255.0,0,0);SLEEP(0.5);PLAYSOUND("Chime");LIGHTS(2,0,0,0)', effects=effects) == []
    assert effects.events == [("LIGHTS", (1, 255, 0, 0)), ("SLEEP", (0.5,)), ("PLAYSOUND", ("chime",)),
                              ("LIGHTS", (2, 0, 0, 0))]


def test_light_count_and_sounds_come_from_limits():
    limits = Limits(light_count=4, sounds=("tada",))
    effects = RecordingEffects()
    assert out('LIGHTS(3,0,0,0);PLAYSOUND("tada")', limits=limits, effects=effects) == []
    assert run_error("LIGHTS(4,0,0,0)", limits=limits).message.endswith("from 0 to 3, got 4")


def test_plugin_values_are_normalised():
    weird = Builtin("WEIRD", 0, 0, "WEIRD(): x. WEIRD()", perform=lambda args: object())
    assert run_error("x=WEIRD()", builtins=[weird]).message == "WEIRD returned a value Warble cannot use"
    none = Builtin("NONE", 0, 0, "NONE(): x. NONE()", perform=lambda args: None)
    assert out("PRINT(NONE())", builtins=[none]) == ["0"]
    flag = Builtin("FLAG", 0, 0, "FLAG(): x. FLAG()", perform=lambda args: True)
    assert out("PRINT(FLAG())", builtins=[flag]) == ["1"]


def test_warble_error_from_validate_keeps_its_message():
    def refuse(args):
        raise WarbleError("NOPE: not today")
    nope = Builtin("NOPE", 0, 0, "NOPE(): x. NOPE()", perform=print, validate=refuse)
    assert run_error("x=1\n  NOPE()", builtins=[nope]).message == "NOPE: not today"
