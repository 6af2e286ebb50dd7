"""Every example of the issue, with its exact expected output."""
from pidaemon.warble import MemoryStore, RecordingEffects
from tests.support.warble import out, run


def test_hello_cluster_post():
    assert out('#pi{PRINT("hello cluster")}') == ["hello cluster"]


def test_with_and_without_wrapper_and_braces():
    assert out('PRINT("hello cluster")') == ["hello cluster"]
    assert out('{PRINT("hello cluster")}') == ["hello cluster"]
    assert out('#pi{ PRINT("hello cluster") }') == ["hello cluster"]


def test_integer_power():
    assert out("PRINT(16^2)") == ["256"]


def test_decimal_power():
    assert out("PRINT(16.0^2)") == ["256.0"]


def test_bbp_term():
    src = "k=1;PRINT(1/16.0^2*(4.0/(8*k+1)-2.0/(8*k+4)-1.0/(8*k+5)-1.0/(8*k+6)))"
    assert out(src) == ["0.0005055708180708181"]


def test_true_division():
    assert out("PRINT(1/2, 4/2)") == ["0.5 2.0"]


def test_superscript_powers():
    assert out("x=3;PRINT(x², x³, 16.0²)") == ["9 27 256.0"]
    src = "k=1;x=1/16.0²*(4.0/(8*k+1)-2.0/(8*k+4)-1.0/(8*k+5)-1.0/(8*k+6));PRINT(x)"
    assert out(src) == ["0.0005055708180708181"]


def test_string_concatenation_with_number():
    assert out('x=5;PRINT("x="+x)') == ["x=5"]
    assert out('x=2.5;PRINT(x+" m")') == ["2.5 m"]


def test_typographic_quotes():
    assert out("PRINT(\u201chello cluster\u201d)") == ["hello cluster"]
    assert out("PRINT(\u201dhello cluster\u201d)") == ["hello cluster"]


def test_unset_variable_is_an_error_naming_it():
    result = run("x=1;PRINT(x+y)")
    assert result.status == "error"
    assert result.error.message == "variable y is not set"
    assert (result.error.line, result.error.column) == (1, 13)


def test_statements_run_together():
    assert out("x=0PRINT(x)") == ["0"]


def test_separators():
    assert out("x=1;PRINT(x)\nPRINT(x+1)") == ["1", "2"]


def test_increment_decrement_and_compound():
    assert out("i=5;i++;PRINT(i);i--;i--;PRINT(i)") == ["6", "4"]
    assert out("x=10;x+=5;PRINT(x);x-=3;PRINT(x);x*=2;PRINT(x);x/=4;PRINT(x)") == ["15", "12", "24", "6.0"]


def test_blocks_follow_statements_directly():
    effects = RecordingEffects()
    result = run("FOR(i=0;i<24;i++){LIGHTS(i,0,255,0)}SLEEP(20);FOR(i=0;i<24;i++){LIGHTS(i,0,0,0)}",
                 effects=effects)
    assert result.status == "ok"
    assert effects.events[:24] == [("LIGHTS", (i, 0, 255, 0)) for i in range(24)]
    assert effects.events[24] == ("SLEEP", (20.0,))
    assert effects.events[25:] == [("LIGHTS", (i, 0, 0, 0)) for i in range(24)]


def test_if_else_and_else_if():
    src = "FOR(i=0;i<3;i++){IF(i==0){PRINT(\"zero\")}ELSE IF(i==1){PRINT(\"one\")}ELSE{PRINT(\"many\")}}"
    assert out(src) == ["zero", "one", "many"]
    assert out("IF(1>2){PRINT(1)}") == []
    assert out("IF(1<2){PRINT(1)}ELSE{PRINT(2)}") == ["1"]


def test_while_prints_0_to_9():
    assert out("i=0;WHILE(i<10){PRINT(i);i++}") == [str(i) for i in range(10)]


def test_for_prints_0_to_9():
    assert out("FOR(i=0;i<10;i++){PRINT(i)}") == [str(i) for i in range(10)]


def test_for_counts_down():
    assert out("FOR(i=10;i>0;i--){PRINT(i)}") == [str(i) for i in range(10, 0, -1)]


def test_break_and_continue():
    assert out("FOR(i=0;i<10;i++){IF(i==2){CONTINUE};IF(i==5){BREAK};PRINT(i)}") == ["0", "1", "3", "4"]
    assert out("i=0;WHILE(1){i++;IF(i%2){CONTINUE};IF(i>6){BREAK};PRINT(i)}") == ["2", "4", "6"]


def test_print_several_arguments():
    assert out('PRINT("a", 1, 2.5)') == ["a 1 2.5"]


def test_round_acos():
    assert out("PRINT(2*ROUND(ACOS(0.0),3))") == ["3.142"]


def test_setprecision_pi_50_digits():
    assert out("SETPRECISION(50);PRINT(2*ACOS(0))") == [
        "3.1415926535897932384626433832795028841971693993751"]


def test_save_load_across_runs():
    store = MemoryStore()
    assert out('SAVE("pi",1)', store=store, user="ada") == []
    assert out('x=LOAD("pi");x++;SAVE("pi",x);PRINT(x)', store=store, user="ada") == ["2"]
    assert store.get("ada", "pi") == 2


def test_load_of_unsaved_name_is_zero():
    assert out('PRINT(LOAD("never"))') == ["0"]


def test_bbp_with_decimal_power_overflows_clearly():
    result = run("s=0;FOR(k=0;k<1000;k++){s+=1/16.0^k*(4/(8*k+1)-2/(8*k+4)-1/(8*k+5)-1/(8*k+6))};PRINT(s)")
    assert result.status == "error"
    assert result.error.message.startswith("number too large")
    assert (result.error.line, result.error.column) == (1, 34)   # the ^


def test_bbp_with_integer_power():
    src = "s=0;FOR(k=0;k<1000;k++){s+=1/16^k*(4/(8*k+1)-2/(8*k+4)-1/(8*k+5)-1/(8*k+6))};PRINT(s)"
    assert out(src) == ["3.141592653589793"]
