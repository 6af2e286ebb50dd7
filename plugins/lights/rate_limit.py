"""A token bucket per user, so that one Warble program's flood of LIGHTS cannot keep the lamp to itself.

Each user may send `burst` commands at once (enough for a program that sets
every pixel of the lamp in a loop), then `per_second` commands a second.
Commands without a user share one bucket.  Buckets that have refilled are
forgotten when there are many, so a stream of new user names costs no memory.
"""

from __future__ import annotations

import time
from typing import Callable

MAX_BUCKETS = 1000   # beyond this, full buckets are dropped (a full bucket is the same as none)


class TokenBucket:
    def __init__(self, burst: int, per_second: float, now: float):
        self.burst = burst
        self.per_second = per_second
        self.tokens = float(burst)
        self.updated = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class RateLimit:
    def __init__(self, burst: int, per_second: float, clock: Callable[[], float] = time.monotonic):
        self.burst = burst
        self.per_second = per_second
        self.clock = clock
        self.buckets: dict[str | None, TokenBucket] = {}

    def allow(self, user: str | None) -> bool:
        """Take one token from `user`'s bucket: True if there was one."""
        now = self.clock()
        bucket = self.buckets.get(user)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = self.buckets[user] = TokenBucket(self.burst, self.per_second, now)
        return bucket.take(now)

    def _forget_full(self, now: float) -> None:
        for user, bucket in list(self.buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.burst:
                del self.buckets[user]
