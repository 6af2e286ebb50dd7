"""`pidaemon status`: the cluster as a table, read from the broker like any other client.

The source is the server's retained registry (`<prefix>/registry`, published by
the `registry` plugin).  Without a registry (no server running it), the table
is built from the nodes' own retained `status`, `info` and `telemetry`, without
health states beyond `online`/`offline`.

    pidaemon status --broker mqtt://10.0.0.1:1883
    pidaemon status --watch            # refresh every --interval seconds
    pidaemon status --json             # the same rows as JSON, for scripts
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from typing import Any

EXIT_OK, EXIT_FAILURE = 0, 1
COLUMNS = ("NODE", "ROLE", "STATE", "CPU", "MEM", "TEMP", "LAST SEEN")


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("status", help="print the cluster's nodes, their state and readings")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", metavar="URL",
                        help="mqtt://HOST:PORT or mqtts://HOST:PORT (default mqtt://127.0.0.1:1883)")
    parser.add_argument("--prefix", default="picluster", help="MQTT topic prefix (default picluster)")
    parser.add_argument("--watch", action="store_true", help="refresh until interrupted")
    parser.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="refresh period of --watch")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                        help="how long to wait for the broker and the retained messages")
    parser.add_argument("--username", help="MQTT user name")
    parser.add_argument("--password-file", metavar="FILE", help="file holding the MQTT password")
    parser.add_argument("--ca-file", metavar="FILE", help="CA certificate for mqtts://")
    parser.set_defaults(func=cmd_status)


# ---------------------------------------------------------------- collecting

class ClusterView:
    """A paho client (own network thread) that keeps the latest registry, or the nodes' own topics."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.registry: dict[str, Any] | None = None
        self.status: dict[str, str] = {}
        self.info: dict[str, dict] = {}
        self.telemetry: dict[str, dict] = {}
        self.fallback = False
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        self.error: str | None = None
        self.client = None

    def connect(self, broker_url: str, timeout: float, username: str | None = None, password: str | None = None,
                ca_file: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        from .config import parse_broker_url

        broker = parse_broker_url(broker_url)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pidaemon-status-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv311)
        client.connect_timeout = timeout
        if username:
            client.username_pw_set(username, password)
        if broker.tls:
            client.tls_set(ca_certs=ca_file)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = lambda *a: self.subscribed.set()
        self.client = client
        client.connect(broker.host, broker.port, keepalive=30)
        client.loop_start()
        if not self.connected.wait(timeout):
            raise ConnectionError(self.error or f"no answer from {broker.url} within {timeout} s")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.error = f"broker refused the connection: {reason_code}"
            return
        topics = [(f"{self.prefix}/registry", 1)]
        if self.fallback:
            topics += [(f"{self.prefix}/nodes/+/{name}", 1) for name in ("status", "info", "telemetry")]
        client.subscribe(topics)
        self.connected.set()

    def use_node_topics(self) -> None:
        """No registry: listen to every node's retained status, info and telemetry instead."""
        self.subscribed.clear()
        self.fallback = True
        self.client.subscribe([(f"{self.prefix}/nodes/+/{name}", 1) for name in ("status", "info", "telemetry")])

    def _on_message(self, client, userdata, message) -> None:
        topic = message.topic[len(self.prefix) + 1:]
        try:
            if topic == "registry":
                data = json.loads(message.payload) if message.payload else None
                with self.lock:
                    self.registry = data if isinstance(data, dict) else None
                return
            levels = topic.split("/")
            if len(levels) != 3 or levels[0] != "nodes":
                return
            node_id, kind = levels[1], levels[2]
            with self.lock:
                if kind == "status":
                    self.status[node_id] = message.payload.decode("utf-8", "replace")
                elif kind == "info" and message.payload:
                    self.info[node_id] = json.loads(message.payload)
                elif kind == "telemetry" and message.payload:
                    self.telemetry[node_id] = json.loads(message.payload)
        except (ValueError, UnicodeDecodeError):
            pass  # a malformed message does not stop the table

    def close(self) -> None:
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()

    # ------------------------------------------------------------ the view

    def report(self) -> dict[str, Any]:
        with self.lock:
            if self.registry is not None and isinstance(self.registry.get("nodes"), dict):
                return report_from_registry(self.registry)
            return report_from_node_topics(self.status, self.info, self.telemetry)


