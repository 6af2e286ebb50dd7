"""Finding the Warble program in a social-media post: `#pi{...}`.

The program runs from the first `{` after `#pi` to its matching `}`; braces
inside string literals ("…", “…”) do not count.  A post may carry other text
and hashtags around it.  Everything that knows the `#pi` hashtag reads it
from here: the Warble service's intake and the lexer (which takes a program
written as a post, `#pi{...}`, keeping its lines and columns).
"""

from __future__ import annotations

import re

HASHTAG = re.compile(r"#pi\s*(?=\{)", re.IGNORECASE)
QUOTES = {'"': '"', "\u201c": "\u201d\"", "\u201d": "\u201d\"", "\u201e": "\u201d\u201c\""}


def leading_hashtag_end(source: str, blank: str = " \t\r\n") -> int | None:
    """Where a program written as a post (`#pi{...}`) starts: just after its `#pi`, whose braces
    then read as an ordinary block; None when `source` (after `blank` characters) does not start with #pi."""
    start = len(source) - len(source.lstrip(blank))
    return start + 3 if source[start:start + 3].lower() == "#pi" else None


class NoWarble(ValueError):
    """The post has no complete `#pi{...}` program."""


MAX_CANDIDATES = 8  # `#pi{` places tried: each try may scan to the end of the post


def program_of(submission: str) -> str:
    """The program a submission carries: inside its `#pi{...}` if it mentions #pi (a post), else itself.

    Raises NoWarble for a post that mentions #pi without a complete program.
    """
    if "#pi" in submission.lower():
        return extract_warble(submission)
    return submission


def extract_warble(post: str) -> str:
    """The program text between the braces of the first complete `#pi{...}` in `post`.

    Callers bound the post's length; at most MAX_CANDIDATES hashtags are tried,
    so the work stays linear in the post's length.
    """
    for index, match in enumerate(HASHTAG.finditer(post)):
        if index == MAX_CANDIDATES:
            break
        start = match.end()  # at the "{"
        end = _matching_brace(post, start)
        if end is not None:
            return post[start + 1:end]
    raise NoWarble("no #pi{...} program in the post" if not HASHTAG.search(post)
                   else "the #pi{ program has no matching }")


def _matching_brace(text: str, start: int) -> int | None:
    depth = 0
    closing_quote = None
    for index in range(start, len(text)):
        char = text[index]
        if closing_quote is not None:
            if char in closing_quote:
                closing_quote = None
        elif char in QUOTES:
            closing_quote = QUOTES[char]
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None
