"""Log lines that can come in floods (refusals, a full disk), at most one per interval of each kind."""

from __future__ import annotations

import logging
import time

LOG_GATE_INTERVAL = 10.0     # seconds between two log lines about the same kind of refusal


class LimitedLog:
    """A log line of a kind at most once per LOG_GATE_INTERVAL; the next one says how many were not logged."""

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
