"""Logging: readable lines by default, one JSON object per line with `--log-format json`.

Each daemon logs through an adapter that adds its node id, so that the lines of
many daemons in one process (the simulator) stay apart.
"""

from __future__ import annotations

import json
import logging
import sys
import time

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_GATE_INTERVAL = 10.0     # seconds between two LimitedLog lines of the same kind


class NodeLogAdapter(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        extra = kwargs.setdefault("extra", {})
        extra.setdefault("node", self.extra["node"])
        return f"[{self.extra['node']}] {msg}", kwargs


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "node", None):
            entry["node"] = record.node
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text", stream=None) -> None:
    """Configure the root logger of a `pidaemon` process (the CLI calls this once)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # amqtt and paho are chatty at info level.
    for noisy in ("amqtt", "transitions", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class LimitedLog:
    """Lines that come in floods (refusals, a full disk): one of a kind per LOG_GATE_INTERVAL; the next one
    says how many were not logged."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter):
        self._log = log
        self._gates: dict[str, tuple[float, int]] = {}

    def log(self, kind: str, fmt: str, *args, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        last, suppressed = self._gates.get(kind, (-LOG_GATE_INTERVAL, 0))
        if now - last < LOG_GATE_INTERVAL:
            self._gates[kind] = (last, suppressed + 1)
            return
        self._gates[kind] = (now, 0)
        if suppressed:
            fmt += f" ({suppressed} more like it not logged)"
        self._log.log(level, fmt, *args)
