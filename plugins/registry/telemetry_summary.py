"""The few readings of a node's telemetry that the registry keeps and `pidaemon status` shows.

Each reading of the summary has one rule, with the ranges of
docs/telemetry.schema.json: percentages 0-100, a temperature from -60 to
200 °C, a load of 0 or more, counts that are integers.  A value that passes is
of one type (a float, an int, a string), so that a reader (the Warble server's
worker choice reads `cpu_percent`) never meets a string, a NaN or a number too
large for a float.

- `read_summary(payload)`, for the registry: a reading that is present but
  wrong makes the whole sample invalid (`Invalid`, which names the reading);
- `summarize_telemetry(payload)`, for displays (`pidaemon status`): a wrong
  reading is left out, and it never raises;
- `check_summary(summary)`: a summary as the registry stores and publishes it
  (`{"cpu_percent": 12.5, ...}`), checked again (records loaded from SQLite).

Readings that are absent stay absent.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from .fields import MAX_TIME, Invalid, integer, number

MAX_COUNT = 2 ** 53
_THROTTLED = re.compile(r"0x[0-9a-f]{1,16}")
FORWARDER_COUNTS = ("buffered", "dropped", "delivered", "failures")


def _percent(field: str, value: Any) -> float:
    return number(field, value, 0.0, 100.0)


def _temperature(field: str, value: Any) -> float:
    return number(field, value, -60.0, 200.0)


def _load(field: str, value: Any) -> float:
    return number(field, value, 0.0, 1e6)


def _time(field: str, value: Any) -> float:
    return number(field, value, 0.0, MAX_TIME)


def _throttled(field: str, value: Any) -> str:
    if not isinstance(value, str) or not _THROTTLED.fullmatch(value):
        raise Invalid(field, value, "a hexadecimal number such as 0x50005")
    return value


def _forwarder(field: str, value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise Invalid(field, value, "an object of counts")
    return {k: integer(f"{field}.{k}", value[k], 0, MAX_COUNT) for k in FORWARDER_COUNTS if k in value}


# (name in the summary, where it is in a telemetry payload, its rule)
READINGS: tuple[tuple[str, tuple[str | int, ...], Callable[[str, Any], Any]], ...] = (
    ("time", ("time",), _time),
    ("cpu_percent", ("readings", "cpu_percent"), _percent),
    ("memory_percent", ("readings", "memory", "percent"), _percent),
    ("cpu_temperature", ("readings", "cpu_temperature"), _temperature),
    ("load_1m", ("readings", "load_average", 0), _load),
    ("throttled", ("readings", "throttling", "raw"), _throttled),
    ("forwarder", ("readings", "telemetry_store", "forwarder"), _forwarder),
)
SUMMARY_KEYS = tuple(key for key, _, _ in READINGS)

_ABSENT = object()


def _find(payload: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    """The value at `path`, or _ABSENT; Invalid when something on the way is not a container of the right kind."""
    value: Any = payload
    for depth, key in enumerate(path):
        where = ".".join(str(k) for k in path[:depth]) or "payload"
        if isinstance(key, int):
            if not isinstance(value, list):
                raise Invalid(where, value, "a list")
            if len(value) <= key:
                return _ABSENT
        elif not isinstance(value, dict):
            raise Invalid(where, value, "an object")
        elif key not in value:
            return _ABSENT
        value = value[key]
    return value


def _summary(payload: dict[str, Any], strict: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key, path, rule in READINGS:
        try:
            value = _find(payload, path)
            if value is not _ABSENT:
                summary[key] = rule(".".join(str(k) for k in path), value)
        except Invalid:
            if strict:
                raise
    return summary


def read_summary(payload: dict[str, Any]) -> dict[str, Any]:
    """From a telemetry payload (`{"node", "time", "readings": {...}}`), the summary; Invalid if a reading is wrong."""
    return _summary(payload, strict=True)


def summarize_telemetry(payload: dict[str, Any]) -> dict[str, Any]:
    """From a telemetry payload, what a table of nodes needs; a wrong reading is left out."""
    return _summary(payload if isinstance(payload, dict) else {}, strict=False)


def check_summary(summary: Any, field: str = "telemetry") -> dict[str, Any]:
    """A summary as stored or published, checked again; keys it does not know are left out."""
    if not isinstance(summary, dict):
        raise Invalid(field, summary, "an object")
    rules = {key: rule for key, _, rule in READINGS}
    return {key: rules[key](f"{field}.{key}", summary[key]) for key in SUMMARY_KEYS if key in summary}
