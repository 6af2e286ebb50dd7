"""The REST forwarder against a real local HTTP server that fails for a while, then recovers."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import pytest
from pidaemon_plugins.telemetry_store.forwarder import RestForwarder

from tests.support.rest_endpoint import Endpoint

# The scenario is an endpoint that fails for 30 s.  The logic is the same
# for any window; the default keeps the test short.  PIDAEMON_FORWARDER_FAIL_SECONDS=30
# runs the real one (interval and cap are scaled so that the cap is reached either way).
FAIL_SECONDS = float(os.environ.get("PIDAEMON_FORWARDER_FAIL_SECONDS", "3"))
INTERVAL = 0.1 if FAIL_SECONDS <= 5 else 1.0
MAX_BACKOFF = 0.8 if FAIL_SECONDS <= 5 else 8.0


@pytest.fixture
def endpoint():
    server = Endpoint()
    yield server
    server.close()


def expected_backoff(k: int) -> float:
    return min(MAX_BACKOFF, INTERVAL * 2 ** k)


def test_backoff_while_the_endpoint_fails_then_every_reading_delivered_once(endpoint):
    async def scenario():
        forwarder = RestForwarder(endpoint.url, interval=INTERVAL, batch_size=50, buffer_limit=100_000,
                                  max_backoff=MAX_BACKOFF, timeout=5, source="server")
        runner = asyncio.create_task(forwarder.run())
        submitted = 0

        async def feed(seconds: float):
            nonlocal submitted
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                forwarder.submit({"node": f"n{submitted % 7}", "time": time.time(), "readings": {"x": submitted}})
                submitted += 1
                await asyncio.sleep(0.01)

        await feed(0.5)                                    # normal operation
        endpoint.fail_until = time.monotonic() + FAIL_SECONDS
        failing_from = len(forwarder.delays)
        await feed(FAIL_SECONDS)                           # the endpoint fails all along
        await feed(1.0)                                    # it recovered
        while forwarder.buffered:
            await asyncio.sleep(0.05)
        await asyncio.sleep(INTERVAL * 3)
        runner.cancel()
        return forwarder, submitted, list(forwarder.delays)[failing_from:]

    forwarder, submitted, delays = asyncio.run(scenario())
    failed = [d for d, outcome in delays if outcome == "failed"]
    # Exponential back-off, capped: exactly the sequence interval*2^k, k = 1, 2, ...
    assert len(failed) >= 4
    assert failed == [expected_backoff(k) for k in range(1, len(failed) + 1)]
    assert failed[-1] == MAX_BACKOFF
    # The first success brings the normal interval back at once.
    outcomes = [outcome for _, outcome in delays]
    first_failure, last_failure = outcomes.index("failed"), len(outcomes) - 1 - outcomes[::-1].index("failed")
    assert outcomes[first_failure:last_failure + 1] == ["failed"] * len(failed)  # one unbroken failure run
    first_ok = last_failure + 1
    assert delays[first_ok] == (INTERVAL, "sent")
    assert all(d == INTERVAL for d, outcome in delays[first_ok:])
    # Every reading arrived, exactly once; none was dropped.
    ids = endpoint.delivered_ids()
    assert Counter(ids) == Counter(range(1, submitted + 1))
    assert forwarder.dropped == 0 and forwarder.delivered == submitted
    assert forwarder.failures == len(failed)
    # The endpoint saw no more requests than the back-off allows (no hammering).
    failing_requests = [t for t, status, _ in endpoint.requests if status == 500]
    assert len(failing_requests) == len(failed)
    gaps = [b - a for a, b in zip(failing_requests, failing_requests[1:])]
    assert all(gap >= expected_backoff(k) * 0.9 for k, gap in enumerate(gaps, start=1))


def test_a_full_buffer_drops_the_oldest_and_counts_them(endpoint):
    async def scenario():
        forwarder = RestForwarder(endpoint.url, interval=0.05, batch_size=5, buffer_limit=10, max_backoff=0.2)
        endpoint.fail_until = time.monotonic() + 3600
        runner = asyncio.create_task(forwarder.run())
        for i in range(25):
            forwarder.submit({"node": "n", "time": float(i), "readings": {}})
            await asyncio.sleep(0.01)
        while forwarder.failures < 2:
            await asyncio.sleep(0.02)
        dropped_while_failing = forwarder.dropped
        endpoint.fail_until = 0
        while forwarder.buffered:
            await asyncio.sleep(0.02)
        runner.cancel()
        return forwarder, dropped_while_failing

    forwarder, dropped_while_failing = asyncio.run(scenario())
    assert dropped_while_failing == 15 and forwarder.dropped == 15
    assert forwarder.stats()["dropped"] == 15
    assert sorted(endpoint.delivered_ids()) == list(range(16, 26))  # the newest ten, once each


def test_the_buffer_is_bounded_in_bytes_too(endpoint):
    """Big readings fill the buffer by their size long before its count: the oldest go, and one too big never fits."""
    async def scenario():
        forwarder = RestForwarder(endpoint.url, interval=0.05, batch_size=5, buffer_limit=1000, buffer_bytes=10_000)
        for i in range(30):
            forwarder.submit({"node": "n", "time": float(i), "readings": {}}, size=1000)
        held_while_full = (forwarder.buffered, forwarder.buffered_bytes, forwarder.dropped)
        forwarder.submit({"node": "n", "time": 99.0, "readings": {}}, size=10_001)  # can never fit
        forwarder.submit({"node": "n", "time": 100.0, "readings": {"x": "y" * 3000}})  # its JSON size counted
        sent = await forwarder.cycle()
        return forwarder, held_while_full, sent

    forwarder, held_while_full, sent = asyncio.run(scenario())
    assert held_while_full == (10, 10_000, 20)
    assert sent == (0.05, "sent") and forwarder.buffered == 0 and forwarder.buffered_bytes == 0
    assert forwarder.dropped == 20 + 1 + 4  # the 10,001 bytes one; then four 1000-byte ones made room for ~3000
    assert sorted(endpoint.delivered_ids()) == list(range(25, 32))  # the one that never fitted got no id


def test_a_network_error_is_a_failure_too():
    async def scenario():
        forwarder = RestForwarder("http://127.0.0.1:9/unreachable", interval=0.05, max_backoff=1, timeout=1)
        forwarder.submit({"node": "n", "time": 1.0, "readings": {}})
        return forwarder, await forwarder.cycle(), await forwarder.cycle()

    forwarder, first, second = asyncio.run(scenario())
    assert first == (0.1, "failed") and second == (0.2, "failed")
    assert forwarder.buffered == 1 and forwarder.delivered == 0
