"""Static types and integer sizes, so that the compiler can use plain Python
operators wherever they are safe.

For every variable the analysis collects the set of value types it can hold
(INT, FLT, STR: flags from `library`) and an upper bound on the bit length
of the integers it can hold, from all assignments in the program (flow
insensitive, iterated to a fixed point). A bound above 256 bits becomes the
run's integer limit `max_bits`: the runtime keeps every stored integer near
that size (see `compiler.py` for where checks are emitted).

`range_loop` recognises FOR loops of the form FOR(i=a; i<b; i++), which
compile to Python `range` iteration; the analysis gives their loop variable
the bound of `a` and `b`.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import syntax as S
from .library import ANY, FLT, INT, NUM, NUMERIC_ARGS, SAME, SIGNATURES, STR

SMALL_BOUND_CAP = 256          # bits; above this a variable's bound is "the limit"
ACCUMULATE_MAX_BITS = 64       # s += t needs no check when t has at most this many bits
ZERO_RESULT = frozenset({"PRINT", "SAVE", "SLEEP", "SETPRECISION", "LIGHTS", "PLAYSOUND"})


@dataclass
class RangeLoop:
    var: str
    start: S.Expr
    end: S.Expr
    step: int
    op: str          # '<', '<=', '>', '>='


def folded_power(e) -> int | None:
    """The value of `int^int` written with two literals, when small: 10^6 costs nothing."""
    if (isinstance(e, S.Binary) and e.op == "^" and isinstance(e.left, S.Num) and isinstance(e.right, S.Num)
            and isinstance(e.left.value, int) and isinstance(e.right.value, int)):
        a, b = e.left.value, e.right.value
        if 0 <= b <= 1024 and abs(a).bit_length() * b <= 1024:
            return a ** b
    return None


def assigned_names(stmts) -> set[str]:
    names: set[str] = set()
    for node in S.walk(stmts):
        if isinstance(node, S.Assign):
            names.add(node.name)
    return names


def _is_invariant(expr: S.Expr, assigned: set[str]) -> bool:
    for node in S.walk(expr):
        if isinstance(node, S.Call):
            return False
        if isinstance(node, S.Var) and node.name in assigned:
            return False
    return True


def range_loop(node: S.For) -> RangeLoop | None:
    """The loop as a counted range, or None when it must stay a general loop."""
    init, cond, step = node.init, node.cond, node.step
    if not (isinstance(init, S.Assign) and init.op == "="):
        return None
    var = init.name
    if not (isinstance(cond, S.Compare) and cond.op in ("<", "<=", ">", ">=")
            and isinstance(cond.left, S.Var) and cond.left.name == var):
        return None
    if not (isinstance(step, S.Assign) and step.name == var and isinstance(step.value, S.Binary)
            and step.value.op in ("+", "-") and isinstance(step.value.left, S.Var)
            and step.value.left.name == var and isinstance(step.value.right, S.Num)
            and isinstance(step.value.right.value, int)):
        return None
    amount = step.value.right.value if step.value.op == "+" else -step.value.right.value
    if amount == 0 or (amount > 0) != (cond.op in ("<", "<=")):
        return None
    assigned = assigned_names(node.body)
    if var in assigned or not _is_invariant(cond.right, assigned | {var}):
        return None
    return RangeLoop(var, init.value, cond.right, amount, cond.op)


class TypeInfo:
    """Types and integer bounds of variables and expressions of one program."""

    def __init__(self, program: S.Program, max_bits: int, extra_names=(), unknown_vars=()):
        self.max_bits = max_bits
        self.extra_names = frozenset(extra_names)
        self.var_types: dict[str, int] = {name: ANY for name in unknown_vars}
        self.var_bounds: dict[str, int] = {name: max_bits for name in unknown_vars}
        self.ranges: dict[int, RangeLoop] = {}
        self._solve(program)

    # ---- fixed point over all assignments ------------------------------------
    def _solve(self, program: S.Program) -> None:
        sources: list[tuple[str, S.Expr, "RangeLoop | None"]] = []
        for node in S.walk(program.body):
            if isinstance(node, S.For):
                loop = range_loop(node)
                if loop is not None:
                    self.ranges[id(node)] = loop
                    sources.append((loop.var, node.step.value, loop))  # type: ignore[union-attr]
            if isinstance(node, S.Assign):
                sources.append((node.name, node.value, None))
        range_steps = {id(s[1]) for s in sources if s[2] is not None}
        sources = [s for s in sources if s[2] is not None or id(s[1]) not in range_steps]
        growths: dict[str, int] = {}
        for _ in range(100):
            changed = False
            for name, expr, loop in sources:
                t = self.types(expr)
                if loop is not None:
                    sb = self.bound(loop.start)
                    # a non-integer end runs the loop by steps: at most max_steps (< 2^64) of them
                    eb = self.bound(loop.end) if self.types(loop.end) == INT else max(sb, 64) + 1
                    b = max(sb, eb) + abs(loop.step).bit_length() + 1
                else:
                    b = self.bound(expr) if t & INT else 0
                if b > SMALL_BOUND_CAP:
                    b = self.max_bits
                old_t = self.var_types.get(name, 0)
                old_b = self.var_bounds.get(name, 0)
                if b > old_b:
                    # widening: a bound that keeps growing (x = x + 1) is unbounded
                    growths[name] = growths.get(name, 0) + 1
                    if growths[name] > 3:
                        b = self.max_bits
                if t | old_t != old_t or b > old_b:
                    self.var_types[name] = t | old_t
                    self.var_bounds[name] = max(b, old_b)
                    changed = True
            if not changed:
                return
        # did not settle (should not happen): assume the worst for everything
        for name in self.var_types:
            self.var_types[name] = ANY
            self.var_bounds[name] = self.max_bits

    # ---- expressions -----------------------------------------------------------
    def types(self, e: S.Expr) -> int:
        if isinstance(e, S.Num):
            return INT if isinstance(e.value, int) else FLT
        if isinstance(e, S.Str):
            return STR
        if isinstance(e, S.Var):
            return self.var_types.get(e.name, 0)
        if isinstance(e, S.Unary):
            return INT if e.op == "!" else self.types(e.operand) & NUM
        if isinstance(e, (S.Compare, S.Logic)):
            return INT
        if isinstance(e, S.Binary):
            if folded_power(e) is not None:
                return INT
            return binary_types(e.op, self.types(e.left), self.types(e.right))
        if isinstance(e, S.Call):
            if e.name in self.extra_names:
                return ANY
            sig = SIGNATURES[e.name]
            if sig.returns == SAME:
                t = 0
                for a in e.args:
                    t |= self.types(a)
                return t
            if sig.returns == NUMERIC_ARGS:
                return self.types(e.args[0]) & NUM
            if e.name == "POW":
                return binary_types("^", self.types(e.args[0]), self.types(e.args[1]))
            return sig.returns
        raise TypeError(f"unknown expression {e!r}")

    def bound(self, e: S.Expr) -> int:
        """Upper bound on the bit length of an integer value of `e`."""
        B = self.max_bits
        if isinstance(e, S.Num):
            return e.value.bit_length() if isinstance(e.value, int) else 0
        if isinstance(e, S.Str):
            return 0
        if isinstance(e, S.Var):
            return self.var_bounds.get(e.name, 0)
        if isinstance(e, S.Unary):
            return 1 if e.op == "!" else self.bound(e.operand)
        if isinstance(e, (S.Compare, S.Logic)):
            return 1
        if isinstance(e, S.Binary):
            folded = folded_power(e)
            if folded is not None:
                return folded.bit_length()
            if e.op in ("+", "-"):
                return max(self.bound(e.left), self.bound(e.right)) + 1
            if e.op == "*":
                return min(self.bound(e.left) + self.bound(e.right), B)   # larger ones are checked
            if e.op == "%":
                return self.bound(e.right)
            if e.op == "/":
                return 0
            return B                     # ^ is checked at run time
        if isinstance(e, S.Call):
            if e.name in ZERO_RESULT:
                return 1
            if e.name in ("ABS", "MIN", "MAX") and e.name not in self.extra_names:
                return max(self.bound(a) for a in e.args)
            return B
        raise TypeError(f"unknown expression {e!r}")


def binary_types(op: str, ta: int, tb: int) -> int:
    """Result types of `a op b` given the operand types."""
    if not ta or not tb:
        return 0
    both_int = INT if (ta & INT and tb & INT) else 0
    any_flt = FLT if ((ta & FLT and tb & NUM) or (tb & FLT and ta & NUM)) else 0
    if op == "+":
        s = STR if (ta & STR or tb & STR) else 0
        return both_int | any_flt | s
    if op in ("-", "%"):
        return both_int | any_flt
    if op == "*":
        s = STR if ((ta & STR and tb & INT) or (ta & INT and tb & STR)) else 0
        return both_int | any_flt | s
    if op == "/":
        return FLT if (ta & NUM and tb & NUM) else 0
    if op == "^":
        if not (ta & NUM and tb & NUM):
            return 0
        return (INT | FLT) if both_int else FLT
    raise ValueError(op)
