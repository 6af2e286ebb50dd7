"""The language: lexing, parsing, operators, control flow and error positions."""
import pytest

from tests.support.warble import compile_error, out, run, run_error


@pytest.mark.parametrize("src, expected", [
    ("PRINT(2+3*4)", "14"),
    ("PRINT((2+3)*4)", "20"),
    ("PRINT(2^3^2)", "512"),            # right-associative
    ("PRINT(-2^2)", "-4"),              # ^ binds tighter than unary minus, as in Python
    ("PRINT(2^-1)", "0.5"),
    ("PRINT(7%3, -7%3, 7.5%2)", "1 2 1.5"),
    ("PRINT(7/2)", "3.5"),
    ("PRINT(10-4-3)", "3"),
    ("PRINT(2*3²)", "18"),
    ("PRINT(-3²)", "-9"),
    ("PRINT(1+2==3)", "1"),
    ("PRINT(1<2, 2<1, 2<=2, 3>=4, 1!=1, 1==1.0)", "1 0 1 0 0 1"),
    ("PRINT(!0, !5, !!3)", "1 0 1"),
    ("PRINT(1&&0, 1||0, 0||0, 2&&3)", "0 1 0 1"),
    ("PRINT(1<2 && 2<3 || 0)", "1"),
    ('PRINT("a"=="a", "a"<"b", "a"==1)', "1 1 0"),
    ('PRINT("ab"*3, 2*"x")', "ababab xx"),
    ("PRINT(0.1+0.2)", "0.30000000000000004"),
    ("PRINT(10^20, 2.0^70)", "100000000000000000000 1.1805916207174113e+21"),
    ("PRINT(5, -5, +5, - -5)", "5 -5 5 5"),
    ("PRINT(.5+1.)", "1.5"),
    ("PRINT(1/3)", "0.3333333333333333"),
    ("PRINT(2^0.5)", "1.4142135623730951"),
    ("PRINT(3*1.0)", "3.0"),
])
def test_expressions(src, expected):
    assert out(src) == [expected]


def test_logic_short_circuits():
    # the right side would be an error if it ran
    assert out("PRINT(0 && 1/0, 1 || 1/0)") == ["0 1"]


def test_string_concat_both_sides_and_chain():
    assert out('a="x";b=1;PRINT(a+b+2, b+2+a, "n="+1.5+"!")') == ["x12 3x n=1.5!"]


def test_string_with_spaces_and_symbols():
    assert out('PRINT("a;b{c}(d) // # %s {0}")') == ["a;b{c}(d) // # %s {0}"]


def test_empty_print_and_empty_program():
    assert out("PRINT()") == [""]
    assert out("") == []
    assert out("  ;;\n ; ") == []


def test_newlines_separate_and_are_allowed_in_parentheses():
    assert out("x=1\ny=2\nPRINT(x,\n y)") == ["1 2"]
    assert out("FOR(i=0;\ni<2;\ni++)\n{\nPRINT(i)\n}") == ["0", "1"]
    assert out("IF(0){PRINT(1)}\nELSE{PRINT(2)}") == ["2"]
    assert out("x=1+\n2\nPRINT(x)") == ["3"]


def test_newline_ends_a_statement():
    err = compile_error("x=1\n-1")
    assert (err.line, err.column) == (2, 1)


def test_names_run_into_keywords():
    assert out("y=3;x=yPRINT(x)") == ["3"]
    assert out("i=0;WHILE(i<2){i++}PRINT(i)") == ["2"]
    assert out("x=1IF(x){PRINT(x)}") == ["1"]


def test_variables_are_case_sensitive_and_may_use_digits_underscores():
    assert out("a=1;A=2;a_1=3;_b=4;PRINT(a,A,a_1,_b)") == ["1 2 3 4"]


def test_elseif_and_nested_blocks():
    src = "x=5;IF(x<3){PRINT(1)}ELSEIF(x<6){IF(x==5){PRINT(2)}}ELSE{PRINT(3)}"
    assert out(src) == ["2"]


def test_bare_block_statement():
    assert out("{x=1;{PRINT(x)}}") == ["1"]


def test_for_loop_variable_after_loop():
    assert out("FOR(i=0;i<3;i++){};PRINT(i)") == ["3"]
    assert out("FOR(i=5;i<3;i++){};PRINT(i)") == ["5"]
    assert out("FOR(i=0;i<=3;i+=2){};PRINT(i)") == ["4"]
    assert out("FOR(i=3;i>=0;i--){};PRINT(i)") == ["-1"]
    assert out("FOR(i=0;i<10;i++){IF(i==4){BREAK}};PRINT(i)") == ["4"]
    assert out("FOR(i=0.5;i<2;i++){PRINT(i)};PRINT(i)") == ["0.5", "1.5", "2.5"]


