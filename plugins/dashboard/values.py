"""Values from the network made fit for the page: cut, finite, of one type, or left out.

The dashboard shows what nodes, workers and users send (a hostname, a
Warble's output, a leaderboard's user names).  A wrong value must not take a
message's other values with it, nor break the model, the JSON or the page:
each rule here returns the value in its one type, or None (shown as
"unknown"), and never raises.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pidaemon.names import is_name

TEXT_LIMIT = 200          # characters of a string shown on the page
JSON_DEPTH = 4            # levels of a copied object (a node's info shown in its panel)
JSON_ITEMS = 64           # keys or items per level
JSON_VALUES = 2000        # values of a copied object in all (its memory, whatever its shape)
# C0 and C1 controls, lone surrogates (not encodable as UTF-8), the BMP's non-characters.
_NOT_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")


def text(value: Any, limit: int = TEXT_LIMIT) -> str | None:
    """A string without control characters (tab and newline stay), cut to `limit` characters."""
    if not isinstance(value, str):
        return None
    if len(value) > limit:
        value = value[:limit - 1] + "…"
    return _NOT_TEXT.sub("\ufffd", value)


def line(value: Any, limit: int = TEXT_LIMIT) -> str | None:
    """One line of text: newlines and tabs become spaces."""
    cut = text(value, limit)
    return None if cut is None else cut.replace("\n", " ").replace("\r", " ").replace("\t", " ")


def name(value: Any) -> str | None:
    """A node id or another name of the protocol (`pidaemon.names.is_name`)."""
    return value if is_name(value) else None


def number(value: Any, low: float, high: float, digits: int = 1) -> float | None:
    """A finite number from `low` to `high`, rounded to `digits` decimals."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and not low <= value <= high:  # before float(): a huge int overflows
        return None
    result = float(value)
    if not math.isfinite(result) or not low <= result <= high:
        return None
    return round(result, digits)


def whole(value: Any, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def bounded_json(value: Any, depth: int = JSON_DEPTH, items: int = JSON_ITEMS, values: int = JSON_VALUES) -> Any:
    """A copy of a JSON value within bounds: `depth` levels, `items` per level, `values` in all, strings cut,
    numbers finite (what does not fit becomes None, or is left out of its object or list)."""
    return _BoundedCopy(items, values).copy(value, depth)


class _BoundedCopy:
    def __init__(self, items: int, values: int):
        self.items = items
        self.left = values

    def copy(self, value: Any, depth: int) -> Any:
        self.left -= 1
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return number(value, -1e300, 1e300, 6) if isinstance(value, float) or abs(value) > 2 ** 53 else value
        if isinstance(value, str):
            return text(value)
        if depth <= 0:
            return None
        if isinstance(value, dict):
            copy = {}
            for key, item in value.items():
                if len(copy) >= self.items or self.left <= 0:
                    break
                cut = text(key, 64) if isinstance(key, str) else None
                if cut is not None:
                    copy[cut] = self.copy(item, depth - 1)
            return copy
        if isinstance(value, list):
            copy = []
            for item in value[:self.items]:
                if self.left <= 0:
                    break
                copy.append(self.copy(item, depth - 1))
            return copy
        return None
