"""Warble values as (kind, text): the one codec for the stores and the runner's pipe.

    encode_value(2**100)           -> ("int", "1267650600228229401496703205376")
    decode_value("float", "1.5")   -> 1.5

Kinds: "int", "float", "str" and "dec" (a `Decimal`: an arbitrary-precision
number). Text keeps the exact value, so big whole numbers and SETPRECISION
numbers survive a round trip. What a store or the pipe adds (quotas, shape
and size checks) is theirs; this module only converts.
"""
from __future__ import annotations

import decimal
from typing import Any

from .errors import WarbleError
from .formatting import int_to_str, str_to_int
from .precision import is_mpf, mpf_to_decimal

Value = int | float | str | decimal.Decimal


def encode_value(value: Any, digits: int | None = None) -> tuple[str, str]:
    """(kind, text) of a value; raises WarbleError for a type Warble does not keep.

    Whole numbers include bools and int subclasses (as `int`), floats include
    float subclasses, and an arbitrary-precision (mpf) number becomes a
    Decimal with `digits` significant digits (15 if None).
    """
    cls = value.__class__
    if cls is int:
        return "int", int_to_str(value)
    if cls is float:
        return "float", repr(value)
    if cls is str:
        return "str", value
    if cls is decimal.Decimal:
        return "dec", str(value)
    if isinstance(value, int):
        return "int", int_to_str(int(value))
    if isinstance(value, float):
        return "float", repr(float(value))
    if is_mpf(value):
        return "dec", str(mpf_to_decimal(value, digits or 15))
    raise WarbleError(f"cannot store a value of type {cls.__name__}")


def decode_value(kind: str, text: str) -> Value:
    """The value of `encode_value`'s (kind, text); ValueError if they are not one."""
    try:
        if kind == "int":
            return str_to_int(text)
        if kind == "float":
            return float(text)
        if kind == "str":
            return text
        if kind == "dec":
            return decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise ValueError(f"not a number: {text[:40]!r}") from None
    raise ValueError(f"unknown value kind {kind!r}")
