"""The rules for values that come from nodes: each returns the value in its one type, or raises Invalid.

Whatever a node (or anyone who can publish on its topics) sends, what the
registry keeps is of the type its readers expect: an `int` that is an int in
range, a finite `float`, a string of bounded length without control
characters, a bounded list of names.  `pidaemon.names.is_name` is the rule for
ids and every other name.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Any

from pidaemon.names import NAME_DOC, is_name

SHOWN_CHARS = 40            # a rejected value is shown up to this many characters in the log
MAX_NAMES = 64              # capabilities, plugins of a node
MAX_TIME = 1e11             # seconds since 1970: year 5138; a time beyond is not a time
# A link-layer address as Linux shows it: EUI-48 (b8:27:eb:1a:2b:3c), but also EUI-64, the 20 bytes of
# IP over InfiniBand, or the 4 of a tunnel: refusing a real node's info for its odd MAC would cost its work.
_MAC = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){0,19}")
# C0 and C1 controls, lone surrogates, and the non-characters of the Basic Multilingual Plane.
_NOT_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")


class Rejected(Exception):
    """A message (or a stored record) that the registry drops; the text says what and why, in one line."""


class Invalid(Rejected):
    """One field of a message or record is not what the protocol allows."""

    def __init__(self, field: str, value: Any, expected: str):
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: expected {expected}, got {shorten(value)}")


def shorten(value: Any, limit: int = SHOWN_CHARS) -> str:
    """repr(value) cut to about `limit` characters, for a log line."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} long)"
    if isinstance(value, (list, dict)) and len(value) > 8:
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def json_object(payload: bytes, limit: int, field: str = "payload") -> dict[str, Any]:
    """A JSON object of at most `limit` bytes."""
    if len(payload) > limit:
        raise Invalid(field, payload, f"at most {limit} bytes")
    try:
        value = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Invalid(field, payload, f"UTF-8 text (bad byte at {exc.start})") from None
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, or an int of too many digits
        raise Invalid(field, payload, f"JSON ({str(exc)[:60]})") from None
    if not isinstance(value, dict):
        raise Invalid(field, value, "a JSON object")
    return value


def name(field: str, value: Any) -> str:
    if not is_name(value):
        raise Invalid(field, value, NAME_DOC)
    return value


def names(field: str, value: Any, limit: int = MAX_NAMES) -> list[str]:
    """A list of at most `limit` names, duplicates dropped, order kept."""
    if not isinstance(value, list) or len(value) > limit:
        raise Invalid(field, value, f"a list of at most {limit} names")
    for item in value:
        name(f"{field}[]", item)
    return list(dict.fromkeys(value))


def text(field: str, value: Any, limit: int) -> str:
    """A string of 1 to `limit` characters, none of them a control character."""
    if not isinstance(value, str) or not 0 < len(value) <= limit or _NOT_TEXT.search(value):
        raise Invalid(field, value, f"text of 1-{limit} characters without control characters")
    return value


def integer(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(field, value, f"an integer from {low} to {high}")
    return value


def number(field: str, value: Any, low: float, high: float) -> float:
    """A finite number from `low` to `high`, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(field, value, f"a number from {low:g} to {high:g}")
    if isinstance(value, int) and not low <= value <= high:  # before float(): a huge int overflows
        raise Invalid(field, value, f"a number from {low:g} to {high:g}")
    result = float(value)
    if not math.isfinite(result) or not low <= result <= high:
        raise Invalid(field, value, f"a number from {low:g} to {high:g}")
    return result


def boolean(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(field, value, "true or false")
    return value


def choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise Invalid(field, value, " or ".join(choices))
    return value


def ip_address(field: str, value: Any) -> str:
    """An IPv4 or IPv6 address, in its canonical form."""
    try:
        if isinstance(value, str) and len(value) <= 45:
            return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    raise Invalid(field, value, "an IPv4 or IPv6 address")


def mac_address(field: str, value: Any) -> str:
    """1 to 20 hexadecimal bytes joined by ':' (six for Ethernet), in lower case."""
    if not isinstance(value, str) or not _MAC.fullmatch(value):
        raise Invalid(field, value, "a MAC address such as b8:27:eb:1a:2b:3c (1-20 hex bytes joined by ':')")
    return value.lower()
