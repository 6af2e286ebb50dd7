"""`pidaemon status`: the cluster as a table, read from the broker like any other client.

The source is the server's retained registry (`<prefix>/registry`, published by
the `registry` plugin).  A retained registry outlives its server, so it is
checked against the server's own status topic and its age: when the server is
offline, or has not updated its registry for `--stale-after` seconds, the table
says so first and shows, where they disagree, what each node's own status topic
says now.  Without a registry (no server running it), the table is built from
the nodes' own retained `status`, `info` and `telemetry`, without health states
beyond `online`/`offline`.

    pidaemon status --broker mqtt://10.0.0.1:1883
    pidaemon status --role worker --state offline,unhealthy --sort cpu
    pidaemon status --watch            # refresh every --interval seconds
    pidaemon status --json             # the same rows as JSON, for scripts
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from .cli_client import (BrokerError, CliClient, ConnectionChange, UsageError, add_connection_arguments,
                         settings_from_args)
from .topics import Topics

if TYPE_CHECKING:  # pragma: no cover  (the bus imports paho: not needed to build the command line)
    from .bus import Message, Subscription

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
COLUMNS = ("NODE", "ROLE", "STATE", "CPU", "MEM", "TEMP", "LAST SEEN")
STATES = ("online", "unhealthy", "offline", "unknown")
# A server refreshes its registry every `refresh_interval` (10 s by default) while anything changes, and
# every node's telemetry changes every 5 s: three default intervals without an update is a silent server.
STALE_AFTER = 30.0
STALE_NOTE = "What follows is what it last knew, not the cluster now; NOW is each node's own status topic where it " \
             "disagrees."
QUIET = 0.3  # seconds without a message that end the burst of retained messages after a subscription


def _list_of(choices: tuple[str, ...] | None):
    """An argparse type for `A,B` values (the option is also repeatable)."""
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        for item in items:
            if choices is not None and item not in choices:
                raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(choices)}")
        return items
    return parse


# How rows sort: (value of a row, highest first?).  Rows without the value come last.
SORT_KEYS: dict[str, tuple[Callable[[dict], Any], bool]] = {
    "node": (lambda row: row["node"], False),
    "role": (lambda row: row["role"], False),
    "state": (lambda row: {"offline": 0, "unhealthy": 1, "unknown": 2, "online": 3}.get(row["state"], 2), False),
    "cpu": (lambda row: row["cpu_percent"], True),
    "mem": (lambda row: row["memory_percent"], True),
    "temp": (lambda row: row["cpu_temperature"], True),
    "last-seen": (lambda row: row["last_seen"], False),   # seen longest ago first
}


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "status", help="print the cluster's nodes, their state and readings",
        epilog="exit status: 0 ok (also when Ctrl-C ends --watch), 1 the broker cannot be used, 2 usage")
    add_connection_arguments(parser)
    parser.add_argument("--watch", action="store_true", help="refresh until interrupted")
    parser.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="refresh period of --watch")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                        help="how long to wait for the broker and the retained messages")
    parser.add_argument("--role", action="append", type=_list_of(None), default=[], metavar="ROLE[,ROLE]",
                        help="only nodes of these roles (repeatable)")
    parser.add_argument("--state", action="append", type=_list_of(STATES), default=[], metavar="STATE[,STATE]",
                        help=f"only nodes in these states: {', '.join(STATES)} (repeatable)")
    parser.add_argument("--sort", choices=list(SORT_KEYS), default="node",
                        help="order of the rows (default node); cpu, mem and temp: highest first; state: offline, "
                             "unhealthy, unknown, online; last-seen: longest ago first")
    parser.add_argument("--reverse", action="store_true", help="reverse the order of --sort")
    parser.add_argument("--stale-after", type=float, default=STALE_AFTER, metavar="SECONDS",
                        help=f"a registry not updated for this long is old: its server is not running as it should "
                             f"(default {STALE_AFTER:g})")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                        help="colour the states: auto (default) when the output is a terminal and NO_COLOR is not set")
    parser.set_defaults(func=cmd_status)


# ---------------------------------------------------------------- what the broker says

@dataclass(frozen=True)
class ServerState:
    """Whether a registry is current: its server's own status topic and the registry's age."""

    server: str | None        # the server the registry names; None without a registry
    status: str | None        # that server's own status topic: online, offline, or None (nothing retained)
    updated: float | None     # the registry's "time"
    stale_after: float
    stopped: float | None = None  # the registry's "stopped": when its server stopped cleanly

    def age(self, now: float) -> float | None:
        return None if self.updated is None else max(0.0, now - self.updated)

    def offline(self) -> bool:
        return self.status == "offline" or self.stopped is not None

    def is_current(self, now: float) -> bool:
        age = self.age(now)
        return self.server is not None and not self.offline() and age is not None and age <= self.stale_after

    def problem(self, now: float) -> str | None:
        """What is wrong with the server, in one sentence; None when its registry is current."""
        if self.server is None or self.is_current(now):
            return None
        when = f"{ago(self.updated, now)}, at {_clock(self.updated, now)}" if self.updated is not None \
            else "at an unknown time"
        if self.stopped is not None:
            return f"server {self.server} stopped {ago(self.stopped, now)}, at {_clock(self.stopped, now)} " \
                   f"(its registry's last update says so)."
        if self.offline():
            return f"server {self.server} is offline (its status topic says so); last heard from {when} " \
                   f"(its registry's last update)."
        if self.status == "online":
            return f"server {self.server} is not updating its registry: last update {when}, more than " \
                   f"{self.stale_after:g} s ago, although its status topic says online (or the clocks of this " \
                   f"machine and the server disagree)."
        # No status to read: none retained, or a broker ACL hides nodes/ from this client.
        return f"server {self.server} seems offline: it has not updated its registry for more than " \
               f"{self.stale_after:g} s (last update {when}), and its status topic cannot be read here."


def server_state(registry: dict[str, Any] | None, statuses: dict[str, str],
                 stale_after: float = STALE_AFTER) -> ServerState:
    """The state of the server that published `registry` (None: no registry), from the nodes' status topics."""
    registry = registry or {}
    server = registry.get("server") if isinstance(registry.get("server"), str) else None
    updated = registry.get("time") if isinstance(registry.get("time"), (int, float)) else None
    stopped = registry.get("stopped") if isinstance(registry.get("stopped"), (int, float)) else None
    return ServerState(server, statuses.get(server) if server else None, updated, stale_after, stopped)


