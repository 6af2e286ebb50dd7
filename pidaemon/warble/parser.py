"""Recursive-descent parser: tokens -> Warble syntax tree (`syntax.Program`).

Binary operators are parsed by precedence climbing, so a long chain such as
`1+1+...+1` costs no recursion; nesting (parentheses, blocks, unary and `^`
chains) is counted and capped by `Limits.max_depth`, so hostile input ends
with a Warble error, never with Python's RecursionError.
"""
from __future__ import annotations

from typing import Mapping

from . import syntax as S
from .errors import UnknownFunction, WarbleError, did_you_mean
from .lexer import KEYWORDS, Token, tokenize
from .limits import Limits

# precedence of binary operators (higher binds tighter)
BINARY_PREC = {
    "||": 1, "&&": 2,
    "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3,
    "+": 4, "-": 4,
    "*": 5, "/": 5, "%": 5,
}
COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
ASSIGN_OPS = frozenset({"=", "+=", "-=", "*=", "/=", "%="})
MAX_LOOP_NESTING = 16
STATEMENT_WORDS = KEYWORDS | {"ELSEIF"}
CALL_LIKE_KEYWORDS = frozenset({"IF", "ELSEIF", "WHILE", "FOR"})   # written NAME( like a call

Arity = tuple[int, "int | None"]


def parse(source: str, limits: Limits, functions: Mapping[str, Arity],
          silent_calls: frozenset[str] | None = None) -> S.Program:
    """Parse `source`; `functions` maps every callable name to (min, max) arguments.

    `silent_calls` is for the REPL: a value on its own at the top level (`2+3`,
    `x`, `SQRT(2)`) becomes a PRINT of it, except a call of one of these names
    (PRINT, effects...), which stays a plain call. None (programs): no echo.
    """
    reserved = frozenset(KEYWORDS | set(functions) | {"ELSEIF"})
    tokens = tokenize(source, limits, reserved)
    return Parser(tokens, source, limits, functions, silent_calls).program()


def _show(tok: Token) -> str:
    if tok.kind == "eof":
        return "the end of the program"
    if tok.kind == "newline":
        return "a line break"
    if tok.kind == "str":
        return "a string"
    if tok.kind == "num":
        return f"the number {tok.text}"
    return f"'{tok.text}'"


