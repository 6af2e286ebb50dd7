"""Whether a signed announcement is fresh: what a node remembers of each server it heard.

Pure bookkeeping (the clock is injected), used by the `discovery` plugin for
signed announcements only (an insecure node checks nothing).

A node never trusts its own wall clock: Pis have no real-time clock and may
boot with a time that is months old, before NTP (if any) sets it.  Instead,
per server (cluster and server id), it keeps

- `counter`: the last counter it accepted.  A datagram with that very counter
  is the one already taken (a second copy, from another broadcast address):
  DUPLICATE, ignored; one with a smaller counter is a replay (or arrived out
  of order): REPLAY;
- `anchor`: the server's time as it stood when the server answered one of
  this node's queries, and this node's monotonic clock at that moment.  From
  it the node estimates the server's clock now; a datagram whose `time` is
  further than `window` seconds from that estimate is STALE (a capture played
  back later) or FUTURE.  No anchor yet: UNKNOWN, and the node asks the
  server (a query with a nonce): the answer, which carries the nonce, is the
  only thing accepted without an anchor, and it sets the anchor (ANSWER).

An answer to this node's own query is accepted even with a smaller counter
than the last one: the nonce proves it fresh, and a server whose state was
lost and whose clock is behind (its counter is time-based) would otherwise
be refused for good.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Callable

from .datagram import Announcement


class Verdict(enum.Enum):
    FRESH = "fresh"        # counter newer, time within the window of the server's estimated clock
    ANSWER = "answer"      # carries the nonce of this node's pending query: fresh, whatever the clocks
    DUPLICATE = "duplicate"  # the counter of the last one accepted from that server: the same datagram again
    REPLAY = "replay"      # counter smaller than the last one accepted from that server
    STALE = "stale"        # time too far behind the server's estimated clock
    FUTURE = "future"      # time too far ahead of it
    UNKNOWN = "unknown"    # no reference for that server yet: ask it


@dataclass
class ServerMemory:
    counter: int | None = None
    anchor: tuple[float, float] | None = None  # (server time, our monotonic clock) when it answered us


class Freshness:
    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.clock = clock
        self.servers: dict[tuple[str, str], ServerMemory] = {}

    def judge(self, announcement: Announcement, answers_our_query: bool = False) -> Verdict:
        if answers_our_query:
            return Verdict.ANSWER
        memory = self.servers.get(_key(announcement))
        if memory is None:
            return Verdict.UNKNOWN
        if memory.counter is not None and announcement.counter == memory.counter:
            return Verdict.DUPLICATE
        if memory.counter is not None and announcement.counter < memory.counter:
            return Verdict.REPLAY
        expected = self.server_time(announcement.cluster, announcement.server)
        if expected is None:
            return Verdict.UNKNOWN
        if announcement.time < expected - self.window:
            return Verdict.STALE
        if announcement.time > expected + self.window:
            return Verdict.FUTURE
        return Verdict.FRESH

    def accept(self, announcement: Announcement, verdict: Verdict) -> None:
        """Remember an announcement judged FRESH or ANSWER."""
        if verdict not in (Verdict.FRESH, Verdict.ANSWER):
            raise ValueError(f"cannot accept an announcement judged {verdict.value}")
        memory = self.servers.setdefault(_key(announcement), ServerMemory())
        memory.counter = announcement.counter
        if verdict is Verdict.ANSWER:
            memory.anchor = (announcement.time, self.clock())

    def server_time(self, cluster: str, server: str) -> float | None:
        """That server's clock now, as estimated from its last answer; None without one."""
        memory = self.servers.get((cluster, server))
        if memory is None or memory.anchor is None:
            return None
        server_time, ours = memory.anchor
        return server_time + (self.clock() - ours)

    def describe(self, announcement: Announcement, verdict: Verdict) -> str:
        """Why an announcement was refused, for the log."""
        a = announcement
        if verdict is Verdict.REPLAY:
            last = self.servers[_key(a)].counter
            return (f"replayed announcement: counter {a.counter} of server {a.server} is below {last}, "
                    f"the last accepted")
        expected = self.server_time(a.cluster, a.server) or 0.0
        if verdict is Verdict.STALE:
            return (f"stale announcement: sent {expected - a.time:.1f} s before server {a.server}'s clock now "
                    f"(window {self.window:g} s)")
        if verdict is Verdict.FUTURE:
            return (f"announcement from the future: {a.time - expected:.1f} s ahead of server {a.server}'s "
                    f"clock now (window {self.window:g} s)")
        return f"announcement judged {verdict.value}"


def _key(announcement: Announcement) -> tuple[str, str]:
    return announcement.cluster, announcement.server
