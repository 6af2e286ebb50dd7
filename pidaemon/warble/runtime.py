"""One run of a compiled program: budgets, loops, output, effects, storage.

`Run` is the state the compiled code talks to; its methods are what the
compiled function finds in its globals (`_add`, `_range`, `_b_PRINT`, ...).
Steps are charged by the loop iterators in chunks, so the counting costs
nothing per iteration: a loop asks for up to `chunk` iterations at a time,
and BREAK (or an error) gives back what it did not use. Each chunk also
checks the clock. The chunk shrinks when iterations are slow, so the clock
is still looked at often enough.
"""
from __future__ import annotations

import decimal
import logging
import random
import sys
import time
from itertools import chain
from typing import Any, Callable

from .arith import Arithmetic
from .builtin import Builtin
from .errors import (OutputLimitExceeded, StepLimitExceeded, TimeLimitExceeded, WarbleError)
from .library import StandardLibrary
from .limits import Limits
from .precision import decimal_to_number, is_mpf, mpf_to_decimal

log = logging.getLogger(__name__)

MAX_CHUNK = 1024
EMPTY = range(0)
monotonic = time.monotonic


def _count(cur: int, stop: int, step: int) -> int:
    if step > 0:
        return (stop - cur + step - 1) // step if stop > cur else 0
    return (cur - stop - step - 1) // (-step) if cur > stop else 0


class RangeSteps:
    """A counted loop over integers (FOR(i=a;i<b;i++)), or forever (WHILE)."""

    __slots__ = ("run", "cur", "stop", "step", "chunk", "final")

    def __init__(self, run: "Run", start: int, stop: int | None, step: int):
        self.run = run
        self.cur = start
        self.stop = stop
        self.step = step
        self.chunk = EMPTY
        self.final = start if stop is None else start + _count(start, stop, step) * step

    def __iter__(self):
        stop = self.stop
        if stop is not None:
            n = _count(self.cur, stop, self.step)
            if n <= self.run.chunk:
                if n == 0:
                    return iter(EMPTY)
                got = self.run.charge(n)
                if got == n:
                    self.chunk = c = range(self.cur, stop, self.step)
                    self.cur = stop
                    return iter(c)
                # the step budget ends inside this loop: a short first chunk
                end = self.cur + got * self.step
                self.chunk = c = range(self.cur, end, self.step)
                self.cur = end
                return chain(c, chain.from_iterable(self._chunks()))
        return chain.from_iterable(self._chunks())

    def _chunks(self):
        run = self.run
        step = self.step
        while True:
            cur = self.cur
            if self.stop is None:
                want = run.chunk
            else:
                n = _count(cur, self.stop, step)
                if n <= 0:
                    break
                want = n if n < run.chunk else run.chunk
            got = run.charge(want)
            end = cur + got * step
            self.chunk = c = range(cur, end, step)
            self.cur = end
            yield c
        self.chunk = EMPTY

    def finish(self):
        """The loop ran to its end: nothing is left to give back; the loop variable's final value."""
        self.chunk = EMPTY
        return self.final

    def unused(self, value) -> int:
        """Iterations charged for the current chunk that come after `value`."""
        c = self.chunk
        if c:
            try:
                return len(c) - c.index(value) - 1
            except (ValueError, TypeError):
                return 0
        return 0

    def refund_after(self, value) -> None:
        """BREAK at `value`: the rest of the current chunk was not used."""
        self.run.charged -= self.unused(value)
        self.chunk = EMPTY

    def refund_from(self, value) -> None:
        """WHILE's condition was false at `value`: that iteration did not run either."""
        if value in self.chunk:
            self.run.charged -= self.unused(value) + 1
        self.chunk = EMPTY


class GenericSteps:
    """FOR(i=a;i<b;i++) when a or b is not an integer: one step at a time."""

    __slots__ = ("run", "start", "end", "step", "op", "final")

    def __init__(self, run: "Run", start, end, step: int, op: str):
        self.run = run
        self.start = start
        self.end = end
        self.step = step
        self.op = op
        self.final = start

    def __iter__(self):
        run = self.run
        i = self.start
        end = self.end
        step = self.step
        op = self.op
        while (i < end if op == "<" else i <= end if op == "<=" else i > end if op == ">" else i >= end):
            run.charge(1)
            yield i
            i = run.add(i, step)
        self.final = i

    def finish(self):
        return self.final

    def unused(self, value) -> int:
        return 0

    def refund_after(self, value) -> None:
        pass

    refund_from = refund_after


