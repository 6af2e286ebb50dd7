"""Warble syntax tree -> Python `ast` nodes -> code object. No source text.

The generated function keeps each Warble variable `x` in a local `v_x`, so
user names can never reach a Python name: helpers live in the function's
globals under names that start with `_`, and the globals hold an empty
`__builtins__`. Every generated node gets an id as its `lineno`; the id
indexes `positions`, which gives the Warble line and column and what the
node does, so a Python exception maps back to a Warble error message and
position (see `program.py`).

Where the types and sizes allow (see `inference.py`), operators are plain
Python operators. Otherwise:
- `+` with a possible string calls `_add` (concatenation, length check);
- `*` of two integers that may be large tests both operands against
  2^(max_bits/2) inline and calls `_mul` (exact check) only when that fails;
- `%` with a possible string calls `_mod` (never Python's %-formatting);
- `^` always calls `_pow`; `/` and decimal literals call `_div`/`_dec` when
  the program uses SETPRECISION;
- an assignment whose integer value may have grown past the limit is checked,
  except accumulation of a small value (`s += i*j%7` grows linearly).
"""
from __future__ import annotations

import ast
import types
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from . import syntax as S
from .inference import ACCUMULATE_MAX_BITS, TypeInfo, folded_power
from .library import INT, STR

COMPARE_OPS = {"==": ast.Eq, "!=": ast.NotEq, "<": ast.Lt, "<=": ast.LtE, ">": ast.Gt, ">=": ast.GtE}


class Position(NamedTuple):
    line: int
    col: int
    kind: str       # 'var', 'op', 'compare', 'call', 'assign', 'loop', 'if', 'program'
    detail: str     # variable name, operator, function name


@dataclass
class Compiled:
    code: types.CodeType
    positions: list
    loop_locals: list           # (iterator local, loop variable local) of every loop
    decimal_texts: list
    used_core: set
    used_extra: set
    defined: frozenset = frozenset()   # variables given a value with = (and the REPL's): for hints


@dataclass
class _Loop:
    it: str
    target: str
    step: Callable[[], list] | None = None


def _at(node, pid: int):
    node.lineno = node.end_lineno = pid
    node.col_offset = 0
    node.end_col_offset = 1
    return node


