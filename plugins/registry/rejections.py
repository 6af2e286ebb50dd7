"""The registry's log of dropped messages: one line per kind of problem, at most every `interval` seconds.

A node that keeps sending the same wrong message (every telemetry interval,
every ping) gets one line, then at most one more per interval saying how many
were dropped since.  The counts by kind of message go into the published
registry (`rejected`).
"""

from __future__ import annotations

import logging
import time

from .fields import Invalid, Rejected, shorten

LOG_INTERVAL = 60.0   # seconds between two lines about the same kind of problem
SHOWN_TOPIC = 120     # characters of a topic shown in a line


class Rejections:
    def __init__(self, log: logging.Logger | logging.LoggerAdapter, interval: float = LOG_INTERVAL):
        self.log = log
        self.interval = interval
        self.counts: dict[str, int] = {}                           # kind of message: messages dropped
        self._last_logged: dict[tuple[str, str], float] = {}
        self._unlogged: dict[tuple[str, str], int] = {}

    def report(self, kind: str, topic: str, problem: Rejected) -> None:
        """Drop a message of `kind` (status, info, telemetry, ping_answer, forget) that came on `topic`:
        count it, and log it unless the same kind of problem was logged less than `interval` seconds ago."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        # Field names are the code's own (never a value from the message): a bounded set of keys.
        key = (kind, problem.field if isinstance(problem, Invalid) else type(problem).__name__)
        now = time.monotonic()
        last = self._last_logged.get(key)
        if last is not None and now - last < self.interval:
            self._unlogged[key] = self._unlogged.get(key, 0) + 1
            return
        self._last_logged[key] = now
        more = self._unlogged.pop(key, 0)
        since = f" ({more} more like it dropped in the last {self.interval:g} s)" if more else ""
        self.log.warning("registry: dropped a message (%s) on %s: %s%s", kind, shorten(topic, SHOWN_TOPIC), problem,
                         since)
