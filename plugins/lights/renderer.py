"""Hands frames to the backend: one write at a time, in a worker thread, newest frame first.

A write to a real strip blocks (the NeoPixel driver waits for the data to
go out), so it never runs on the event loop.  A frame replaced by a newer one
before it was written is skipped: a burst of commands costs one write, and
the strip always ends on the lamp's latest frame.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Sequence

from .backend import Colour, LightsBackend


class Renderer:
    def __init__(self, backend: LightsBackend):
        self.backend = backend
        self.frames_written = 0
        self._pending: tuple[list[Colour], float] | None = None
        self._wake = asyncio.Event()
        self._lock = threading.Lock()   # show() and close() never run at once
        self._closed = False

    def show(self, pixels: Sequence[Colour], brightness: float) -> None:
        """Ask for `pixels` at `brightness` on the strip (written soon, unless a newer frame comes first)."""
        self._pending = (list(pixels), brightness)
        self._wake.set()

    async def run(self) -> None:
        """Write pending frames until cancelled (a supervised task of the plugin)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            frame, self._pending = self._pending, None
            if frame is not None:
                await asyncio.to_thread(self._write, *frame)

    def _write(self, pixels: list[Colour], brightness: float) -> None:
        with self._lock:
            if not self._closed:
                self.backend.show(pixels, brightness)
                self.frames_written += 1

    def close(self) -> None:
        """Turn the strip off and release it (blocking: call it in a thread); later frames are dropped."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.backend.close()
