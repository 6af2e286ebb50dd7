"""A token bucket per client address, in a table of bounded size.

Each address may make `burst` requests at once, then `per_second` a second.
An address whose bucket has refilled is forgotten (it is as if new), and the
table never holds more than `max_addresses`: when full, the address heard
from least recently goes first, so a spray of addresses costs bounded memory.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Callable

from .limits import RateLimit

MAX_ADDRESSES = 10_000


class RateLimiter:
    def __init__(self, limit: RateLimit, max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.max_addresses = max_addresses
        self.clock = clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address: (tokens, when)

    def take(self, address: str) -> float:
        """Take a token for one request from `address`: 0 if allowed, else seconds until one is there."""
        if not self.limit.enabled:
            return 0.0
        now = self.clock()
        burst, rate = self.limit.burst, self.limit.per_second
        tokens, when = self.buckets.pop(address, (burst, now))
        tokens = min(burst, tokens + (now - when) * rate)
        self._forget_idle(now)
        if tokens >= 1:
            tokens -= 1
            wait = 0.0
        else:
            wait = (1 - tokens) / rate
        self.buckets[address] = (tokens, now)  # most recent last
        return wait

    def _forget_idle(self, now: float) -> None:
        """Drop the addresses whose bucket is full again, oldest first; then the oldest if still too many."""
        refill = self.limit.burst / self.limit.per_second
        while self.buckets:
            address, (tokens, when) = next(iter(self.buckets.items()))
            if now - when >= refill or len(self.buckets) >= self.max_addresses:
                del self.buckets[address]
            else:
                break


def retry_after(wait: float) -> str:
    """The Retry-After value (whole seconds, at least 1) for a wait of `wait` seconds."""
    return str(max(1, math.ceil(wait)))