@dataclass
class Compiler:
    info: TypeInfo
    extra_names: frozenset
    precision: bool
    repl_vars: frozenset | None = None
    inline: bool = True     # False: every checked operation calls its helper (a reference for tests)
    positions: list = field(default_factory=lambda: [None])
    loop_locals: list = field(default_factory=list)
    decimal_texts: list = field(default_factory=list)
    used_core: set = field(default_factory=set)
    used_extra: set = field(default_factory=set)

    def __post_init__(self) -> None:
        self.B = self.info.max_bits
        # with a huge configured limit the inline bounds would be huge constants: call instead
        self.inline_bounds = self.B <= 1 << 20
        self.M = 1 << self.B if self.inline_bounds else 0
        self.loops: list[_Loop] = []
        self.temps = 0

    # ---- helpers -----------------------------------------------------------
    def pid(self, node, kind: str, detail: str = "") -> int:
        self.positions.append(Position(node.line, node.col, kind, detail))
        return len(self.positions) - 1

    def temp(self, prefix: str) -> str:
        self.temps += 1
        return f"{prefix}{self.temps}"

    @staticmethod
    def name(ident: str, pid: int, store: bool = False):
        return _at(ast.Name(id=ident, ctx=ast.Store() if store else ast.Load()), pid)

    @staticmethod
    def const(value, pid: int):
        return _at(ast.Constant(value=value), pid)

    def call_helper(self, helper: str, args: list, pid: int):
        return _at(ast.Call(func=self.name(helper, pid), args=args, keywords=[]), pid)

    def method_call(self, obj: str, method: str, args: list, pid: int):
        func = _at(ast.Attribute(value=self.name(obj, pid), attr=method, ctx=ast.Load()), pid)
        return _at(ast.Expr(value=_at(ast.Call(func=func, args=args, keywords=[]), pid)), pid)

    def assign(self, target: str, value, pid: int):
        return _at(ast.Assign(targets=[self.name(target, pid, store=True)], value=value), pid)

    # ---- program -------------------------------------------------------------
    def compile(self, program: S.Program) -> Compiled:
        top = self.pid(S.Node(1, 1), "program")
        body: list = []
        if self.repl_vars:
            for var in sorted(self.repl_vars):
                test = _at(ast.Compare(left=self.const(var, top), ops=[ast.In()],
                                       comparators=[self.name("_init", top)]), top)
                sub = _at(ast.Subscript(value=self.name("_init", top), slice=self.const(var, top),
                                        ctx=ast.Load()), top)
                body.append(_at(ast.If(test=test, body=[self.assign("v_" + var, sub, top)], orelse=[]), top))
        body += self.statements(program.body)
        if self.repl_vars is not None:
            body.append(_at(ast.Expr(value=self.call_helper("_vars", [], top)), top))
        if not body:
            body = [_at(ast.Pass(), top)]
        args = ast.arguments(posonlyargs=[], args=[_at(ast.arg(arg="_init"), top)], vararg=None,
                             kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])
        fn = _at(ast.FunctionDef(name="_warble", args=args, body=body, decorator_list=[],
                                 returns=None, type_comment=None), top)
        module = ast.Module(body=[fn], type_ignores=[])
        ast.fix_missing_locations(module)
        code = compile(module, "<warble>", "exec", dont_inherit=True)
        fcode = next(c for c in code.co_consts if isinstance(c, types.CodeType))
        return Compiled(fcode, self.positions, self.loop_locals, self.decimal_texts,
                        self.used_core, self.used_extra, program.defined | (self.repl_vars or frozenset()))

    # ---- statements ----------------------------------------------------------
    def statements(self, body: list) -> list:
        out: list = []
        for stmt in body:
            out.extend(self.statement(stmt))
        return out

    def block(self, body: list, pid: int) -> list:
        return self.statements(body) or [_at(ast.Pass(), pid)]

    def statement(self, s) -> list:
        if isinstance(s, S.Assign):
            return self.assignment(s)
        if isinstance(s, S.CallStmt):
            value = self.value(s.call)
            return [_at(ast.Expr(value=value), value.lineno)]
        if isinstance(s, S.Block):
            return self.statements(s.body)
        if isinstance(s, S.If):
            pid = self.pid(s, "if")
            return [_at(ast.If(test=self.test(s.cond), body=self.block(s.body, pid),
                               orelse=self.statements(s.orelse)), pid)]
        if isinstance(s, S.While):
            return self.while_loop(s)
        if isinstance(s, S.For):
            loop = self.info.ranges.get(id(s)) if self.inline else None
            return self.range_loop(s, loop) if loop is not None else self.general_for(s)
        if isinstance(s, S.Break):
            loop = self.loops[-1]
            pid = self.pid(s, "loop", "BREAK")
            return [self.method_call(loop.it, "refund_after", [self.name(loop.target, pid)], pid),
                    _at(ast.Break(), pid)]
        if isinstance(s, S.Continue):
            loop = self.loops[-1]
            pid = self.pid(s, "loop", "CONTINUE")
            step = loop.step() if loop.step is not None else []
            return step + [_at(ast.Continue(), pid)]
        raise TypeError(f"unknown statement {s!r}")

    def accumulates(self, s: S.Assign) -> bool:
        v = s.value
        if not isinstance(v, S.Binary) or v.op not in ("+", "-"):
            return False
        if isinstance(v.left, S.Var) and v.left.name == s.name:
            return self.info.bound(v.right) <= ACCUMULATE_MAX_BITS
        if v.op == "+" and isinstance(v.right, S.Var) and v.right.name == s.name:
            return self.info.bound(v.left) <= ACCUMULATE_MAX_BITS
        return False

    def assignment(self, s: S.Assign) -> list:
        pid = self.pid(s, "assign", s.name)
        value = self.value(s.value)
        target = "v_" + s.name
        t = self.info.types(s.value)
        if not self.inline:
            return [self.assign(target, self.call_helper("_chk", [value], pid), pid)]
        if t & INT and self.info.bound(s.value) > self.B and not self.accumulates(s):
            if t & STR or not self.inline_bounds:
                return [self.assign(target, self.call_helper("_chk", [value], pid), pid)]
            in_range = _at(ast.Compare(left=self.const(-self.M, pid), ops=[ast.Lt(), ast.Lt()],
                                       comparators=[self.name(target, pid), self.const(self.M, pid)]), pid)
            check = _at(ast.If(
                test=_at(ast.UnaryOp(op=ast.Not(), operand=in_range), pid),
                body=[_at(ast.Expr(value=self.call_helper("_chk", [self.name(target, pid)], pid)), pid)],
                orelse=[]), pid)
            return [self.assign(target, value, pid), check]
        return [self.assign(target, value, pid)]

    def _exit_unless(self, cond, loop: _Loop, pid: int) -> list:
        if isinstance(cond, S.Num) and cond.value:
            return []
        test = _at(ast.UnaryOp(op=ast.Not(), operand=self.test(cond)), pid)
        return [_at(ast.If(test=test, body=[
            self.method_call(loop.it, "refund_from", [self.name(loop.target, pid)], pid),
            _at(ast.Break(), pid)], orelse=[]), pid)]

    def while_loop(self, s: S.While) -> list:
        pid = self.pid(s, "loop", "WHILE")
        loop = _Loop(self.temp("_it"), self.temp("_k"))
        self.loop_locals.append((loop.it, loop.target))
        setup = self.assign(loop.it, self.call_helper("_forever", [], pid), pid)
        self.loops.append(loop)
        body = self._exit_unless(s.cond, loop, pid) + self.statements(s.body)
        self.loops.pop()
        return [setup, _at(ast.For(target=self.name(loop.target, pid, store=True),
                                   iter=self.name(loop.it, pid), body=body or [_at(ast.Pass(), pid)],
                                   orelse=[], type_comment=None), pid)]

    def general_for(self, s: S.For) -> list:
        pid = self.pid(s, "loop", "FOR")
        init = self.statement(s.init) if s.init is not None else []
        loop = _Loop(self.temp("_it"), self.temp("_k"))
        if s.step is not None:
            step_stmt = s.step
            loop.step = lambda: self.statement(step_stmt)
        self.loop_locals.append((loop.it, loop.target))
        setup = self.assign(loop.it, self.call_helper("_forever", [], pid), pid)
        self.loops.append(loop)
        body = []
        if s.cond is not None:
            body += self._exit_unless(s.cond, loop, pid)
        body += self.statements(s.body)
        if loop.step is not None:
            body += loop.step()
        self.loops.pop()
        return init + [setup, _at(ast.For(target=self.name(loop.target, pid, store=True),
                                          iter=self.name(loop.it, pid), body=body or [_at(ast.Pass(), pid)],
                                          orelse=[], type_comment=None), pid)]

    def range_loop(self, s: S.For, r) -> list:
        pid = self.pid(s, "compare", r.op)
        init = self.statement(s.init)
        target = "v_" + r.var
        loop = _Loop(self.temp("_it"), target)
        self.loop_locals.append((loop.it, target))
        setup = self.assign(loop.it, self.call_helper(
            "_range", [self.name(target, pid), self.value(r.end), self.const(r.step, pid),
                       self.const(r.op, pid)], pid), pid)
        self.loops.append(loop)
        body = self.block(s.body, pid)
        self.loops.pop()
        finish = _at(ast.Attribute(value=self.name(loop.it, pid), attr="finish", ctx=ast.Load()), pid)
        final = _at(ast.Call(func=finish, args=[], keywords=[]), pid)
        return init + [setup, _at(ast.For(target=self.name(target, pid, store=True),
                                          iter=self.name(loop.it, pid), body=body,
                                          orelse=[self.assign(target, final, pid)], type_comment=None), pid)]

    # ---- expressions -----------------------------------------------------------
    def test(self, e):
        """`e` as a condition: comparisons stay Python booleans here."""
        if isinstance(e, S.Compare):
            pid = self.pid(e, "compare", e.op)
            return _at(ast.Compare(left=self.value(e.left), ops=[COMPARE_OPS[e.op]()],
                                   comparators=[self.value(e.right)]), pid)
        if isinstance(e, S.Logic):
            pid = self.pid(e, "op", e.op)
            op = ast.And() if e.op == "&&" else ast.Or()
            return _at(ast.BoolOp(op=op, values=[self.test(e.left), self.test(e.right)]), pid)
        if isinstance(e, S.Unary) and e.op == "!":
            pid = self.pid(e, "op", "!")
            return _at(ast.UnaryOp(op=ast.Not(), operand=self.test(e.operand)), pid)
        return self.value(e)

    def value(self, e):
        if isinstance(e, S.Num):
            pid = self.pid(e, "value")
            if isinstance(e.value, int) or not self.precision:
                return self.const(e.value, pid)
            self.decimal_texts.append(e.text)
            return self.call_helper("_dec", [self.const(len(self.decimal_texts) - 1, pid)], pid)
        if isinstance(e, S.Str):
            return self.const(e.value, self.pid(e, "value"))
        if isinstance(e, S.Var):
            return self.name("v_" + e.name, self.pid(e, "var", e.name))
        if isinstance(e, S.Unary):
            pid = self.pid(e, "op", e.op)
            if e.op == "!":
                return _at(ast.IfExp(test=self.test(e.operand), body=self.const(0, pid),
                                     orelse=self.const(1, pid)), pid)
            op = ast.USub() if e.op == "-" else ast.UAdd()
            return _at(ast.UnaryOp(op=op, operand=self.value(e.operand)), pid)
        if isinstance(e, (S.Compare, S.Logic)):
            test = self.test(e)
            return _at(ast.IfExp(test=test, body=self.const(1, test.lineno),
                                 orelse=self.const(0, test.lineno)), test.lineno)
        if isinstance(e, S.Binary):
            return self.binary(e)
        if isinstance(e, S.Call):
            pid = self.pid(e, "call", e.name)
            if e.name in self.extra_names:
                self.used_extra.add(e.name)
                helper = "_x_" + e.name
            else:
                self.used_core.add(e.name)
                helper = "_b_" + e.name
            return self.call_helper(helper, [self.value(a) for a in e.args], pid)
        raise TypeError(f"unknown expression {e!r}")

    def binary(self, e: S.Binary):
        pid = self.pid(e, "op", e.op)
        folded = folded_power(e) if self.inline else None
        if folded is not None:
            return self.const(folded, pid)
        info = self.info
        ta, tb = info.types(e.left), info.types(e.right)
        a, b = self.value(e.left), self.value(e.right)
        op = e.op
        if not self.inline and op in ("+", "*", "%", "/"):
            helper = {"+": "_add", "*": "_mul", "%": "_mod", "/": "_div"}[op]
            return self.call_helper(helper, [a, b], pid)
        if op == "+":
            if (ta | tb) & STR:
                return self.call_helper("_add", [a, b], pid)
            return _at(ast.BinOp(left=a, op=ast.Add(), right=b), pid)
        if op == "-":
            return _at(ast.BinOp(left=a, op=ast.Sub(), right=b), pid)
        if op == "*":
            if (ta | tb) & STR:
                return self.call_helper("_mul", [a, b], pid)
            if ta & INT and tb & INT and info.bound(e.left) + info.bound(e.right) > self.B:
                return self.checked_mul(e, a, b, pid)
            return _at(ast.BinOp(left=a, op=ast.Mult(), right=b), pid)
        if op == "/":
            if self.precision:
                return self.call_helper("_div", [a, b], pid)
            return _at(ast.BinOp(left=a, op=ast.Div(), right=b), pid)
        if op == "%":
            if (ta | tb) & STR:
                return self.call_helper("_mod", [a, b], pid)
            return _at(ast.BinOp(left=a, op=ast.Mod(), right=b), pid)
        if op == "^":
            return self.call_helper("_pow", [a, b], pid)
        raise ValueError(op)

    def _within(self, limit: int, operand, pid: int):
        """-limit < operand < limit, with the operand evaluated once."""
        return _at(ast.Compare(left=self.const(-limit, pid), ops=[ast.Lt(), ast.Lt()],
                               comparators=[operand, self.const(limit, pid)]), pid)

    def checked_mul(self, e: S.Binary, a, b, pid: int):
        B = self.B
        info = self.info
        if not self.inline_bounds:
            return self.call_helper("_mul", [a, b], pid)
        left_const = isinstance(e.left, S.Num) and isinstance(e.left.value, int)
        right_const = isinstance(e.right, S.Num) and isinstance(e.right.value, int)
        if left_const or right_const:
            # one side is a literal: test only the other side, keep the order
            small = e.left if left_const else e.right
            limit = 1 << max(B - info.bound(small), 1)
            t = self.temp("_t")
            walrus = _at(ast.NamedExpr(target=self.name(t, pid, store=True), value=b if left_const else a), pid)
            k1 = self.const(small.value, pid)
            k2 = self.const(small.value, pid)
            if left_const:
                fast = _at(ast.BinOp(left=k1, op=ast.Mult(), right=self.name(t, pid)), pid)
                slow = self.call_helper("_mul", [k2, self.name(t, pid)], pid)
                # the literal has no side effects, so testing the right side first is fine
            else:
                fast = _at(ast.BinOp(left=self.name(t, pid), op=ast.Mult(), right=k1), pid)
                slow = self.call_helper("_mul", [self.name(t, pid), k2], pid)
            return _at(ast.IfExp(test=self._within(limit, walrus, pid), body=fast, orelse=slow), pid)
        limit = 1 << (B // 2)
        t1, t2 = self.temp("_t"), self.temp("_t")
        w1 = _at(ast.NamedExpr(target=self.name(t1, pid, store=True), value=a), pid)
        w2 = _at(ast.NamedExpr(target=self.name(t2, pid, store=True), value=b), pid)
        both = _at(ast.BinOp(left=self._within(limit, w1, pid), op=ast.BitAnd(),
                             right=self._within(limit, w2, pid)), pid)
        fast = _at(ast.BinOp(left=self.name(t1, pid), op=ast.Mult(), right=self.name(t2, pid)), pid)
        slow = self.call_helper("_mul", [self.name(t1, pid), self.name(t2, pid)], pid)
        return _at(ast.IfExp(test=both, body=fast, orelse=slow), pid)