def test_for_loop_with_changing_bound_is_a_general_loop():
    assert out("n=5;FOR(i=0;i<n;i++){n--};PRINT(i,n)") == ["3 2"]
    assert out("FOR(i=0;i<6;i++){PRINT(i);i++}") == ["0", "2", "4"]


def test_for_loop_parts_may_be_empty():
    assert out("i=0;FOR(;i<3;){PRINT(i);i++}") == ["0", "1", "2"]
    assert out("i=0;FOR(;;i++){IF(i==2){BREAK}};PRINT(i)") == ["2"]


def test_continue_in_general_for_runs_the_step():
    assert out("n=10;FOR(i=0;i<n;i++){IF(i%3){CONTINUE};PRINT(i)}") == ["0", "3", "6", "9"]


def test_nested_loops_and_break_inner_only():
    src = "FOR(i=0;i<3;i++){FOR(j=0;j<3;j++){IF(j>i){BREAK};PRINT(i*10+j)}}"
    assert out(src) == ["0", "10", "11", "20", "21", "22"]


def test_while_with_string_condition_truthiness():
    assert out('s="";IF(s){PRINT(1)}ELSE{PRINT(0)};IF("x"){PRINT(2)}') == ["0", "2"]


def test_steps_are_exact():
    assert run("FOR(i=0;i<10;i++){}").steps == 10
    assert run("FOR(i=0;i<10;i++){IF(i==3){BREAK}}").steps == 4
    assert run("i=0;WHILE(i<10){i++}").steps == 10
    assert run("FOR(i=0;i<5;i++){PRINT(i)}").steps == 10
    assert run("FOR(i=0;i<3000;i++){FOR(j=0;j<2;j++){}}").steps == 9000
    assert run("x=SQRT(4)+SQRT(9)").steps == 2


# ---- errors with positions ------------------------------------------------------

@pytest.mark.parametrize("src, message, line, column", [
    ("PRINT(1", "missing ) to close the ( at line 1, column 6; found the end of the program", 1, 8),
    ("PRINT(1))", "expected a statement, found ')'", 1, 9),
    ("x=(1+2", "missing ) to close the ( at line 1, column 3; found the end of the program", 1, 7),
    ("IF(1){PRINT(1)", "missing } to close the { at line 1, column 6; found the end of the program", 1, 15),
    ("}", "unexpected } (no { to close)", 1, 1),
    ("x=", "expected a value, found the end of the program", 1, 3),
    ("x=1+*2", "expected a value, found '*'", 1, 5),
    ("x 1", "expected =, +=, -=, *=, /=, %=, ++ or -- after x, found the number 1", 1, 3),
    ("1+2", "expected a statement, found the number 1", 1, 1),
    ("FOO(1)", "unknown function FOO; did you mean FLOOR?", 1, 1),
    ("NOPE(1)", "unknown function NOPE", 1, 1),
    ("print(1)", "unknown function print: built-in names are upper case (PRINT)", 1, 1),
    ("x(1)", "x is not a function", 1, 1),
    ("PRINT=1", "PRINT is a built-in function, not a variable", 1, 1),
    ("x=PRINT", "PRINT is a built-in function: call it as PRINT(...)", 1, 3),
    ("SQRT(1,2)", "SQRT takes 1 argument, not 2", 1, 1),
    ("ATAN2(1)", "ATAN2 takes 2 arguments, not 1", 1, 1),
    ("RANDOM(1)", "RANDOM takes 0 arguments, not 1", 1, 1),
    ("BREAK", "BREAK outside a loop", 1, 1),
    ("ELSE{}", "ELSE without IF", 1, 1),
    ("IF=1", "expected ( after IF, found '='", 1, 3),
    ("x=WHILE", "unexpected keyword WHILE", 1, 3),
    ("IF 1{}", "expected ( after IF, found the number 1", 1, 4),
    ("WHILE(1)PRINT(1)", "expected { to start the block of WHILE, found 'PRINT'", 1, 9),
    ("x=1<2<3", "comparisons cannot be chained: write a<b && b<c", 1, 6),
    ('PRINT("abc)', "unterminated string: it needs a closing quote", 1, 7),
    ("x='a'", "unexpected character ''' (U+0027): strings use double quotes \"...\"", 1, 3),
    ("x=1.2.3", "a number has at most one decimal point", 1, 6),
    ("++x", "++ goes after a variable name (i++)", 1, 1),
    ("PRINT(1)\n\n  x=@", "unexpected character '@' (U+0040)", 3, 5),
    ("#pi PRINT(1)", "expected { after #pi", 1, 5),
])
def test_syntax_errors(src, message, line, column):
    err = compile_error(src)
    assert (err.message, err.line, err.column) == (message, line, column)


