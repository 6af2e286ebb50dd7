"""Warble's standard library: the signature table and the implementations.

`SIGNATURES` lists every standard built-in with its argument counts, its
result type (for the compiler's type inference) and a one-line doc with an
example (docs/warble.md and a test are checked against it). The functions
themselves are methods of the run (`StandardLibrary` is mixed into
`runtime.Run`); the compiled program calls them as `_b_NAME`. Each counts
as one step.
"""
from __future__ import annotations

import decimal
import math
from dataclasses import dataclass

from .effects import LIGHTS_DOC, PLAYSOUND_DOC, whole_number
from .errors import QuotaExceeded, TimeLimitExceeded, WarbleError
from .precision import decimal_to_number, is_mpf, mpf_to_decimal, new_context, real_result, to_mpf

# value-type flags used by the type inference
INT, FLT, STR = 1, 2, 4
NUM = INT | FLT
ANY = INT | FLT | STR
SAME = -1          # result type: the union of the argument types (MIN, MAX)
NUMERIC_ARGS = -2  # result type: the numeric part of the first argument (ABS)


@dataclass(frozen=True)
class Signature:
    name: str
    min_args: int
    max_args: int | None
    returns: int
    doc: str             # "NAME(args): what it does. EXAMPLE" -- EXAMPLE prints EXPECTED
    example: str
    expected: str        # the output lines of the example, joined by "\n"


def _sig(name, lo, hi, returns, doc, example, expected) -> Signature:
    return Signature(name, lo, hi, returns, doc, example, expected)


SIGNATURES: dict[str, Signature] = {s.name: s for s in [
    _sig("PRINT", 0, None, INT, "PRINT(a, b, ...): print the values separated by spaces, one line per call",
         'PRINT("x =", 2+3)', "x = 5"),
    _sig("ROUND", 1, 2, NUM, "ROUND(x[, n]): round to n decimals (to a whole number without n; halves go to even)",
         "PRINT(ROUND(3.14159, 2), ROUND(2.5))", "3.14 2"),
    _sig("ABS", 1, 1, NUMERIC_ARGS, "ABS(x): absolute value", "PRINT(ABS(-2.5))", "2.5"),
    _sig("SQRT", 1, 1, FLT, "SQRT(x): square root", "PRINT(SQRT(16))", "4.0"),
    _sig("CEIL", 1, 1, INT, "CEIL(x): smallest whole number >= x", "PRINT(CEIL(1.2))", "2"),
    _sig("FLOOR", 1, 1, INT, "FLOOR(x): largest whole number <= x", "PRINT(FLOOR(-1.2))", "-2"),
    _sig("EXP", 1, 1, FLT, "EXP(x): e to the power x", "PRINT(EXP(0))", "1.0"),
    _sig("LN", 1, 1, FLT, "LN(x): natural logarithm", "PRINT(LN(1))", "0.0"),
    _sig("LOG", 1, 2, FLT, "LOG(x[, base]): logarithm, base 10 unless given", "PRINT(LOG(1000), LOG(8, 2))", "3.0 3.0"),
    _sig("SIN", 1, 1, FLT, "SIN(x): sine of x radians", "PRINT(SIN(0))", "0.0"),
    _sig("COS", 1, 1, FLT, "COS(x): cosine of x radians", "PRINT(COS(0))", "1.0"),
    _sig("TAN", 1, 1, FLT, "TAN(x): tangent of x radians", "PRINT(TAN(0))", "0.0"),
    _sig("ASIN", 1, 1, FLT, "ASIN(x): arc sine, in radians", "PRINT(ASIN(1)*2)", "3.141592653589793"),
    _sig("ACOS", 1, 1, FLT, "ACOS(x): arc cosine, in radians", "PRINT(2*ROUND(ACOS(0.0),3))", "3.142"),
    _sig("ATAN", 1, 1, FLT, "ATAN(x): arc tangent, in radians", "PRINT(ATAN(1)*4)", "3.141592653589793"),
    _sig("ATAN2", 2, 2, FLT, "ATAN2(y, x): angle of the point (x, y), in radians", "PRINT(ATAN2(1, 1)*4)", "3.141592653589793"),
    _sig("MIN", 1, None, SAME, "MIN(a, b, ...): the smallest value", "PRINT(MIN(3, 1, 2))", "1"),
    _sig("MAX", 1, None, SAME, "MAX(a, b, ...): the largest value", "PRINT(MAX(3, 1, 2))", "3"),
    _sig("POW", 2, 2, NUM, "POW(x, y): x to the power y, the same as x^y", "PRINT(POW(2, 10))", "1024"),
    _sig("COMB", 2, 2, INT, "COMB(n, k): ways to choose k items from n", "PRINT(COMB(5, 2))", "10"),
    _sig("RANDOM", 0, 0, FLT, "RANDOM(): a random number from 0 up to (not including) 1",
         "PRINT(RANDOM() < 1)", "1"),
    _sig("SETPRECISION", 1, 1, INT,
         "SETPRECISION(n): from here on, compute with n significant digits (math functions too)",
         "SETPRECISION(30);PRINT(1/7)", "0.142857142857142857142857142857"),
    _sig("SAVE", 2, 2, INT, "SAVE(name, value): keep a number or string under a name, for your later runs",
         'SAVE("best", 42)', ""),
    _sig("LOAD", 1, 1, ANY, "LOAD(name): a value you saved before (0 if none)",
         'SAVE("n", 1);x=LOAD("n");x++;PRINT(x)', "2"),
    _sig("SLEEP", 1, 1, INT, "SLEEP(seconds): wait; fractions allowed, the time counts against the time limit",
         "SLEEP(0.5)", ""),
    # effect built-ins: the environment provides them (see effects.py)
    _sig("LIGHTS", 4, 4, INT, LIGHTS_DOC.rsplit(". ", 1)[0], "LIGHTS(0, 255, 0, 0)", ""),
    _sig("PLAYSOUND", 1, 1, INT, PLAYSOUND_DOC.rsplit(". ", 1)[0], 'PLAYSOUND("beep")', ""),
]}