class Parser:
    def __init__(self, tokens: list[Token], source: str, limits: Limits,
                 functions: Mapping[str, Arity], silent_calls: frozenset[str] | None = None):
        self.tokens = tokens
        self.pos = 0
        self.source = source
        self.limits = limits
        self.functions = functions
        self.silent_calls = silent_calls
        self.depth = 0
        self.loops = 0
        self.defined: set[str] = set()

    # ---- token helpers -----------------------------------------------------
    def peek(self, offset: int = 0) -> Token:
        return self.tokens[min(self.pos + offset, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.tokens[self.pos]
        if tok.kind != "eof":
            self.pos += 1
        return tok

    def is_op(self, text: str, offset: int = 0) -> bool:
        tok = self.peek(offset)
        return tok.kind == "op" and tok.text == text

    def is_name(self, text: str) -> bool:
        tok = self.peek()
        return tok.kind == "name" and tok.text == text

    def skip_newlines(self) -> None:
        while self.peek().kind == "newline":
            self.pos += 1

    def expect(self, text: str, what: str, opener: Token | None = None) -> Token:
        tok = self.peek()
        if tok.kind == "op" and tok.text == text:
            return self.next()
        if opener is not None:
            raise WarbleError(
                f"missing {text} to close the {opener.text} at line {opener.line}, "
                f"column {opener.col}; found {_show(tok)}", tok.line, tok.col)
        raise WarbleError(f"expected {what}, found {_show(tok)}", tok.line, tok.col)

    def enter(self, tok: Token) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise WarbleError(
                f"nesting too deep (more than {self.limits.max_depth} levels)", tok.line, tok.col)

    def leave(self) -> None:
        self.depth -= 1

    def enter_loop(self, tok: Token) -> None:
        # Python allows 20 nested blocks; loops compile to one each
        self.loops += 1
        if self.loops > MAX_LOOP_NESTING:
            raise WarbleError(f"loops nested too deeply (at most {MAX_LOOP_NESTING})", tok.line, tok.col)

    # ---- program and statements ---------------------------------------------
    def program(self) -> S.Program:
        body = self.statements(top=True)
        return S.Program(body, self.source, frozenset(self.defined))

    def statements(self, top: bool) -> list[S.Stmt]:
        body: list[S.Stmt] = []
        while True:
            tok = self.peek()
            if tok.kind == "newline" or (tok.kind == "op" and tok.text == ";"):
                self.next()
                continue
            if tok.kind == "eof":
                return body
            if tok.kind == "op" and tok.text == "}":
                if top:
                    raise WarbleError("unexpected } (no { to close)", tok.line, tok.col)
                return body
            if top and self.silent_calls is not None:
                body.append(self.echo_statement())
            else:
                body.append(self.statement())

    def block(self, owner: Token) -> list[S.Stmt]:
        self.skip_newlines()
        tok = self.peek()
        if not (tok.kind == "op" and tok.text == "{"):
            raise WarbleError(f"expected {{ to start the block of {owner.text}, found {_show(tok)}",
                              tok.line, tok.col)
        self.next()
        self.enter(tok)
        body = self.statements(top=False)
        self.expect("}", "}", opener=tok)
        self.leave()
        return body

    def statement(self) -> S.Stmt:
        tok = self.peek()
        if tok.kind == "op" and tok.text == "{":
            self.next()
            self.enter(tok)
            body = self.statements(top=False)
            self.expect("}", "}", opener=tok)
            self.leave()
            return S.Block(tok.line, tok.col, body)
        if tok.kind == "op" and tok.text in ("++", "--"):
            raise WarbleError(f"{tok.text} goes after a variable name (i{tok.text})", tok.line, tok.col)
        if tok.kind != "name":
            raise WarbleError(f"expected a statement, found {_show(tok)}", tok.line, tok.col)
        word = tok.text
        if word == "IF":
            return self.if_statement()
        if word == "WHILE":
            self.next()
            cond = self.condition(tok)
            self.enter_loop(tok)
            body = self.block(tok)
            self.loops -= 1
            return S.While(tok.line, tok.col, cond, body)
        if word == "FOR":
            return self.for_statement()
        if word in ("BREAK", "CONTINUE"):
            self.next()
            if self.loops == 0:
                raise WarbleError(f"{word} outside a loop", tok.line, tok.col)
            return S.Break(tok.line, tok.col) if word == "BREAK" else S.Continue(tok.line, tok.col)
        if word in ("ELSE", "ELSEIF"):
            raise WarbleError("ELSE without IF", tok.line, tok.col)
        return self.simple_statement()

    def echo_statement(self) -> S.Stmt:
        """REPL, top level: a statement, or a value on its own, compiled as PRINT(value)."""
        tok = self.peek()
        if tok.kind == "name":
            nxt = self.peek(1)
            if tok.text in STATEMENT_WORDS or (
                    nxt.kind == "op" and (nxt.text in ASSIGN_OPS or nxt.text in ("++", "--"))):
                return self.statement()
        elif not (tok.kind in ("num", "str") or (tok.kind == "op" and tok.text in ("(", "-", "+", "!"))):
            return self.statement()      # what cannot start a value: the usual error
        value = self.expression()
        if isinstance(value, S.Call) and value.name in self.silent_calls:
            return S.CallStmt(tok.line, tok.col, value)
        return S.CallStmt(tok.line, tok.col, S.Call(tok.line, tok.col, "PRINT", [value]))

    def simple_statement(self) -> S.Stmt:
        """An assignment or a call: what may stand in a FOR header too."""
        tok = self.peek()
        if tok.kind != "name":
            raise WarbleError(f"expected an assignment or a call, found {_show(tok)}",
                              tok.line, tok.col)
        if self.is_op("(", 1):
            call = self.call()
            return S.CallStmt(tok.line, tok.col, call)
        name = self.variable_name(tok, assigning=True)
        self.next()
        op = self.peek()
        # i++ and x+=e are kept as x = x + e: one form for the compiler
        if op.kind == "op" and op.text in ("++", "--"):
            self.next()
            value = S.Binary(op.line, op.col, op.text[0], S.Var(tok.line, tok.col, name),
                             S.Num(op.line, op.col, 1, "1"))
            return S.Assign(op.line, op.col, name, op.text, value)
        if op.kind == "op" and op.text in ASSIGN_OPS:
            self.next()
            value = self.expression(required=True)
            if op.text == "=":
                self.defined.add(name)
            else:
                value = S.Binary(op.line, op.col, op.text[0], S.Var(tok.line, tok.col, name), value)
            return S.Assign(op.line, op.col, name, op.text, value)
        upper = name.upper()
        hint = (f": keywords are upper case ({upper})" if upper in STATEMENT_WORDS
                else did_you_mean(name, STATEMENT_WORDS | set(self.functions)))
        raise WarbleError(
            f"expected =, +=, -=, *=, /=, %=, ++ or -- after {name}, found {_show(op)}{hint}",
            op.line, op.col)

    def variable_name(self, tok: Token, assigning: bool) -> str:
        name = tok.text
        if name in KEYWORDS or name == "ELSEIF":
            raise WarbleError(f"unexpected keyword {name}", tok.line, tok.col)
        if name in self.functions:
            if assigning:
                raise WarbleError(f"{name} is a built-in function, not a variable", tok.line, tok.col)
            raise WarbleError(f"{name} is a built-in function: call it as {name}(...)",
                              tok.line, tok.col)
        return name

    def condition(self, owner: Token) -> S.Expr:
        self.skip_newlines()
        opener = self.peek()
        self.expect("(", f"( after {owner.text}")
        self.enter(opener)
        cond = self.expression(required=True)
        self.expect(")", ")", opener=opener)
        self.leave()
        return cond

    def if_statement(self) -> S.If:
        tok = self.next()
        cond = self.condition(tok)
        body = self.block(tok)
        node = S.If(tok.line, tok.col, cond, body, [])
        # ELSE may follow on a later line
        save = self.pos
        self.skip_newlines()
        nxt = self.peek()
        if nxt.kind == "name" and nxt.text == "ELSEIF":
            node.orelse = [self.if_statement()]
        elif nxt.kind == "name" and nxt.text == "ELSE":
            self.next()
            self.skip_newlines()
            if self.is_name("IF"):
                node.orelse = [self.if_statement()]
            else:
                node.orelse = self.block(nxt)
        else:
            self.pos = save
        return node

    def for_statement(self) -> S.For:
        tok = self.next()
        self.skip_newlines()
        opener = self.peek()
        self.expect("(", "( after FOR")
        self.enter(opener)
        init = None if self.is_op(";") else self.simple_statement()
        self.expect(";", "; after the first part of FOR(init; condition; step)")
        cond = None if self.is_op(";") else self.expression(required=True)
        self.expect(";", "; after the condition of FOR(init; condition; step)")
        step = None if self.is_op(")") else self.simple_statement()
        self.expect(")", ")", opener=opener)
        self.leave()
        self.enter_loop(tok)
        body = self.block(tok)
        self.loops -= 1
        return S.For(tok.line, tok.col, init, cond, step, body)

    # ---- expressions -------------------------------------------------------
    def expression(self, required: bool = False, min_prec: int = 1) -> S.Expr:
        if required:
            self.skip_newlines()
        left = self.unary()
        while True:
            tok = self.peek()
            if tok.kind != "op":
                return left
            prec = BINARY_PREC.get(tok.text)
            if prec is None or prec < min_prec:
                return left
            self.next()
            self.skip_newlines()
            right = self.expression(min_prec=prec + 1)
            op = tok.text
            if op in COMPARISONS:
                left = S.Compare(tok.line, tok.col, op, left, right)
                nxt = self.peek()
                if nxt.kind == "op" and nxt.text in COMPARISONS:
                    raise WarbleError("comparisons cannot be chained: write a<b && b<c",
                                      nxt.line, nxt.col)
            elif op in ("&&", "||"):
                left = S.Logic(tok.line, tok.col, op, left, right)
            else:
                left = S.Binary(tok.line, tok.col, op, left, right)

    def unary(self) -> S.Expr:
        tok = self.peek()
        if tok.kind == "op" and tok.text in ("-", "+", "!"):
            self.next()
            self.enter(tok)
            operand = self.unary()
            self.leave()
            if tok.text == "-" and isinstance(operand, S.Num) and not operand.text.startswith("-"):
                # fold -5 into a literal (keeps -5 printable and cheap)
                return S.Num(tok.line, tok.col, -operand.value, "-" + operand.text)
            return S.Unary(tok.line, tok.col, tok.text, operand)
        if tok.kind == "op" and tok.text in ("++", "--"):
            raise WarbleError(f"{tok.text} goes after a variable name (i{tok.text})",
                              tok.line, tok.col)
        return self.power()

    def power(self) -> S.Expr:
        base = self.postfix()
        tok = self.peek()
        if tok.kind == "op" and tok.text == "^":
            self.next()
            self.skip_newlines()
            self.enter(tok)
            exponent = self.unary()          # right-associative, allows 2^-1
            self.leave()
            return S.Binary(tok.line, tok.col, "^", base, exponent)
        return base

    def postfix(self) -> S.Expr:
        node = self.primary()
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.text in ("\u00b2", "\u00b3"):
                self.next()
                power = 2 if tok.text == "\u00b2" else 3
                node = S.Binary(tok.line, tok.col, "^", node, S.Num(tok.line, tok.col, power, str(power)))
                continue
            return node

    def primary(self) -> S.Expr:
        tok = self.peek()
        if tok.kind == "num":
            self.next()
            return S.Num(tok.line, tok.col, tok.value, tok.text)
        if tok.kind == "str":
            self.next()
            return S.Str(tok.line, tok.col, tok.value)
        if tok.kind == "name":
            if self.is_op("(", 1):
                return self.call()
            name = self.variable_name(tok, assigning=False)
            self.next()
            return S.Var(tok.line, tok.col, name)
        if tok.kind == "op" and tok.text == "(":
            self.next()
            self.enter(tok)
            inner = self.expression(required=True)
            self.expect(")", ")", opener=tok)
            self.leave()
            return inner
        if tok.kind == "op" and tok.text == ")":
            raise WarbleError("unexpected ) (no ( to close)" if self.depth == 0 else
                              "expected a value before )", tok.line, tok.col)
        raise WarbleError(f"expected a value, found {_show(tok)}", tok.line, tok.col)

    def call(self) -> S.Call:
        tok = self.next()
        name = tok.text
        if name not in self.functions:
            if name in KEYWORDS or name == "ELSEIF":
                raise WarbleError(f"unexpected keyword {name}", tok.line, tok.col)
            upper = name.upper()
            if upper in self.functions:
                raise UnknownFunction(name, f"unknown function {name}: built-in names are upper case ({upper})",
                                      tok.line, tok.col)
            if upper in STATEMENT_WORDS:
                raise WarbleError(f"{name} is not a function: keywords are upper case ({upper})",
                                  tok.line, tok.col)
            hint = did_you_mean(name, CALL_LIKE_KEYWORDS | set(self.functions))
            if name != upper:
                raise WarbleError(f"{name} is not a function{hint}", tok.line, tok.col)
            raise UnknownFunction(name, f"unknown function {name}{hint}", tok.line, tok.col)
        opener = self.next()                 # '('
        self.enter(opener)
        args: list[S.Expr] = []
        if not self.is_op(")"):
            while True:
                args.append(self.expression(required=True))
                if self.is_op(","):
                    self.next()
                    continue
                break
        self.expect(")", ")", opener=opener)
        self.leave()
        lo, hi = self.functions[name]
        if len(args) < lo or (hi is not None and len(args) > hi):
            raise WarbleError(f"{name} takes {_arity_text(lo, hi)}, not {len(args)}", tok.line, tok.col)
        return S.Call(tok.line, tok.col, name, args)


def _arity_text(lo: int, hi: int | None) -> str:
    def n(k: int) -> str:
        return f"{k} argument" + ("" if k == 1 else "s")
    if hi is None:
        return f"at least {n(lo)}"
    if lo == hi:
        return n(lo)
    return f"{lo} to {n(hi)}"
