"""Waiting for a condition on the event loop: a bound on failure, not a timing claim."""

from __future__ import annotations

import asyncio


async def wait_until(condition, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll `condition()` until it is truthy (and return it), or raise TimeoutError after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not met within {timeout} s")
        await asyncio.sleep(interval)
