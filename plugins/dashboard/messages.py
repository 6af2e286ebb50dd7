"""What the dashboard takes from the bus and from the Warble server's events, checked where it enters.

| source | function | result |
|---|---|---|
| `nodes/<id>/status` | `parse_status` | `online`, `offline`, None (cleared) |
| `nodes/<id>/info` | `parse_info` | `NodeFacts` |
| `nodes/<id>/health` (the registry's) | `parse_health` | `Health` |
| `nodes/<id>/telemetry` | `parse_readings` | `Readings` |
| a sample of the telemetry store | `readings_of` | `Readings` |
| `lights/state` | `parse_lamp` | the lamp for the page |
| `warble/leaderboard` | `parse_leaderboard` | the leaderboard for the page |
| the `warble:job` event | `parse_job` | `JobFacts` |

A message that cannot be used at all (not JSON, too big, about another node)
raises `Invalid`, which says why, and the dashboard drops it with one log
line; a single wrong reading or field inside a usable message is left out
(`values.py`), so that one odd value does not hide a node's others.
Empty payloads are cleared retained messages: None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pidaemon.bus import Message, PayloadError
from pidaemon.placement import is_mac

from .values import bounded_json, line, name, number, text, whole

MAX_STATUS_BYTES = 64
MAX_INFO_BYTES = 64 * 1024
MAX_HEALTH_BYTES = 4 * 1024
MAX_TELEMETRY_BYTES = 64 * 1024
MAX_LAMP_BYTES = 64 * 1024
MAX_LEADERBOARD_BYTES = 64 * 1024
MAX_PIXELS = 1024
MAX_LEADERS = 50
MAX_PLUGINS = 64
MAX_OUTPUT_LINES = 20
MAX_SOURCE = 500
MAX_TIME = 1e11
STATES = ("online", "unhealthy", "offline")
ENDED = ("done", "failed", "expired")


class Invalid(ValueError):
    """A message the dashboard cannot use; the text says why."""


@dataclass(frozen=True)
class NodeFacts:
    """From a node's `info`: what the picture and the node's panel need."""

    role: str | None = None
    mac: str | None = None                                  # lower case
    simulated: bool = False
    plugins: Mapping[str, str] = field(default_factory=dict)  # plugin: its state
    info: Mapping[str, Any] = field(default_factory=dict)     # the whole info, within bounds, for the panel


@dataclass(frozen=True)
class Health:
    state: str                                             # online, unhealthy or offline
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Readings:
    cpu: float | None = None    # percent
    temp: float | None = None   # °C
    mem: float | None = None    # percent
    simulated: bool = False


@dataclass(frozen=True)
class JobFacts:
    id: str
    state: str
    node: str | None
    item: Mapping[str, Any]     # the FeedItem it makes when it has ended


def _object(message: Message, limit: int) -> dict[str, Any]:
    try:
        return message.json_object(limit)
    except PayloadError as exc:
        raise Invalid(str(exc)) from None


def _same_node(payload: Mapping[str, Any], key: str, node_id: str) -> None:
    if payload.get(key) != node_id:
        raise Invalid(f"{key} {text(repr(payload.get(key)), 60)} is not the node of the topic, {node_id}")


def parse_status(message: Message) -> str | None:
    if not message.payload:
        return None
    state = message.payload.strip()[:MAX_STATUS_BYTES]
    if state not in (b"online", b"offline"):
        raise Invalid(f"status {message.payload[:40]!r}: expected online or offline")
    return state.decode()


def parse_info(node_id: str, message: Message) -> NodeFacts | None:
    if not message.payload:
        return None
    info = _object(message, MAX_INFO_BYTES)
    _same_node(info, "id", node_id)
    mac = info.get("mac")
    plugins = info.get("plugins")
    states: dict[str, str] = {}
    if isinstance(plugins, dict):
        for plugin, state in list(plugins.items())[:MAX_PLUGINS]:
            if name(plugin) and isinstance(state, dict):
                states[plugin] = line(state.get("state"), 32) or "unknown"
    return NodeFacts(role=name(info.get("role")), mac=mac.lower() if isinstance(mac, str) and is_mac(mac) else None,
                     simulated=info.get("simulated") is True, plugins=states, info=bounded_json(info))


def parse_health(node_id: str, message: Message) -> Health | None:
    if not message.payload:
        return None
    health = _object(message, MAX_HEALTH_BYTES)
    _same_node(health, "node", node_id)
    state = health.get("state")
    if state not in STATES:
        raise Invalid(f"state {text(repr(state), 60)}: expected {', '.join(STATES)}")
    return Health(state, bounded_json(health, depth=2))


def parse_readings(node_id: str, message: Message) -> Readings | None:
    if not message.payload:
        return None
    sample = _object(message, MAX_TELEMETRY_BYTES)
    if "node" in sample:
        _same_node(sample, "node", node_id)
    if not isinstance(sample.get("readings"), dict):
        raise Invalid("no readings object")
    return readings_of(sample)


def readings_of(sample: Mapping[str, Any]) -> Readings:
    """The readings the dashboard shows, from a telemetry sample (a message, or one from the telemetry store)."""
    readings = sample.get("readings")
    if not isinstance(readings, dict):
        return Readings()
    memory = readings.get("memory")
    return Readings(cpu=number(readings.get("cpu_percent"), 0, 100),
                    temp=number(readings.get("cpu_temperature"), -60, 200),
                    mem=number(memory.get("percent"), 0, 100) if isinstance(memory, dict) else None,
                    simulated=readings.get("simulated") is True)


def parse_lamp(message: Message) -> dict[str, Any] | None:
    """`{"pixels": [[r, g, b(, w)], ...], "brightness": 0-1, "effect": name or null, "on": bool}`: a wrong
    pixel makes the whole state invalid (the page shows the lamp as it is, or as it was)."""
    if not message.payload:
        return None
    state = _object(message, MAX_LAMP_BYTES)
    pixels = state.get("pixels")
    if not isinstance(pixels, list) or len(pixels) > MAX_PIXELS:
        raise Invalid(f"pixels: expected a list of at most {MAX_PIXELS} pixels")
    for pixel in pixels:
        if not isinstance(pixel, list) or len(pixel) not in (3, 4) or any(whole(c, 0, 255) is None for c in pixel):
            raise Invalid(f"pixels: {text(repr(pixel), 60)} is not [r, g, b] or [r, g, b, w] of 0-255")
    brightness = number(state.get("brightness", 1.0), 0, 1, 3)
    return {"pixels": pixels, "brightness": 1.0 if brightness is None else brightness,
            "effect": line(state.get("effect"), 32), "on": state.get("on") is not False}


def parse_leaderboard(message: Message) -> dict[str, Any] | None:
    """`{"pi_digits": [{"user", "digits", "job", "time"}, ...]}`: entries that are wrong are left out."""
    if not message.payload:
        return None
    board = _object(message, MAX_LEADERBOARD_BYTES)
    entries = board.get("pi_digits")
    if not isinstance(entries, list):
        raise Invalid("pi_digits: expected a list")
    leaders = []
    for entry in entries[:MAX_LEADERS]:
        if not isinstance(entry, dict):
            continue
        user, digits = line(entry.get("user"), 64), whole(entry.get("digits"), 0, 10 ** 9)
        if user is None or digits is None:
            continue
        leaders.append({"user": user, "digits": digits, "job": line(entry.get("job"), 64),
                        "time": number(entry.get("time"), 0, MAX_TIME, 3)})
    return {"pi_digits": leaders}


def parse_job(job: Any) -> JobFacts:
    """A job of the `warble:job` event (`Job.summary()`): its program, user and output came from users and
    workers, and are cut like any other text."""
    if not isinstance(job, dict):
        raise Invalid(f"job: expected a dict, got {type(job).__name__}")
    job_id, state = line(job.get("id"), 64), job.get("state")
    if not job_id or not isinstance(state, str):
        raise Invalid("job: no id or state")
    result = job.get("result") if isinstance(job.get("result"), dict) else {}
    output = result.get("output")
    error = result.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    item = {
        "id": job_id,
        "user": line(job.get("user"), 64),
        "source": text(job.get("source"), MAX_SOURCE),
        "node": name(job.get("node")),
        "status": line(result.get("status"), 32) or line(state, 32),
        "output": [line(out) or "" for out in output[:MAX_OUTPUT_LINES]] if isinstance(output, list) else [],
        "error": text(message, 300) if message is not None else None,
        "elapsed": number(result.get("elapsed"), 0, 1e7, 3),
        "time": number(job.get("updated"), 0, MAX_TIME, 3),
    }
    return JobFacts(job_id, line(state, 32) or "", name(job.get("node")), item)
