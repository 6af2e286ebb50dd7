"""Size limits found wanting by a security review: each case must stop before the costly operation."""

import pytest

from pidaemon.warble import Limits, compile_program


@pytest.mark.parametrize("source", [
    "SETPRECISION(20);x=2.0^(2^16);PRINT(ROUND(x))",      # ROUND made a 65536-bit integer
    "PRINT(COMB(2^200,2000))",                            # lgamma's estimate cancelled to 0 for huge n
    "PRINT(COMB(2^80,100000))",
    "SETPRECISION(20);x=2.0^(2^20);PRINT(SIN(x))",        # SIN of a 2^20-bit magnitude took seconds
    "SETPRECISION(20);PRINT(EXP(10^12))",
])
def test_huge_values_are_refused_before_they_are_made(source):
    result = compile_program(source).run(limits=Limits(time_limit=5))
    assert result.status == "error"
    assert result.error.message.startswith("number too large")


def test_large_but_allowed_values_still_work():
    assert compile_program("SETPRECISION(20);PRINT(EXP(10^5))").run().output == ["2.8066633604261231793e+43429"]
    assert compile_program("PRINT(COMB(2^20,100)>0)").run().output == ["1"]
