"""Arbitrary precision for SETPRECISION, on a private mpmath context per run.

Each run that calls SETPRECISION gets its own `mpmath.MPContext`, so one
program's precision never leaks into another program or into the process's
global `mpmath.mp`.

mpmath is imported on first use (`new_context`): a program without
SETPRECISION never needs it, and it is most of Warble's import time. Every
mpf value comes from a context, so the functions that take one find mpmath
loaded. mpmath uses GMP through gmpy2 when it is installed (its backend is
then "gmpy"; MPMATH_NOGMPY=1 turns that off). The runner's zygote calls
`load_mpmath()` before it forks, so that the sandboxes share it.
"""
from __future__ import annotations

import decimal
from typing import TYPE_CHECKING

from .errors import WarbleError

if TYPE_CHECKING:
    import mpmath


def load_mpmath():
    """Import mpmath (and gmpy2, which mpmath imports when it is there); returns the module."""
    import mpmath
    return mpmath


def mpmath_backend() -> str:
    """"gmpy" when mpmath computes with GMP (gmpy2), "python" otherwise."""
    return load_mpmath().libmp.BACKEND


def new_context(digits: int) -> "mpmath.MPContext":
    ctx = load_mpmath().MPContext()
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
    from mpmath.libmp import to_str   # loaded: value is an mpf
    return decimal.Decimal(to_str(value._mpf_, digits))


def decimal_to_number(ctx, value: decimal.Decimal):
    """A saved arbitrary-precision number back as mpf (precision on) or float."""
    if ctx is None:
        try:
            return float(value)
        except OverflowError:
            raise WarbleError("number too large")
    return ctx.mpf(str(value))