class ClusterView:
    """What the retained (and later) messages say: the server's registry, and each node's own topics."""

    def __init__(self, topics: Topics):
        self.topics = topics
        self.registry: dict[str, Any] | None = None
        self.status: dict[str, str] = {}
        self.info: dict[str, dict] = {}
        self.telemetry: dict[str, dict] = {}

    def registry_subscriptions(self) -> list[Subscription]:
        from .bus import Subscription

        return [Subscription(self.topics.join("registry")), Subscription(self.topics.status("+"))]

    def node_subscriptions(self) -> list[Subscription]:
        from .bus import Subscription

        return [Subscription(self.topics.info("+")), Subscription(self.topics.telemetry("+"), qos=0)]

    def handle(self, message: Message) -> None:
        """Take in one message; a malformed one is skipped (it does not stop the table)."""
        from .bus import PayloadError, topic_matches

        try:
            if message.topic == self.topics.join("registry"):
                data = message.json() if message.payload else None
                self.registry = data if isinstance(data, dict) and isinstance(data.get("nodes"), dict) else None
                return
            node_id = message.topic.split("/")[-2]
            if topic_matches(self.topics.status("+"), message.topic):
                if message.payload:
                    self.status[node_id] = message.text().strip()
                else:
                    self.status.pop(node_id, None)  # a cleared status: the node left the cluster
            elif topic_matches(self.topics.info("+"), message.topic) and message.payload:
                self.info[node_id] = message.json()
            elif topic_matches(self.topics.telemetry("+"), message.topic) and message.payload:
                self.telemetry[node_id] = message.json()
        except PayloadError:
            pass

    def server_state(self, stale_after: float = STALE_AFTER) -> ServerState:
        return server_state(self.registry, self.status, stale_after)

    def report(self, now: float | None = None, stale_after: float = STALE_AFTER) -> dict[str, Any]:
        now = time.time() if now is None else now
        if self.registry is not None:
            return report_from_registry(self.registry, self.status, now=now, stale_after=stale_after)
        return report_from_node_topics(self.status, self.info, self.telemetry, now=now)


def report_from_registry(registry: dict[str, Any], statuses: dict[str, str] | None = None, *,
                         now: float | None = None, stale_after: float = STALE_AFTER) -> dict[str, Any]:
    """The rows of the registry; with `statuses` (each node's own status topic), whether it is current."""
    now = time.time() if now is None else now
    statuses = statuses or {}
    rows = []
    for node_id, record in sorted(registry["nodes"].items()):
        if not isinstance(record, dict):
            continue
        telemetry = record.get("telemetry") or {}
        row = _row(node_id, record, telemetry, record.get("state", "unknown"))
        row["own_status"] = statuses.get(node_id)
        rows.append(row)
    report = _report("registry", rows, registry.get("server"), registry.get("time"))
    server = server_state(registry, statuses, stale_after)
    report.update(server_status=server.status, problem=server.problem(now))
    report["stale"] = report["problem"] is not None
    return report


