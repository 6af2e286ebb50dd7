"""Forwards telemetry readings to a REST endpoint in batches, and rides out its failures.

Readings wait in a bounded buffer.  Every `interval` seconds everything
buffered is POSTed, `batch_size` readings per request, as JSON:

    {"source": "<server id>", "sent": 1700000000.0,
     "readings": [{"id": 17, "node": "pi-1a2b3c", "time": ..., "readings": {...}}, ...]}

`id` numbers each reading once per forwarder (a receiver can drop the rare
duplicate after a request that timed out but had in fact been stored).  A
request fails on a network error, a timeout or a status other than 2xx; its
batch stays in the buffer and the next attempt waits `interval * 2**k` for the
k-th failure in a row, capped at `max_backoff`.  The first success brings the
interval back to normal, and whatever accumulated is sent at once, batch after
batch.  The buffer holds at most `buffer_limit` readings and `buffer_bytes`
bytes of them (their size as received); when it is full the oldest waiting
readings are dropped and counted in `dropped` (reported in the server's
telemetry and by `pidaemon status`).

Requests use `urllib.request` in a worker thread, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from collections import deque
from http.client import HTTPException
from typing import Any, Awaitable, Callable

PostFunction = Callable[[bytes], Awaitable[tuple[bool, str]]]


class RestForwarder:
    def __init__(self, url: str, *, interval: float = 10.0, batch_size: int = 500, buffer_limit: int = 100_000,
                 buffer_bytes: int | None = None, max_backoff: float = 60.0, timeout: float = 10.0,
                 headers: dict[str, str] | None = None, source: str = "",
                 log: logging.Logger | logging.LoggerAdapter | None = None,
                 post: PostFunction | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep):
        if batch_size > buffer_limit:
            raise ValueError("batch_size must not exceed buffer_limit")
        self.url = url
        self.interval = interval
        self.batch_size = batch_size
        self.buffer_limit = buffer_limit
        self.buffer_bytes = buffer_bytes
        self.buffered_bytes = 0             # of the readings buffered and in flight
        self._sizes: dict[int, int] = {}    # reading id: its size
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.source = source
        self.log = log or logging.getLogger("pidaemon.forwarder")
        self._post = post or self._post_with_urllib
        self._sleep = sleep
        self.buffer: deque[dict[str, Any]] = deque()
        self.in_flight: list[dict[str, Any]] = []
        self.next_id = 1
        self.delivered = 0
        self.dropped = 0
        self.failures = 0              # failed requests, in total
        self.consecutive_failures = 0
        self.delays: deque[tuple[float, str]] = deque(maxlen=1000)  # (delay chosen, outcome), for tests and status
        self._opener = urllib.request.build_opener()
        self._last_drop_log = 0.0

    # ------------------------------------------------------------ input

    @property
    def buffered(self) -> int:
        return len(self.buffer) + len(self.in_flight)

    def submit(self, reading: dict[str, Any], size: int | None = None) -> None:
        """Queue one reading (a telemetry payload) of `size` bytes; drops the oldest waiting ones when full.

        Without `size`, the reading's JSON size is counted (when `buffer_bytes` is set).
        """
        if size is None:
            size = len(json.dumps(reading, default=str)) if self.buffer_bytes is not None else 0
        dropped = self.dropped
        while self._full(size):
            if not self.buffer or (self.buffer_bytes is not None and size > self.buffer_bytes):
                self.dropped += 1  # everything is in flight, or it would never fit: the newest goes
                self._log_drops()
                return
            self._forget(self.buffer.popleft())
            self.dropped += 1
        if self.dropped != dropped:
            self._log_drops()
        self.buffer.append({"id": self.next_id, **reading})
        self._sizes[self.next_id] = size
        self.buffered_bytes += size
        self.next_id += 1

    def _full(self, size: int) -> bool:
        return self.buffered >= self.buffer_limit or (
            self.buffer_bytes is not None and self.buffered_bytes + size > self.buffer_bytes)

    def _forget(self, reading: dict[str, Any]) -> None:
        self.buffered_bytes -= self._sizes.pop(reading["id"], 0)

    def _log_drops(self) -> None:
        now = time.monotonic()
        if now - self._last_drop_log >= 60:
            self._last_drop_log = now
            limit = f"{self.buffer_limit} readings" + (
                f" or {self.buffer_bytes} bytes" if self.buffer_bytes is not None else "")
            self.log.warning("forwarder: buffer full (%s): dropping the oldest (%d dropped so far)",
                             limit, self.dropped)

    def stats(self) -> dict[str, Any]:
        return {"buffered": self.buffered, "dropped": self.dropped, "delivered": self.delivered,
                "failures": self.failures, "consecutive_failures": self.consecutive_failures,
                "next_delay": self.delays[-1][0] if self.delays else self.interval}

    # ------------------------------------------------------------ sending

    async def run(self) -> None:
        while True:
            delay, outcome = await self.cycle()
            self.delays.append((delay, outcome))
            await self._sleep(delay)

    async def cycle(self) -> tuple[float, str]:
        """Post everything buffered, batch after batch; the delay before the next cycle and why."""
        if not self.buffer:
            return self.interval, "idle"
        while self.buffer:
            batch = [self.buffer.popleft() for _ in range(min(self.batch_size, len(self.buffer)))]
            self.in_flight = batch
            body = json.dumps({"source": self.source, "sent": round(time.time(), 3), "readings": batch},
                              separators=(",", ":"), default=str).encode("utf-8")
            try:
                ok, detail = await self._post(body)
            except asyncio.CancelledError:
                self.buffer.extendleft(reversed(batch))
                self.in_flight = []
                raise
            except Exception as exc:  # a bug in a custom post function must not lose the batch
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            self.in_flight = []
            if not ok:
                self.buffer.extendleft(reversed(batch))
                self.failures += 1
                self.consecutive_failures += 1
                delay = min(self.max_backoff, self.interval * 2 ** self.consecutive_failures)
                loud = self.consecutive_failures in (1, 5) or self.consecutive_failures % 20 == 0
                level = logging.WARNING if loud else logging.DEBUG
                self.log.log(level, "forwarder: POST %s failed (%s); %d readings kept, next try in %.1f s",
                             self.url, detail, self.buffered, delay)
                return delay, "failed"
            if self.consecutive_failures:
                self.log.info("forwarder: POST %s works again after %d failures", self.url,
                              self.consecutive_failures)
            self.consecutive_failures = 0
            self.delivered += len(batch)
            for reading in batch:
                self._forget(reading)
        return self.interval, "sent"

    async def _post_with_urllib(self, body: bytes) -> tuple[bool, str]:
        return await asyncio.to_thread(self._post_blocking, body)

    def _post_blocking(self, body: bytes) -> tuple[bool, str]:
        request = urllib.request.Request(self.url, data=body, method="POST", headers=self.headers)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
                return 200 <= response.status < 300, f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            exc.close()
            return False, f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            return False, str(exc.reason)
        except (OSError, HTTPException, ValueError) as exc:
            return False, f"{type(exc).__name__}: {exc}"
