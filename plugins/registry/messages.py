"""What the registry takes from the network, checked where it enters: one function per kind of message.

Each returns a typed result or raises `Rejected` (usually `Invalid`, which
names the field and shows the value); the registry then drops the message
with one log line.  Nothing from a node reaches a record, the SQLite file,
the published registry or a reader such as the Warble server's worker choice
unchecked:

| message | topic | function |
|---|---|---|
| a node id | the `<id>` level of `nodes/<id>/...`, the `node` of a ping answer | `node_id` |
| presence | `nodes/<id>/status` | `parse_status` |
| facts | `nodes/<id>/info` | `parse_info` |
| readings | `nodes/<id>/telemetry` | `parse_telemetry` |
| ping answers | `nodes/<id>/reply/ping` | `parse_ping_answer` |
| a forget command | `<registry topic>/forget` | `parse_forget` |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pidaemon.topics import MAX_PING_SPREAD

from .fields import (MAX_NAMES, MAX_TIME, Invalid, boolean, integer, ip_address, json_object, mac_address, name,
                     names, number, text)
from .telemetry_summary import read_summary

MAX_INFO_BYTES = 64 * 1024       # a node's info is about 1 KB, more with many plugins and their errors
MAX_INFO_SCHEMA = 1000           # versions of the info message a newer node may speak (the registry reads the fields it knows)
MAX_TELEMETRY_BYTES = 64 * 1024  # a sample is under 1 KB, a few KB with many cores and thermal zones
MAX_ANSWER_BYTES = 1024
MAX_FORGET_BYTES = 64 * 1024
MAX_FORGET_NODES = 1000          # ids in one forget command
MAX_SEQ = 2 ** 63 - 1
MAX_REPLY_TOPIC = 512


# The facts of `info` that a record keeps: (field, rule).  Each may also be absent or null.
INFO_RULES: tuple[tuple[str, Callable[[str, Any], Any]], ...] = (
    ("role", name),
    ("hostname", lambda f, v: text(f, v, 253)),
    ("ip", ip_address),
    ("mac", mac_address),
    ("os", lambda f, v: text(f, v, 200)),
    ("machine", lambda f, v: text(f, v, 64)),
    ("version", lambda f, v: text(f, v, 64)),
    ("cpu_count", lambda f, v: integer(f, v, 1, 4096)),
    ("memory_total", lambda f, v: integer(f, v, 0, 2 ** 50)),
)


@dataclass(frozen=True)
class NodeInfo:
    """The facts of a node's retained `info`, checked.  None: the info did not say."""

    role: str | None = None
    hostname: str | None = None
    ip: str | None = None
    mac: str | None = None
    os: str | None = None
    machine: str | None = None
    version: str | None = None
    cpu_count: int | None = None
    memory_total: int | None = None
    capabilities: tuple[str, ...] = ()
    failed_plugins: tuple[str, ...] = ()


@dataclass(frozen=True)
class PingAnswer:
    node: str
    seq: int | None     # None: an answer to a ping without a number (someone else's)
    delay: float


@dataclass(frozen=True)
class ForgetRequest:
    nodes: tuple[str, ...]
    force: bool
    reply_to: str | None


def node_id(value: Any, field: str = "node id") -> str:
    """A node id (a topic level, or the `node` of a ping answer): `pidaemon.names.is_name`."""
    return name(field, value)


def check_info_field(field: str, value: Any) -> Any:
    """One fact of `info` (or of a stored record): None stays None."""
    rule = dict(INFO_RULES)[field]
    return None if value is None else rule(field, value)


def parse_status(payload: bytes) -> str | None:
    """`online` or `offline`; None when the retained status was cleared (an empty payload)."""
    if not payload:
        return None
    state = payload.strip()
    if state not in (b"online", b"offline"):
        raise Invalid("status", payload, "online or offline")
    return state.decode()


def parse_info(node: str, payload: bytes) -> NodeInfo | None:
    """The facts of a node's `info`; None when it was cleared.  Unknown fields are ignored (plugins add some)."""
    if not payload:
        return None
    info = json_object(payload, MAX_INFO_BYTES)
    # Every daemon's info says its schema and id: a message without them is not a node's (and must not
    # blank the record of one).
    integer("schema", info.get("schema"), 1, MAX_INFO_SCHEMA)
    if info.get("id") != node:
        raise Invalid("id", info.get("id"), f"the node id of the topic, {node}")
    facts = {field: check_info_field(field, info.get(field)) for field, _ in INFO_RULES}
    capabilities = info.get("capabilities")
    capabilities = () if capabilities is None else tuple(names("capabilities", capabilities))
    return NodeInfo(**facts, capabilities=capabilities, failed_plugins=tuple(_failed_plugins(info.get("plugins"))))


def _failed_plugins(plugins: Any) -> list[str]:
    if plugins is None:
        return []
    if not isinstance(plugins, dict) or len(plugins) > MAX_NAMES:
        raise Invalid("plugins", plugins, f"an object of at most {MAX_NAMES} plugins")
    failed = []
    for plugin, state in plugins.items():
        name("plugins", plugin)
        if not isinstance(state, dict):
            raise Invalid("plugins", state, f"an object for plugin {plugin}")
        if state.get("state") == "failed":
            failed.append(plugin)
    return sorted(failed)


def parse_telemetry(node: str, payload: bytes) -> dict[str, Any] | None:
    """The summary of a telemetry sample (see telemetry_summary); None when the retained sample was cleared."""
    if not payload:
        return None
    sample = json_object(payload, MAX_TELEMETRY_BYTES)
    if "node" in sample and sample["node"] != node:
        raise Invalid("node", sample["node"], f"the node id of the topic, {node}")
    return read_summary(sample)


def parse_ping_answer(payload: bytes, topic_node: str) -> PingAnswer:
    """A ping answer `{"node", "seq", "time", "delay"}` on `nodes/<topic_node>/reply/ping`.

    The answer's `node` must repeat the id of its topic.
    """
    answer = json_object(payload, MAX_ANSWER_BYTES)
    node = node_id(answer.get("node"), "node")
    if node != topic_node:
        raise Invalid("node", node, f"the node id of the topic, {topic_node}")
    seq = answer.get("seq")
    seq = None if seq is None else integer("seq", seq, 0, MAX_SEQ)
    delay = number("delay", answer.get("delay", 0), 0.0, MAX_PING_SPREAD)
    if "time" in answer:
        number("time", answer["time"], 0.0, MAX_TIME)
    return PingAnswer(node, seq, delay)


def parse_forget(payload: bytes) -> ForgetRequest:
    """`{"nodes": [ids], "force": false, "reply_to": topic}` (`force` and `reply_to` optional)."""
    request = json_object(payload, MAX_FORGET_BYTES)
    nodes = request.get("nodes")
    if not isinstance(nodes, list) or not 0 < len(nodes) <= MAX_FORGET_NODES:
        raise Invalid("nodes", nodes, f"a list of 1 to {MAX_FORGET_NODES} node ids")
    nodes = tuple(dict.fromkeys(node_id(n, "nodes[]") for n in nodes))
    force = boolean("force", request.get("force", False))
    reply_to = request.get("reply_to")
    if reply_to is not None:
        reply_to = text("reply_to", reply_to, MAX_REPLY_TOPIC)
    return ForgetRequest(nodes, force, reply_to)