def report_from_node_topics(status: dict[str, str], info: dict[str, dict],
                            telemetry: dict[str, dict], *, now: float | None = None) -> dict[str, Any]:
    from pidaemon_plugins.registry.telemetry_summary import summarize_telemetry

    rows = []
    for node_id in sorted(set(status) | set(info) | set(telemetry)):
        state = status.get(node_id) or "unknown"
        summary = summarize_telemetry(telemetry[node_id]) if isinstance(telemetry.get(node_id), dict) else {}
        record = dict(info.get(node_id) or {}) if isinstance(info.get(node_id), dict) else {}
        record.setdefault("last_seen", summary.get("time"))
        row = _row(node_id, record, summary, state if state in ("online", "offline") else "unknown")
        row["own_status"] = status.get(node_id)
        rows.append(row)
    report = _report("node topics", rows, None, time.time() if now is None else now)
    report.update(server_status=None, stale=False, problem=None)
    return report


def _row(node_id: str, record: dict, telemetry: dict, state: str) -> dict[str, Any]:
    return {
        "node": node_id, "role": record.get("role"), "state": state, "since": record.get("since"),
        "cpu_percent": telemetry.get("cpu_percent"), "memory_percent": telemetry.get("memory_percent"),
        "cpu_temperature": telemetry.get("cpu_temperature"), "last_seen": record.get("last_seen"),
        "ip": record.get("ip"), "mac": record.get("mac"), "capabilities": record.get("capabilities") or [],
        "forwarder": telemetry.get("forwarder"),
    }


def _report(source: str, rows: list[dict], server: str | None, when: float | None) -> dict[str, Any]:
    counts = {"online": 0, "unhealthy": 0, "offline": 0, "unknown": 0}
    for row in rows:
        counts[row["state"] if row["state"] in counts else "unknown"] += 1
    forwarders = {row["node"]: row["forwarder"] for row in rows if row.get("forwarder")}
    report = {"source": source, "server": server, "time": when, "counts": counts, "nodes": rows}
    if forwarders:
        report["forwarders"] = forwarders
    for row in rows:
        row.pop("forwarder", None)
    return report


# ---------------------------------------------------------------- choosing and ordering rows

def select_rows(report: dict[str, Any], roles: list[str] = (), states: list[str] = (), sort: str = "node",
                reverse: bool = False) -> dict[str, Any]:
    """The report with only the rows of `roles` and `states` (all when empty), in `sort` order.

    `counts` stay those of the whole cluster; `shown` is the number of rows kept.
    """
    rows = [row for row in report["nodes"]
            if (not roles or row["role"] in roles) and (not states or row["state"] in states)]
    value, highest_first = SORT_KEYS[sort]
    present = sorted((row for row in rows if value(row) is not None), key=lambda row: row["node"])
    present.sort(key=value, reverse=highest_first != reverse)  # stable: ties stay in node order
    missing = [row for row in rows if value(row) is None]
    selected = dict(report, nodes=present + missing)
    if roles or states:
        selected["shown"] = len(rows)
        selected["filters"] = {"role": list(roles), "state": list(states)}
    return selected


# ---------------------------------------------------------------- printing

COLORS = {"online": "32", "unhealthy": "1;33", "offline": "1;31", "unknown": "35", "problem": "1;31",
          "header": "1", "stale": "2"}


def use_color(choice: str, stream: TextIO) -> bool:
    """--color always|never, or auto: a terminal, NO_COLOR unset or empty (no-color.org), TERM not dumb."""
    if choice in ("always", "never"):
        return choice == "always"
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _paint(text: str, kind: str | None, color: bool) -> str:
    code = COLORS.get(kind or "")
    return f"\x1b[{code}m{text}\x1b[0m" if color and code and text.strip() else text


def ago(timestamp: Any, now: float) -> str:
    """`12s ago`, `3m ago`, `1.5h ago`, `2.0d ago`; `-` for no time."""
    if not isinstance(timestamp, (int, float)):
        return "-"
    seconds = max(0.0, now - timestamp)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h ago"
    return f"{seconds / 86400:.1f}d ago"


def _clock(timestamp: float, now: float) -> str:
    """Local time of day, with the date when it is not within the last day."""
    fmt = "%H:%M:%S" if now - timestamp < 86400 else "%Y-%m-%d %H:%M:%S"
    return time.strftime(fmt, time.localtime(timestamp))


def _fmt(value: Any, unit: str) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.1f}{unit}"


