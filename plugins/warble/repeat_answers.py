"""How often the Warble service answers a re-submitted id again on MQTT.

A client that re-sends a known id (it may have missed the first answer) is
told the job's current state; the bound keeps re-submissions from amplifying
traffic.
"""

from __future__ import annotations

from collections import OrderedDict

from .jobqueue import RateLimiter


class RepeatAnswers:
    """How often a re-submitted id is answered on MQTT: each id at most once per `interval`,
    all ids together at most `rate` a second, so that re-submissions cannot amplify traffic."""

    MAX_TRACKED = 10_000

    def __init__(self, interval: float, rate: float):
        self.interval = interval
        self.last: OrderedDict[str, float] = OrderedDict()
        self.budget = RateLimiter(rate, max(1, int(rate)), max_tracked=1)

    def allow(self, job_id: str, now: float) -> bool:
        last = self.last.get(job_id)
        if last is not None and now - last < self.interval:
            return False
        if not self.budget.allows("all", now):
            return False
        self.budget.take("all")
        self.last[job_id] = now
        self.last.move_to_end(job_id)
        while len(self.last) > self.MAX_TRACKED:
            self.last.popitem(last=False)
        return True
