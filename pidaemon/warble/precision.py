"""Arbitrary precision for SETPRECISION, on a private mpmath context per run.

Each run that calls SETPRECISION gets its own `mpmath.MPContext`, so one
program's precision never leaks into another program or into the process's
global `mpmath.mp`.
"""
from __future__ import annotations

import decimal

import mpmath
from mpmath.libmp import to_str

from .errors import WarbleError


def new_context(digits: int) -> mpmath.MPContext:
    ctx = mpmath.MPContext()
    ctx.dps = digits
    return ctx


def is_mpf(value: object) -> bool:
    return hasattr(value, "_mpf_")


def to_mpf(ctx, value):
    """A Warble number as an mpf of `ctx`; strings are refused (mpmath would parse them)."""
    if value.__class__ is str:
        raise TypeError("string")
    if hasattr(value, "_mpf_") and value.__class__ is ctx.mpf:
        return value
    return ctx.mpf(value)


# Magnitudes up to about 10^78000: beyond, one C-level operation on the number
# (SIN's argument reduction, printing, ROUND) costs seconds.
MAX_EXPONENT_BITS = 1 << 18


def real_result(value):
    """Refuse complex results and infinities that mpmath gives where floats raise."""
    if not hasattr(value, "_mpf_"):
        raise ValueError("not real")
    man, exp, bc = value._mpf_[1:4]
    if not man and exp:          # mpmath encodes inf/nan with a zero mantissa and non-zero exp
        raise ValueError("not finite")
    if abs(exp) + bc > MAX_EXPONENT_BITS:
        raise WarbleError("number too large")
    return value


def mpf_to_decimal(value, digits: int) -> decimal.Decimal:
    return decimal.Decimal(to_str(value._mpf_, digits))


def decimal_to_number(ctx, value: decimal.Decimal):
    """A saved arbitrary-precision number back as mpf (precision on) or float."""
    if ctx is None:
        try:
            return float(value)
        except OverflowError:
            raise WarbleError("number too large")
    return ctx.mpf(str(value))