class Run(Arithmetic, StandardLibrary):
    """State of one run. Subclassed by the runner's child for remote effects."""

    def __init__(self, *, limits: Limits, user: str = "anonymous", store=None, effects=None,
                 extras: dict[str, Builtin] | None = None, seed: int | None = None,
                 decimal_texts: list[str] | None = None):
        self.limits = limits
        self.max_bits = limits.max_int_bits
        self.max_digits = limits.max_number_digits
        self.max_str = limits.max_string_length
        self.max_steps = limits.max_steps
        self.user = user
        self.store = store
        self.effects = effects
        self.extras = extras or {}
        self.seed = seed
        self._rng: random.Random | None = None
        self.ctx = None
        self.digits: int | None = None
        self.decimal_texts = decimal_texts or []
        self.decimal_floats = [float(t) for t in self.decimal_texts]
        self.decimal_cache: dict[int, Any] = {}
        self.calls = 0
        self.charged = 0
        self.chunk = 64                  # grows to MAX_CHUNK while iterations are fast
        self.calls_at_charge = 0
        self.granted = 0
        self.code = None                 # the compiled function's code and loop locals,
        self.loop_locals: list = []      # set by program.execute
        self.store_writes = 0
        self.effects_done = 0
        self.output: list[str] = []
        self.out_chars = 0
        self.out_lines = 0
        self.skew = 0.0                  # SLEEP time that effects did not really wait
        self.variables: dict[str, Any] | None = None
        self.start = monotonic()
        self.last_charge = self.start
        self.deadline = self.start + limits.time_limit

    @property
    def rng(self) -> random.Random:
        if self._rng is None:
            self._rng = random.Random(self.seed)
        return self._rng

    # ---- time and steps ----------------------------------------------------
    def now(self) -> float:
        return monotonic() + self.skew

    def steps(self) -> int:
        return self.charged + self.calls

    def charge(self, want: int) -> int:
        """Reserve up to `want` loop iterations; returns how many (at least 1)."""
        left = self.max_steps - self.charged - self.calls
        if left < want:
            # outer loops may hold iterations they have not run yet: count only what ran
            left += self.unused_prepaid()
        if left <= 0:
            raise StepLimitExceeded(
                f"step limit of {self.max_steps} reached (an endless loop?)")
        now = monotonic()
        if now + self.skew > self.deadline:
            raise TimeLimitExceeded(f"time limit of {self.limits.time_limit:g} s reached")
        gap = now - self.last_charge
        self.last_charge = now
        if gap > 0.02:
            self.chunk = max(1, self.chunk // 4)
        elif gap < 0.002 and self.chunk < MAX_CHUNK:
            self.chunk *= 2
        # built-in calls inside the loop count too: near the limit, grant fewer
        # iterations, as many as fit with the calls seen per iteration so far
        calls = self.calls - self.calls_at_charge
        per_iteration = 1 + -(-calls // self.granted) if self.granted else 2
        if want * per_iteration > left:
            want = max(1, left // per_iteration)
        self.calls_at_charge = self.calls
        self.granted = want
        self.charged += want
        return want

    def unused_prepaid(self) -> int:
        """Iterations charged to running loops but not run yet (read from the program's frame)."""
        frame = sys._getframe(1)
        while frame is not None and frame.f_code is not self.code:
            frame = frame.f_back
        if frame is None:
            return 0
        local = frame.f_locals
        total = 0
        for it_name, target in self.loop_locals:
            it = local.get(it_name)
            if it is not None and target in local:
                total += it.unused(local[target])
        return total

    def loop_range(self, start, end, step: int, op: str):
        if start.__class__ is int and end.__class__ is int:
            if op == "<=":
                end += 1
            elif op == ">=":
                end -= 1
            return RangeSteps(self, start, end, step)
        return GenericSteps(self, start, end, step, op)

    def loop_forever(self) -> RangeSteps:
        return RangeSteps(self, 0, None, 1)

    # ---- output ------------------------------------------------------------
    def check_output_room(self, chars: int) -> None:
        if self.out_chars + chars > self.limits.max_output_chars:
            raise OutputLimitExceeded(
                f"output limit reached: more than {self.limits.max_output_chars} characters")

    def emit(self, line: str) -> None:
        if self.out_lines >= self.limits.max_output_lines:
            raise OutputLimitExceeded(
                f"output limit reached: more than {self.limits.max_output_lines} lines")
        n = len(line) + 1
        self.check_output_room(n)
        self.out_lines += 1
        self.out_chars += n
        self.sink_line(line)

    def sink_line(self, line: str) -> None:
        self.output.append(line)

    # ---- environment (overridden by the runner's child) ------------------------
    def sleep(self, seconds: float) -> None:
        t0 = monotonic()
        if self.effects is not None and hasattr(self.effects, "sleep"):
            self.effects.sleep(seconds)
        else:
            time.sleep(seconds)
        took = monotonic() - t0
        if took < seconds:
            self.skew += seconds - took

    def store_get(self, name: str):
        try:
            return self.store.get(self.user, name)
        except WarbleError:
            raise
        except Exception:
            log.exception("Warble store get failed")
            raise WarbleError("LOAD: storage is not available")

    def store_set(self, name: str, value) -> None:
        try:
            self.store.set(self.user, name, value)
        except WarbleError:
            raise
        except Exception:
            log.exception("Warble store set failed")
            raise WarbleError("SAVE: storage is not available")

    def do_effect(self, builtin: Builtin, args: tuple):
        """Perform an effect built-in; its value is the call's (the runner's child asks the runner)."""
        return builtin.perform(args)

    # ---- built-ins added by the environment or plugins ---------------------------
    def make_extra(self, builtin: Builtin) -> Callable:
        name = builtin.name

        def call(*args):
            self.calls += 1
            try:
                args = tuple(builtin.validate(tuple(self.plain(a) for a in args)))
                if builtin.effect:
                    self.effects_done += 1
                    if self.effects_done > self.limits.max_effects:
                        raise WarbleError(f"too many effects: at most {self.limits.max_effects} "
                                          f"LIGHTS, PLAYSOUND and the like per run")
                    value = self.do_effect(builtin, args)
                else:
                    value = builtin.perform(args)
            except (WarbleError, MemoryError):
                raise
            except Exception:
                log.exception("Warble built-in %s failed", name)
                raise WarbleError(f"{name} failed")
            return self.from_plugin(name, value)

        return call

    def plain(self, value):
        """Arguments for plugin code: mpf values become Decimal."""
        if is_mpf(value):
            return mpf_to_decimal(value, self.digits or 15)
        return value

    def from_plugin(self, name: str, value):
        if value is None:
            return 0
        cls = value.__class__
        if cls is bool:
            return int(value)
        if cls is int:
            return self.check_stored(value)
        if cls is float:
            return value
        if cls is str:
            if len(value) > self.max_str:
                raise self.string_too_long(len(value))
            return value
        if cls is decimal.Decimal:
            return decimal_to_number(self.ctx, value)
        if isinstance(value, (int, float)):          # subclasses, e.g. IntEnum
            return float(value) if isinstance(value, float) else self.check_stored(int(value))
        raise WarbleError(f"{name} returned a value Warble cannot use")

    # ---- the compiled function's globals -------------------------------------
    def namespace(self, used_core, used_extra) -> dict:
        g: dict[str, Any] = {
            "__builtins__": {},
            "_add": self.add, "_mul": self.mul, "_mod": self.mod, "_div": self.div,
            "_pow": self.pow, "_chk": self.check_stored, "_dec": self.decimal,
            "_range": self.loop_range, "_forever": self.loop_forever,
            "_vars": self.capture_variables,
        }
        for name in used_core:
            g["_b_" + name] = getattr(self, "b_" + name)
        for name in used_extra:
            g["_x_" + name] = self.make_extra(self.extras[name])
        return g

    def capture_variables(self):
        """REPL: keep the variables of the finished program (our own frame access)."""
        frame = sys._getframe(1)
        self.variables = {k[2:]: v for k, v in frame.f_locals.items() if k.startswith("v_")}
        return None