def report_from_registry(registry: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for node_id, record in sorted(registry["nodes"].items()):
        if not isinstance(record, dict):
            continue
        telemetry = record.get("telemetry") or {}
        rows.append(_row(node_id, record, telemetry, record.get("state", "unknown")))
    return _report("registry", rows, registry.get("server"), registry.get("time"))


def report_from_node_topics(status: dict[str, str], info: dict[str, dict],
                            telemetry: dict[str, dict]) -> dict[str, Any]:
    from pidaemon_plugins.registry.telemetry_summary import summarize_telemetry

    rows = []
    for node_id in sorted(set(status) | set(info) | set(telemetry)):
        state = status.get(node_id) or "unknown"
        summary = summarize_telemetry(telemetry[node_id]) if isinstance(telemetry.get(node_id), dict) else {}
        record = dict(info.get(node_id) or {})
        record.setdefault("last_seen", summary.get("time"))
        rows.append(_row(node_id, record, summary, state if state in ("online", "offline") else "unknown"))
    return _report("node topics", rows, None, time.time())


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


# ---------------------------------------------------------------- printing

def _ago(timestamp: Any, now: float) -> str:
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


def _fmt(value: Any, unit: str) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.1f}{unit}"


def format_table(report: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    lines = [COLUMNS]
    for row in report["nodes"]:
        lines.append((row["node"], row["role"] or "-", row["state"], _fmt(row["cpu_percent"], "%"),
                      _fmt(row["memory_percent"], "%"), _fmt(row["cpu_temperature"], "°C"),
                      _ago(row["last_seen"], now)))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(COLUMNS))]
    out = ["  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines]
    c = report["counts"]
    summary = (f"{len(report['nodes'])} nodes: {c['online']} online, {c['unhealthy']} unhealthy, "
               f"{c['offline']} offline" + (f", {c['unknown']} unknown" if c["unknown"] else ""))
    if report["source"] == "registry":
        summary += f" (registry of server {report['server']}, {_ago(report['time'], now)})"
    else:
        summary += " (no server registry found: from the nodes' own topics)"
    out += ["", summary]
    for node_id, forwarder in (report.get("forwarders") or {}).items():
        out.append(f"forwarder on {node_id}: {forwarder.get('buffered', '?')} buffered, "
                   f"{forwarder.get('dropped', '?')} dropped, {forwarder.get('delivered', '?')} delivered, "
                   f"{forwarder.get('failures', '?')} failed posts")
    return "\n".join(out)


def render(report: dict[str, Any], as_json: bool) -> str:
    return json.dumps(report, sort_keys=True) if as_json else format_table(report)


# ---------------------------------------------------------------- the command

def cmd_status(args: argparse.Namespace) -> int:
    password = None
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                password = f.read().strip()
        except OSError as exc:
            print(f"--password-file {args.password_file}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILURE
    view = ClusterView(args.prefix)
    try:
        try:
            view.connect(args.broker, args.timeout, args.username, password, args.ca_file)
        except (OSError, ValueError, ConnectionError) as exc:
            print(f"cannot reach the broker {args.broker}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        _wait_for_retained(view, args.timeout)
        while True:
            text = render(view.report(), args.json)
            if args.watch and not args.json and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            print(text, flush=True)
            if not args.watch:
                return EXIT_OK
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        view.close()


def _wait_for_retained(view: ClusterView, timeout: float) -> None:
    """Retained messages come right after the subscription is acknowledged: wait for them briefly."""
    deadline = time.monotonic() + timeout
    view.subscribed.wait(max(0.0, deadline - time.monotonic()))
    grace = time.monotonic() + min(0.5, timeout)
    while view.registry is None and time.monotonic() < grace:
        time.sleep(0.02)
    if view.registry is not None:
        return
    view.use_node_topics()
    view.subscribed.wait(max(0.1, deadline - time.monotonic()))
    time.sleep(min(0.5, timeout))  # the retained messages of many nodes
