"""What the telemetry store accepts from the bus, and the account of what it drops.

Anyone who may publish on `<prefix>/nodes/<id>/telemetry` can send the store
anything: huge samples, samples with thousands of readings, samples as fast as
the network goes, under as many made-up node ids as they like.  Each limit is
checked before the sample costs more than the check: the node id and the size
before the JSON is parsed, the rate before it is parsed too, the number of
keys right after.  The state kept per node is bounded (`NodeRates`, the least
recently heard node forgotten first), and drops are counted by reason and
logged as one summary line at most every `DropLog.every` seconds.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

# Why a sample was dropped; the keys of `dropped` in the store's telemetry.
DROP_REASONS = {
    "bad_node_id": "the node id in the topic is not a valid name",
    "too_big": "the message is over max_sample_bytes",
    "rate": "its node sent over max_samples_per_node in rate_interval",
    "malformed": "not a JSON object with a numeric 'time'",
    "future": "its time is over max_clock_skew ahead of the server's clock",
    "too_many_keys": "over max_keys keys and list items, nested ones included",
    "backlog": "over max_pending_bytes of samples waiting for the writer",
}
OTHER_NODES = "(other nodes)"
INVALID_ID = "(invalid ids)"


def count_keys(value: Any, limit: int) -> int:
    """Keys and list items in a parsed JSON value, nested ones included; stops counting past `limit`.

    `{"memory": {"total": 1, "percent": 5}, "load": [1, 2, 3]}` has 7.  Iterative:
    a deeply nested value cannot exhaust the stack.
    """
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            count += len(item)
            stack.extend(item)
        else:
            continue
        if count > limit:
            break
    return count


class NodeRates:
    """A token bucket per node: `limit` samples per `interval` seconds, in bursts of up to `limit`.

    At most `max_nodes` buckets are kept; the least recently used one is
    forgotten first (a forgotten node starts again with a full bucket).
    """

    def __init__(self, limit: int, interval: float, max_nodes: int, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.per_second = limit / interval
        self.max_nodes = max_nodes
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # node: (tokens, when)

    def allow(self, node: str) -> bool:
        now = self.clock()
        tokens, then = self._buckets.pop(node, (float(self.limit), now))
        tokens = min(float(self.limit), tokens + (now - then) * self.per_second)
        allowed = tokens >= 1.0
        self._buckets[node] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_nodes:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)


class DropLog:
    """Dropped samples: totals by reason (for telemetry), and a summary logged at most every `every` seconds.

    The summary names the nodes that most drops came from (at most `max_named`
    nodes are counted per summary; the rest are added up as "(other nodes)").
    """

    def __init__(self, log: logging.Logger | logging.LoggerAdapter, every: float = 60.0, max_named: int = 1000,
                 clock: Callable[[], float] = time.monotonic):
        self.log = log
        self.every = every
        self.max_named = max_named
        self.clock = clock
        self.totals: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._reasons: Counter[str] = Counter()
        self._nodes: Counter[str] = Counter()
        self._last_detail = ""
        self._logged_at = float("-inf")

    def drop(self, reason: str, node: str, detail: str = "") -> None:
        self.totals[reason] += 1
        self._reasons[reason] += 1
        if node in self._nodes or len(self._nodes) < self.max_named:
            self._nodes[node] += 1
        else:
            self._nodes[OTHER_NODES] += 1
        if detail:
            self._last_detail = detail
        self.maybe_log()

    def maybe_log(self, *, now_or_never: bool = False) -> None:
        """Log what was dropped since the last summary, if there is any and `every` seconds have passed.

        `now_or_never` (at shutdown): whenever the last summary was.
        """
        if not self._reasons:
            return
        now = self.clock()
        if now - self._logged_at < self.every and not now_or_never:
            return
        since = "" if self._logged_at == float("-inf") else f" in the last {now - self._logged_at:.0f} s"
        self._logged_at = now
        reasons = ", ".join(f"{reason} {n}" for reason, n in self._reasons.most_common())
        nodes = ", ".join(f"{node} {n}" for node, n in self._nodes.most_common(5))
        detail = f"; last: {self._last_detail}" if self._last_detail else ""
        self.log.warning("telemetry store: dropped %d samples%s (%s), most from %s%s",
                         sum(self._reasons.values()), since, reasons, nodes, detail)
        self._reasons.clear()
        self._nodes.clear()
        self._last_detail = ""
