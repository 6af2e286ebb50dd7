"""Checked arithmetic: sizes are checked before a big value is made.

The compiler emits plain Python operators where the operand types and sizes
make them safe, and calls these helpers otherwise: `+` when a string may be
involved, `*` when two integers may be large, `^` always, and `/` and
decimal literals while SETPRECISION is in force. The helpers are methods of
the run (`runtime.Run`), which holds the limits and the precision context.
"""
from __future__ import annotations

import math

from .errors import WarbleError
from .formatting import format_value
from .precision import real_result, to_mpf

FLOAT_TOO_LARGE = ("number too large: decimal numbers go up to about 1.8e308 "
                   "(use whole numbers, e.g. 16^k instead of 16.0^k, or SETPRECISION)")


class Arithmetic:
    max_bits: int
    max_str: int
    max_digits: int
    ctx: object
    digits: int | None

    def too_large(self) -> WarbleError:
        return WarbleError(f"number too large (more than {self.max_digits} digits)")

    def string_too_long(self, length: int) -> WarbleError:
        return WarbleError(f"string too long: {length} characters, the limit is {self.max_str}")

    def fmt(self, value) -> str:
        return format_value(value, self.digits)

    # `+` with a possible string on either side
    def add(self, a, b):
        ca = a.__class__
        cb = b.__class__
        if ca is str or cb is str:
            sa = a if ca is str else self.fmt(a)
            sb = b if cb is str else self.fmt(b)
            if len(sa) + len(sb) > self.max_str:
                raise self.string_too_long(len(sa) + len(sb))
            return sa + sb
        return a + b

    def mul(self, a, b):
        ca = a.__class__
        cb = b.__class__
        if ca is int and cb is int:
            if a.bit_length() + b.bit_length() > self.max_bits:
                raise self.too_large()
            return a * b
        if ca is str or cb is str:
            if ca is str and cb is int:
                text, times = a, b
            elif ca is int and cb is str:
                text, times = b, a
            else:
                raise WarbleError("a string can only be repeated by a whole number (\"ab\"*3)")
            if times <= 0 or not text:
                return ""
            if len(text) * times > self.max_str:
                raise self.string_too_long(len(text) * times)
            return text * times
        if self.ctx is not None:
            return real_result(self.ctx.fmul(a, b))
        return a * b

    def mod(self, a, b):
        if a.__class__ is str or b.__class__ is str:
            raise WarbleError("cannot use % with a string")
        return a % b

    def div(self, a, b):
        """`/` while SETPRECISION may be in force (otherwise inlined as a / b)."""
        ctx = self.ctx
        if ctx is None:
            return a / b
        if a.__class__ is str or b.__class__ is str:
            raise TypeError("string")
        if b == 0:
            raise ZeroDivisionError
        return real_result(ctx.fdiv(a, b))

    def pow(self, a, b):
        ca = a.__class__
        cb = b.__class__
        if ca is str or cb is str:
            raise WarbleError("cannot use ^ with a string")
        ctx = self.ctx
        if ca is int and cb is int:
            if b >= 0:
                if b > 1 and (a > 1 or a < -1) and b * math.log2(abs(a)) > self.max_bits:
                    raise self.too_large()
                return a ** b
            if ctx is None:
                return a ** b            # a float, as in Python
        if ctx is not None:
            if cb is int and b >= 0 and b.bit_length() < 64:
                r = ctx.power(to_mpf(ctx, a), b)
            else:
                r = ctx.power(to_mpf(ctx, a), to_mpf(ctx, b))
            return real_result(r)
        r = a ** b
        if r.__class__ is complex:
            raise WarbleError("result is not a real number (negative number to a fractional power)")
        return r

    def check_stored(self, value):
        """Size check for a value stored in a variable (emitted where it can grow)."""
        if value.__class__ is int and value.bit_length() > self.max_bits:
            raise self.too_large()
        return value

    def decimal(self, index: int):
        """A decimal literal: float, or an exact mpf while SETPRECISION is in force."""
        if self.ctx is None:
            return self.decimal_floats[index]
        cache = self.decimal_cache
        value = cache.get(index)
        if value is None:
            value = cache[index] = self.ctx.mpf(self.decimal_texts[index])
        return value