EFFECT_NAMES = frozenset({"LIGHTS", "PLAYSOUND"})
# Built-ins called for what they do (their value is 0): the REPL does not echo a call of one.
SILENT_CALLS = frozenset({"PRINT", "SETPRECISION", "SAVE", "SLEEP"}) | EFFECT_NAMES
CORE_NAMES = frozenset(SIGNATURES) - EFFECT_NAMES


def _check_mp_arg(x):
    if x.__class__ is str:
        raise TypeError("string")
    return x


class StandardLibrary:
    """The standard built-ins, as methods `b_NAME` of the run."""

    ctx: object
    digits: int | None
    calls: int

    # ---- output ------------------------------------------------------------
    def b_PRINT(self, *args):
        self.calls += 1
        if len(args) == 1:
            self.emit(self.fmt(args[0]))
        else:
            parts = []
            total = 0
            for a in args:
                text = self.fmt(a)
                total += len(text) + 1
                self.check_output_room(total)
                parts.append(text)
            self.emit(" ".join(parts))
        return 0

    # ---- math --------------------------------------------------------------
    def _mp1(self, fn, x):
        return real_result(fn(to_mpf(self.ctx, x)))

    def b_ROUND(self, x, n=None):
        self.calls += 1
        if x.__class__ is str:
            raise TypeError("string")
        if n is not None:
            n = whole_number(n, "the number of decimals", -10**9, 10**9, "ROUND")
        ctx = self.ctx
        if ctx is not None and (is_mpf(x) or x.__class__ is float):
            x = to_mpf(ctx, x)
            if n is None:
                return self._to_int(ctx.nint(x))
            scale = ctx.mpf(10) ** n
            return real_result(ctx.nint(x * scale) / scale)
        if n is None:
            return round(x)
        if x.__class__ is int and n < 0 and -n > self.max_digits:
            return 0
        return round(x, min(n, 400))

    def b_ABS(self, x):
        self.calls += 1
        if x.__class__ is str:
            raise TypeError("string")
        return abs(x)

    def b_SQRT(self, x):
        self.calls += 1
        if self.ctx is None:
            return math.sqrt(x)
        return self._mp1(self.ctx.sqrt, x)

    def _to_int(self, value):
        if is_mpf(value):
            if value._mpf_[2] + value._mpf_[3] > self.max_bits:
                raise self.too_large()
            return int(value)
        return value

    def b_CEIL(self, x):
        self.calls += 1
        if self.ctx is None or not is_mpf(x):
            return math.ceil(x)
        return self._to_int(self.ctx.ceil(real_result(x)))

    def b_FLOOR(self, x):
        self.calls += 1
        if self.ctx is None or not is_mpf(x):
            return math.floor(x)
        return self._to_int(self.ctx.floor(real_result(x)))

    def b_EXP(self, x):
        self.calls += 1
        if self.ctx is None:
            return math.exp(x)
        return self._mp1(self.ctx.exp, x)

    def b_LN(self, x):
        self.calls += 1
        if self.ctx is None:
            return math.log(x)
        return self._mp1(self.ctx.ln, x)

    def b_LOG(self, x, base=None):
        self.calls += 1
        ctx = self.ctx
        if ctx is None:
            if base is None:
                return math.log10(x)
            return math.log(x, base)
        if base is None:
            return self._mp1(ctx.log10, x)
        return real_result(ctx.log(to_mpf(ctx, x), to_mpf(ctx, base)))

    def b_SIN(self, x):
        self.calls += 1
        return math.sin(x) if self.ctx is None else self._mp1(self.ctx.sin, x)

    def b_COS(self, x):
        self.calls += 1
        return math.cos(x) if self.ctx is None else self._mp1(self.ctx.cos, x)

    def b_TAN(self, x):
        self.calls += 1
        return math.tan(x) if self.ctx is None else self._mp1(self.ctx.tan, x)

    def b_ASIN(self, x):
        self.calls += 1
        return math.asin(x) if self.ctx is None else self._mp1(self.ctx.asin, x)

    def b_ACOS(self, x):
        self.calls += 1
        return math.acos(x) if self.ctx is None else self._mp1(self.ctx.acos, x)

    def b_ATAN(self, x):
        self.calls += 1
        return math.atan(x) if self.ctx is None else self._mp1(self.ctx.atan, x)

    def b_ATAN2(self, y, x):
        self.calls += 1
        ctx = self.ctx
        if ctx is None:
            return math.atan2(y, x)
        return real_result(ctx.atan2(to_mpf(ctx, y), to_mpf(ctx, x)))

    def b_MIN(self, *args):
        self.calls += 1
        return min(args)

    def b_MAX(self, *args):
        self.calls += 1
        return max(args)

    def b_POW(self, x, y):
        self.calls += 1
        return self.pow(x, y)

    def b_COMB(self, n, k):
        self.calls += 1
        if n.__class__ is not int or k.__class__ is not int:
            raise WarbleError("COMB needs whole numbers")
        if n < 0 or k < 0:
            raise WarbleError("COMB needs numbers that are not negative")
        m = min(k, n - k)
        if m > 1:
            if n > 2 ** 1000:
                raise self.too_large()
            if n < 2 ** 50:
                bits = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)
            else:  # lgamma cancels out for huge n: use C(n, m) <= (e*n/m)^m instead
                bits = m * (n.bit_length() - (m.bit_length() - 1) + math.log2(math.e))
            if bits > self.max_bits:
                raise self.too_large()
        return math.comb(n, k)

    def b_RANDOM(self):
        self.calls += 1
        ctx = self.ctx
        if ctx is None:
            return self.rng.random()
        bits = ctx.prec + 8
        return ctx.ldexp(ctx.mpf(self.rng.getrandbits(bits)), -bits)

    def b_SETPRECISION(self, n):
        self.calls += 1
        cap = self.limits.max_precision
        if n.__class__ is int and n > cap:
            raise WarbleError(f"SETPRECISION: at most {cap} digits are allowed here")
        n = whole_number(n, "the number of digits", 1, cap, "SETPRECISION")
        if self.ctx is None:
            self.ctx = new_context(n)
        else:
            self.ctx.dps = n
        self.digits = n
        self.decimal_cache = {}
        return 0

    # ---- storage -----------------------------------------------------------
    def _store_name(self, name, fn: str) -> str:
        if name.__class__ is not str:
            raise WarbleError(f'{fn}: the name must be a string, e.g. {fn}("score"{", 1" if fn == "SAVE" else ""})')
        if not name or len(name) > self.limits.max_saved_name_length:
            raise WarbleError(f"{fn}: names are 1 to {self.limits.max_saved_name_length} characters long")
        return name

    def b_SAVE(self, name, value):
        self.calls += 1
        name = self._store_name(name, "SAVE")
        if self.store_writes >= self.limits.max_store_writes:
            raise QuotaExceeded(f"SAVE: at most {self.limits.max_store_writes} saves per run")
        self.store_writes += 1
        if is_mpf(value):
            value = mpf_to_decimal(value, self.digits or 15)
        elif value.__class__ is float and not math.isfinite(value):
            raise WarbleError("SAVE: cannot save inf or nan")
        if value.__class__ is int:
            length = int(value.bit_length() * 0.30103)   # decimal digits, near enough
        else:
            length = len(value) if value.__class__ is str else len(str(value))
        if length > self.limits.max_saved_value_length:
            raise QuotaExceeded(
                f"SAVE: the value is too long; the limit is {self.limits.max_saved_value_length} characters")
        self.store_set(name, value)
        return 0

    def b_LOAD(self, name):
        self.calls += 1
        name = self._store_name(name, "LOAD")
        value = self.store_get(name)
        if value is None:
            return 0
        cls = value.__class__
        if cls is decimal.Decimal:
            return decimal_to_number(self.ctx, value)
        if cls is int:
            return self.check_stored(value)
        if cls is str:
            if len(value) > self.max_str:
                raise self.string_too_long(len(value))
            return value
        if cls is float:
            return value
        raise WarbleError("LOAD: the stored value has an unknown type")

    # ---- time --------------------------------------------------------------
    def b_SLEEP(self, seconds):
        self.calls += 1
        if seconds.__class__ is str:
            raise WarbleError("SLEEP needs a number of seconds")
        seconds = float(seconds)
        if not seconds >= 0 or math.isinf(seconds):
            raise WarbleError("SLEEP needs a number of seconds, 0 or more")
        if self.now() + seconds > self.deadline:
            raise TimeLimitExceeded(
                f"time limit of {self.limits.time_limit:g} s reached (SLEEP({seconds:g}) would end after it)")
        if seconds:
            self.sleep(seconds)
        return 0