def format_table(report: dict[str, Any], now: float | None = None, color: bool = False) -> str:
    now = time.time() if now is None else now
    stale = bool(report.get("stale"))
    columns = COLUMNS[:3] + ("NOW",) + COLUMNS[3:] if stale else COLUMNS
    lines: list[tuple[tuple[str, str | None], ...]] = [tuple((name, "header") for name in columns)]
    for row in report["nodes"]:
        # A dead server's word is dimmed: the colours of now are in NOW.
        cells = [(row["node"], None), (row["role"] or "-", None), (row["state"], "stale" if stale else row["state"])]
        if stale:
            own = row.get("own_status")
            disagrees = own is not None and own != row["state"]
            cells.append((own if disagrees else "", own if disagrees else None))
        cells += [(_fmt(row["cpu_percent"], "%"), None), (_fmt(row["memory_percent"], "%"), None),
                  (_fmt(row["cpu_temperature"], "°C"), None), (ago(row["last_seen"], now), None)]
        lines.append(tuple(cells))
    widths = [max(len(line[i][0]) for line in lines) for i in range(len(columns))]
    out = []
    if report.get("problem"):
        out += [_paint(report["problem"], "problem", color), STALE_NOTE, ""]
    for line in lines:
        cells = [_paint(text, kind, color) + " " * (widths[i] - len(text)) for i, (text, kind) in enumerate(line)]
        out.append("  ".join(cells).rstrip())
    c = report["counts"]
    counts = [_paint(f"{c[state]} {state}", state if c[state] and not stale else None, color)
              for state in ("online", "unhealthy", "offline")]
    summary = f"{sum(c.values())} nodes: {', '.join(counts)}" + (f", {c['unknown']} unknown" if c["unknown"] else "")
    if report["source"] == "registry":
        summary += f" (registry of server {report['server']}, {ago(report['time'], now)}"
        summary += ": what it last knew)" if stale else ")"
    else:
        summary += " (no server registry found: from the nodes' own topics)"
    if "shown" in report:
        filters = report.get("filters") or {}
        named = [f"--{name} {','.join(values)}" for name, values in filters.items() if values]
        summary += f"; {report['shown']} shown ({' '.join(named)})"
    out += ["", summary]
    if stale:
        own = [row.get("own_status") for row in report["nodes"]]
        out.append(f"their own status topics: {own.count('online')} online, {own.count('offline')} offline"
                   + (f", {own.count(None)} without a status" if None in own else ""))
    for node_id, forwarder in (report.get("forwarders") or {}).items():
        out.append(f"forwarder on {node_id}: {forwarder.get('buffered', '?')} buffered, "
                   f"{forwarder.get('dropped', '?')} dropped, {forwarder.get('delivered', '?')} delivered, "
                   f"{forwarder.get('failures', '?')} failed posts")
    return "\n".join(out)


def render(report: dict[str, Any], as_json: bool, color: bool = False) -> str:
    return json.dumps(report, sort_keys=True) if as_json else format_table(report, color=color)


# ---------------------------------------------------------------- the command

def cmd_status(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args, client_id=f"pidaemon-status-{os.urandom(4).hex()}")
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    roles = [role for group in args.role for role in group]
    states = [state for group in args.state for state in group]
    color = use_color(args.color, sys.stdout) and not args.json
    view = ClusterView(Topics(args.prefix))
    client = CliClient(settings)
    interrupted = False
    try:
        try:
            client.connect(args.timeout)
            client.subscribe(view.registry_subscriptions(), args.timeout)
            _take(view, client.quiet(QUIET, args.timeout))
            if view.registry is None:  # no server: the nodes' own topics instead
                client.subscribe(view.node_subscriptions(), args.timeout)
                _take(view, client.quiet(QUIET, args.timeout))
        except BrokerError as exc:
            print(exc, file=sys.stderr)
            return EXIT_FAILURE
        while True:
            report = select_rows(view.report(stale_after=args.stale_after), roles, states, args.sort, args.reverse)
            text = render(report, args.json, color)
            if args.watch and not args.json and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            print(text, flush=True)
            if not args.watch:
                return EXIT_OK
            if not client.connected:
                print(f"lost the connection to the broker {settings.broker}; reconnecting (the table may be old)",
                      file=sys.stderr, flush=True)
            deadline = time.monotonic() + args.interval
            while (event := client.next_event(deadline - time.monotonic())) is not None:
                _take(view, [event])
    except KeyboardInterrupt:  # the way to end --watch
        interrupted = True
        return EXIT_OK
    finally:
        client.close(wait=not interrupted)


def _take(view: ClusterView, events: list) -> None:
    for event in events:
        if not isinstance(event, ConnectionChange):
            view.handle(event)
