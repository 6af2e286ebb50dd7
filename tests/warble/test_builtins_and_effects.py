"""The extension point (Builtin), the standard effect built-ins and RecordingEffects."""
import pytest

from conftest import compile_error, out, run, run_error
from plugin_builtins import BROKEN, DOUBLE, GREET, Buzzer
from pidaemon.warble import (Builtin, Limits, RecordingEffects, WarbleError, compile_program,
                             lights_builtin, playsound_builtin)


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
