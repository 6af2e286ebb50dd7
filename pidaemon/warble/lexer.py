"""Turns Warble source text into tokens.

Only ASCII letters, digits and a fixed set of symbols are accepted outside
string literals. Characters that phones substitute (typographic quotes,
dashes, x and division signs, <= >= !=) are read as what the user typed.
Positions are 1-based line and column in the text as given, so errors point
into what the user posted, `#pi{` wrapper included.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from .errors import WarbleError
from .limits import Limits
from .posts import leading_hashtag_end

KEYWORDS = frozenset({"IF", "ELSE", "WHILE", "FOR", "BREAK", "CONTINUE"})

# opening quote -> the quotes that close it: straight quotes pair with straight
# quotes; a phone's “ ” „ close with a typographic or a straight quote
QUOTES = {"\"": "\"", "\u201c": "\u201d\"", "\u201d": "\u201d\"", "\u201e": "\u201d\u201c\""}

# Longest first; the value is the operator as the parser sees it.
OPERATORS = [
    ("==", "=="), ("!=", "!="), ("<=", "<="), (">=", ">="), ("&&", "&&"), ("||", "||"),
    ("++", "++"), ("--", "--"), ("+=", "+="), ("-=", "-="), ("*=", "*="), ("/=", "/="),
    ("%=", "%="),
    ("+", "+"), ("-", "-"), ("*", "*"), ("/", "/"), ("%", "%"), ("^", "^"),
    ("<", "<"), (">", ">"), ("=", "="), ("!", "!"), ("(", "("), (")", ")"),
    ("{", "{"), ("}", "}"), (",", ","), (";", ";"),
    ("\u00b2", "\u00b2"), ("\u00b3", "\u00b3"),          # ² ³
    ("\u2264", "<="), ("\u2265", ">="), ("\u2260", "!="),  # ≤ ≥ ≠
    ("\u00d7", "*"), ("\u00f7", "/"),                      # × ÷
    ("\u2212", "-"), ("\u2013", "-"), ("\u2014", "--"),    # − – —(a phone's "--")
]
_OPS_BY_FIRST: dict[str, list[tuple[str, str]]] = {}
for _text, _op in OPERATORS:
    _OPS_BY_FIRST.setdefault(_text[0], []).append((_text, _op))

WHITESPACE = " \t\r\u00a0\ufeff"
# Directional formatting characters could make a leaderboard show other text
# than what runs ("Trojan Source"): refused even inside strings.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str        # 'num', 'str', 'name', 'op', 'newline', 'eof'
    text: str        # operator (normalised), name, number as written
    value: object    # int/float for numbers, str for strings
    line: int
    col: int


def _is_ascii_letter(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or c == "_"


def _is_ascii_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _describe(c: str) -> str:
    code = f"U+{ord(c):04X}"
    if c.isprintable() and not c.isspace():
        return f"'{c}' ({code})"
    return code


def _unexpected(c: str, line: int, col: int) -> WarbleError:
    cat = unicodedata.category(c)
    hint = ""
    if cat == "Nd":
        hint = ": only the digits 0-9 can be used in numbers"
    elif cat.startswith("L"):
        hint = ": names use only the letters A-Z, a-z, digits and _"
    elif c == "\x00":
        hint = ": NUL bytes are not allowed"
    elif c in "'`":
        hint = ': strings use double quotes "..."'
    return WarbleError(f"unexpected character {_describe(c)}{hint}", line, col)


def check_length(source: str, limits: Limits) -> None:
    if len(source) > limits.max_program_length:
        line = source.count("\n", 0, limits.max_program_length) + 1
        start = source.rfind("\n", 0, limits.max_program_length) + 1
        raise WarbleError(
            f"program is {len(source)} characters long; the limit is {limits.max_program_length}",
            line, limits.max_program_length - start + 1,
        )


def tokenize(source: str, limits: Limits, reserved: frozenset[str]) -> list[Token]:
    """Split `source` into tokens; `reserved` are keyword and built-in names."""
    if not isinstance(source, str):
        raise WarbleError("a Warble program must be text")
    check_length(source, limits)
    tokens: list[Token] = []
    n = len(source)
    i = 0
    line, line_start = 1, 0
    paren = 0

    def col_of(pos: int) -> int:
        return pos - line_start + 1

    # The "#pi" of a post's "#pi{...}" (posts.py): skipped, the braces are an ordinary block.
    after_hashtag = leading_hashtag_end(source, WHITESPACE + "\n")
    if after_hashtag is not None:
        k = after_hashtag
        while k < n and source[k] in WHITESPACE:
            k += 1
        if k >= n or source[k] != "{":
            lines_before = source.count("\n", 0, after_hashtag)
            ls = source.rfind("\n", 0, after_hashtag) + 1
            raise WarbleError("expected { after #pi", lines_before + 1, k - ls + 1)
        # keep line bookkeeping right for the skipped part
        for p in range(0, after_hashtag):
            if source[p] == "\n":
                line += 1
                line_start = p + 1
        i = after_hashtag

    while i < n:
        c = source[i]
        if c in WHITESPACE:
            i += 1
            continue
        if c == "\n":
            if paren == 0:
                tokens.append(Token("newline", "\n", None, line, col_of(i)))
            line += 1
            i += 1
            line_start = i
            continue
        start = i
        col = col_of(i)
        if _is_ascii_digit(c) or (c == "." and i + 1 < n and _is_ascii_digit(source[i + 1])):
            while i < n and _is_ascii_digit(source[i]):
                i += 1
            is_decimal = False
            if i < n and source[i] == ".":
                is_decimal = True
                i += 1
                while i < n and _is_ascii_digit(source[i]):
                    i += 1
            text = source[start:i]
            if i < n and source[i] == "." :
                raise WarbleError("a number has at most one decimal point", line, col_of(i))
            if is_decimal:
                value: object = float(text)
            else:
                if len(text.lstrip("0")) > limits.max_number_digits:
                    raise WarbleError(
                        f"number too large (more than {limits.max_number_digits} digits)", line, col)
                value = int(text)
            tokens.append(Token("num", text, value, line, col))
            continue
        if _is_ascii_letter(c):
            while i < n and (_is_ascii_letter(source[i]) or _is_ascii_digit(source[i])):
                i += 1
            word = source[start:i]
            for text, pos in _split_word(word, reserved):
                tokens.append(Token("name", text, None, line, col + pos))
            continue
        if c in QUOTES:
            closing = QUOTES[c]
            i += 1
            chars_start = i
            while True:
                if i >= n or source[i] == "\n":
                    raise WarbleError("unterminated string: it needs a closing quote", line, col)
                ch = source[i]
                if ch in closing:
                    break
                cat = unicodedata.category(ch)
                if cat in ("Cc", "Cs") or ch in BIDI_CONTROLS:
                    raise WarbleError(
                        f"character {_describe(ch)} is not allowed in a string", line, col_of(i))
                i += 1
            value = source[chars_start:i]
            i += 1
            tokens.append(Token("str", source[start:i], value, line, col))
            continue
        for text, op in _OPS_BY_FIRST.get(c, ()):
            if source.startswith(text, i):
                i += len(text)
                if op == "(":
                    paren += 1
                elif op == ")" and paren > 0:
                    paren -= 1
                tokens.append(Token("op", op, None, line, col))
                break
        else:
            raise _unexpected(c, line, col)
    tokens.append(Token("eof", "", None, line, col_of(i)))
    return tokens


def _split_word(word: str, reserved: frozenset[str]) -> list[tuple[str, int]]:
    """Split `xPRINT` into `x` and `PRINT`: statements may run together.

    A word that is not itself reserved is split before the longest reserved
    suffix that starts with an upper-case letter right after a lower-case
    letter or a digit (`x=yPRINT(x)` is `x=y PRINT(x)`).
    """
    if word in reserved:
        return [(word, 0)]
    for p in range(1, len(word)):
        prev, cur = word[p - 1], word[p]
        if "A" <= cur <= "Z" and (("a" <= prev <= "z") or _is_ascii_digit(prev)):
            if word[p:] in reserved:
                return [(word[:p], 0), (word[p:], p)]
    return [(word, 0)]