@pytest.mark.parametrize("src, message, line, column", [
    ("x=1/0", "division by zero", 1, 4),
    ("x=1%0", "modulo by zero", 1, 4),
    ("x=1.5/0", "division by zero", 1, 6),
    ('x="a"-1', "cannot use - with a string", 1, 6),
    ('x="a"%1', "cannot use % with a string", 1, 6),
    ('x="a"^2', "cannot use ^ with a string", 1, 6),
    ('x=-"a"', "cannot use - with a string", 1, 3),
    ('IF("a"<1){}', "cannot compare a string with a number", 1, 7),
    ('x="ab"*1.5', 'a string can only be repeated by a whole number ("ab"*3)', 1, 7),
    ("x=SQRT(-1)", "SQRT: the argument is outside the function's domain", 1, 3),
    ("x=LN(0)", "LN: the argument is outside the function's domain", 1, 3),
    ('x=SQRT("4")', "SQRT needs numbers, not strings", 1, 3),
    ('x=MAX(1,"a")', "cannot compare a string with a number", 1, 3),
    ("x=(-8)^(1/3)", "result is not a real number (negative number to a fractional power)", 1, 7),
    ("x=EXP(1000)", "number too large: decimal numbers go up to about 1.8e308 (use whole numbers, "
                    "e.g. 16^k instead of 16.0^k, or SETPRECISION)", 1, 3),
    ("y=2\nx=y+z", "variable z is not set", 2, 5),
    ("IF(0){z=1};PRINT(z)", "variable z is not set", 1, 18),
    ("x=0;x+=q", "variable q is not set", 1, 8),
    ("u++", "variable u is not set", 1, 1),
    ("FOR(i=0;i<\"a\";i++){}", "cannot compare a string with a number", 1, 1),
])
def test_runtime_errors(src, message, line, column):
    err = run_error(src)
    assert (err.message, err.line, err.column) == (message, line, column)


# ---- did you mean ----------------------------------------------------------------

@pytest.mark.parametrize("src, message, column", [
    ("PRNT(1)", "unknown function PRNT; did you mean PRINT?", 1),
    ("x=SQRTT(2)", "unknown function SQRTT; did you mean SQRT?", 3),
    ("x=Sqrt(2)", "unknown function Sqrt: built-in names are upper case (SQRT)", 3),
    ("prnt(1)", "prnt is not a function; did you mean PRINT?", 1),
    ("x=1;for(i=0;i<3;i++){}", "for is not a function: keywords are upper case (FOR)", 5),
    ("while(1){}", "while is not a function: keywords are upper case (WHILE)", 1),
    ("WHLE(1){}", "unknown function WHLE; did you mean WHILE?", 1),
    ("IF(1){}ELSIF(0){}", "unknown function ELSIF; did you mean ELSEIF?", 8),
    ("SETPRECISON(50)", "unknown function SETPRECISON; did you mean SETPRECISION?", 1),
    ("IF(1){}else{}", "expected =, +=, -=, *=, /=, %=, ++ or -- after else, found '{': "
                      "keywords are upper case (ELSE)", 12),
    ("FOR(;;){BRAEK}", "expected =, +=, -=, *=, /=, %=, ++ or -- after BRAEK, found '}'; did you mean BREAK?", 14),
])
def test_an_unknown_name_gets_the_closest_known_one(src, message, column):
    err = compile_error(src)
    assert (err.message, err.line, err.column) == (message, 1, column)


@pytest.mark.parametrize("src, message, column", [
    ("total=0;FOR(i=0;i<3;i++){totl+=i};PRINT(total)", "variable totl is not set; did you mean total?", 26),
    ("value=1;PRINT(valeu)", "variable valeu is not set; did you mean value?", 15),
    ("x=1;PRINT(X)", "variable X is not set; did you mean x?", 11),
    # a variable that is given a value somewhere is not a misspelling, just not set yet
    ("IF(0){count=1};counts=2;PRINT(count)", "variable count is not set", 31),
    # nothing close: no guess
    ("x=1;y=2;PRINT(z)", "variable z is not set", 15),
])
def test_a_misspelled_variable_gets_the_closest_variable(src, message, column):
    err = run_error(src)
    assert (err.message, err.line, err.column) == (message, 1, column)


def test_output_before_an_error_is_kept():
    result = run("PRINT(1);PRINT(2);x=1/0;PRINT(3)")
    assert result.status == "error"
    assert result.output == ["1", "2"]


def test_error_positions_count_the_wrapper():
    result = run("#pi{PRINT(y)}")
    assert (result.error.line, result.error.column) == (1, 11)


def test_to_dict_is_json_ready():
    import json
    result = run("PRINT(1);x=1/0")
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status"] == "error"
    assert data["output"] == ["1"]
    assert data["error"] == {"message": "division by zero", "line": 1, "column": 13}
    assert data["steps"] == 1
    assert isinstance(data["elapsed"], float)
