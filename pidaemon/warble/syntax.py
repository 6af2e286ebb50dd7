"""Warble's own syntax tree. The parser builds it, the compiler reads it.

Every node carries `line` and `col` (1-based) of the token that names the
operation: the operator of a binary expression, the name of a call or of a
variable, the keyword of a statement. Runtime errors are reported there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(slots=True)
class Node:
    line: int
    col: int


# ---- expressions -----------------------------------------------------------

@dataclass(slots=True)
class Num(Node):
    value: int | float
    text: str            # as written: precision mode re-reads decimals from it


@dataclass(slots=True)
class Str(Node):
    value: str


@dataclass(slots=True)
class Var(Node):
    name: str


@dataclass(slots=True)
class Unary(Node):
    op: str              # '-', '+', '!'
    operand: "Expr"


@dataclass(slots=True)
class Binary(Node):
    op: str              # + - * / % ^
    left: "Expr"
    right: "Expr"


@dataclass(slots=True)
class Compare(Node):
    op: str              # == != < <= > >=
    left: "Expr"
    right: "Expr"


@dataclass(slots=True)
class Logic(Node):
    op: str              # && ||
    left: "Expr"
    right: "Expr"


@dataclass(slots=True)
class Call(Node):
    name: str
    args: list["Expr"]


Expr = Union[Num, Str, Var, Unary, Binary, Compare, Logic, Call]


# ---- statements ------------------------------------------------------------

@dataclass(slots=True)
class Assign(Node):
    name: str
    op: str              # as written: '=', '+=', ..., '++', '--'
    value: "Expr"        # x += e and x++ arrive here as x = x + e and x = x + 1


@dataclass(slots=True)
class CallStmt(Node):
    call: Call


@dataclass(slots=True)
class Block(Node):
    body: list["Stmt"]


@dataclass(slots=True)
class If(Node):
    cond: "Expr"
    body: list["Stmt"]
    orelse: list["Stmt"] = field(default_factory=list)


@dataclass(slots=True)
class While(Node):
    cond: "Expr"
    body: list["Stmt"]


@dataclass(slots=True)
class For(Node):
    init: "Assign | CallStmt | None"
    cond: "Expr | None"
    step: "Assign | CallStmt | None"
    body: list["Stmt"]


@dataclass(slots=True)
class Break(Node):
    pass


@dataclass(slots=True)
class Continue(Node):
    pass


Stmt = Union[Assign, CallStmt, Block, If, While, For, Break, Continue]


@dataclass(slots=True)
class Program:
    body: list[Stmt]
    source: str
    defined: frozenset[str] = frozenset()   # variables given a value with = somewhere (not x+=, x++)


def walk(nodes):
    """Yield every node under `nodes` (a node or a list), depth first, iteratively."""
    stack = list(reversed(nodes)) if isinstance(nodes, list) else [nodes]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        yield node
        children = []
        if isinstance(node, (Unary,)):
            children = [node.operand]
        elif isinstance(node, (Binary, Compare, Logic)):
            children = [node.left, node.right]
        elif isinstance(node, Call):
            children = list(node.args)
        elif isinstance(node, Assign):
            children = [node.value]
        elif isinstance(node, CallStmt):
            children = [node.call]
        elif isinstance(node, Block):
            children = list(node.body)
        elif isinstance(node, If):
            children = [node.cond, *node.body, *node.orelse]
        elif isinstance(node, While):
            children = [node.cond, *node.body]
        elif isinstance(node, For):
            children = [node.init, node.cond, node.step, *node.body]
        stack.extend(reversed(children))
