"""How Warble values become text: PRINT, string concatenation, SAVE.

Integers and floats print as Python prints them (`256`, `256.0`,
`0.0005055708180708181`); arbitrary-precision numbers print with the
SETPRECISION number of significant digits.
"""
from __future__ import annotations

import decimal


def int_to_str(n: int) -> str:
    """str(n) without Python's 4300-digit guard (Warble has its own size limit)."""
    try:
        return str(n)
    except ValueError:
        # libmpdec converts in quasi-linear time and has no digit guard
        return str(decimal.Decimal(n))


def str_to_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return int(decimal.Decimal(text))


def format_value(value: object, digits: int | None = None) -> str:
    """Text of a Warble value; `digits` is the SETPRECISION in force, if any."""
    cls = value.__class__
    if cls is str:
        return value  # type: ignore[return-value]
    if cls is int:
        return int_to_str(value)  # type: ignore[arg-type]
    if cls is float:
        return repr(value)
    mpf = getattr(value, "_mpf_", None)
    if mpf is not None:
        from mpmath.libmp import to_str   # loaded: only SETPRECISION makes mpf values
        if digits is None:
            digits = 15
        return to_str(mpf, digits)
    if cls is bool:
        return "1" if value else "0"
    return str(value)
