"""The live pages: every `push_interval`, one update for all of them, serialized once.

A page that connects waits for the next push: it then gets the whole picture
(`snapshot`, built once for every page that joined in that interval), taken
after the update that the others got, so that nothing in it comes twice.
From then on it gets each update, the same bytes as every other page.

Each page has its own sender task and a backlog of frames not yet written; a
page that does not read (a stalled tablet, a hostile client) sees its backlog
grow, and past `max_backlog` bytes (one frame alone is always taken) its
connection is cut: its memory is bounded, and it never holds up the others.  The kernel's part of it is bounded
too (`SEND_BUFFER`, the socket's send buffer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections import deque
from typing import Any, Callable

from aiohttp import WSMsgType, web

from .model import ClusterModel

SEND_BUFFER = 128 * 1024   # bytes of a page's socket send buffer (the kernel doubles it)
GOING_AWAY = 1001          # the WebSocket close code of a server that stops
CLOSE_TIMEOUT = 2.0        # seconds a page has to answer the close at shutdown


def encode(message: dict[str, Any]) -> bytes:
    """One JSON text frame: compact, ASCII (lone surrogates and all escaped, so that any page can read it)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("ascii")


class LivePage:
    """One connected page: its WebSocket, and the frames waiting for it."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, max_backlog: int):
        self.ws = ws
        self.peer = request.remote or "?"
        self.transport = request.transport
        self.max_backlog = max_backlog
        self.frames: deque[bytes] = deque()
        self.backlog = 0                       # bytes queued or being written
        self.dropped = False
        self.sent = 0                          # frames written
        self._ready = asyncio.Event()
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            except OSError:
                pass

    def push(self, frame: bytes) -> bool:
        """Queue a frame; False when the page is too far behind (its connection is then cut)."""
        if self.dropped:
            return False
        if self.backlog and self.backlog + len(frame) > self.max_backlog:  # one frame alone always fits
            self.drop()
            return False
        self.frames.append(frame)
        self.backlog += len(frame)
        self._ready.set()
        return True

    def unsent(self) -> int:
        """Bytes written to the connection that it has not taken yet (beyond the kernel's buffer)."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def drop(self) -> None:
        """Cut the connection at once: its unsent bytes go with it."""
        self.dropped = True
        self.frames.clear()
        self._ready.set()
        if self.transport is not None:
            self.transport.abort()

    async def send_forever(self) -> None:
        while not self.dropped:
            await self._ready.wait()
            self._ready.clear()
            while self.frames and not self.dropped:
                frame = self.frames[0]
                await self.ws.send_frame(frame, WSMsgType.TEXT)
                if self.frames and self.frames[0] is frame:
                    self.frames.popleft()
                self.backlog -= len(frame)
                self.sent += 1


class LiveHub:
    def __init__(self, model: ClusterModel, log: logging.Logger | logging.LoggerAdapter, *,
                 push_interval: float, history_interval: float, max_pages: int, max_backlog: int,
                 clock: Callable[[], float] = time.time):
        self.model = model
        self.log = log
        self.push_interval = push_interval
        self.history_interval = history_interval
        self.max_pages = max_pages
        self.max_backlog = max_backlog
        self.clock = clock
        self.pages: set[LivePage] = set()
        self.joining: list[LivePage] = []
        self.stats = {"connected": 0, "refused": 0, "dropped_slow": 0, "updates": 0, "snapshots": 0,
                      "bytes": 0}
        self._next_history: float | None = None

    @property
    def full(self) -> bool:
        return len(self.pages) + len(self.joining) >= self.max_pages

    def join(self, page: LivePage) -> None:
        """The page gets the whole picture at the next push, then every update."""
        self.joining.append(page)
        self.stats["connected"] += 1

    def leave(self, page: LivePage) -> None:
        self.pages.discard(page)
        if page in self.joining:
            self.joining.remove(page)

    async def run(self) -> None:
        """Push every `push_interval` seconds (a supervised task of the plugin)."""
        while True:
            await asyncio.sleep(self.push_interval)
            self.push()

    def push(self) -> None:
        """One round: the history point when due, the update for the pages there, the picture for those that
        joined."""
        loop_now, wall = time.monotonic(), self.clock()
        if self._next_history is None or loop_now >= self._next_history:
            self._next_history = loop_now + self.history_interval
            self.model.add_history_point(wall, loop_now)
        update = self.model.take_update(wall, loop_now)
        if update is not None and self.pages:
            self._send(self.pages, encode(update))
            self.stats["updates"] += 1
        if self.joining:
            joining, self.joining = self.joining, []
            self.pages.update(joining)
            self._send(joining, encode(self.model.snapshot(wall, loop_now)))
            self.stats["snapshots"] += 1

    def _send(self, pages, frame: bytes) -> None:
        for page in list(pages):
            if page.push(frame):
                self.stats["bytes"] += len(frame)
            elif page.dropped and page in self.pages:
                self.pages.discard(page)
                self.stats["dropped_slow"] += 1
                self.log.warning("dashboard: cut the live connection of %s: over %d bytes waiting for it "
                                 "(max_client_backlog)", page.peer, page.max_backlog)

    async def close(self) -> None:
        """At shutdown: every page is told that the server goes away (they reconnect by themselves)."""
        pages, self.pages, self.joining = [*self.pages, *self.joining], set(), []
        await asyncio.gather(*(self._close(page) for page in pages))

    @staticmethod
    async def _close(page: LivePage) -> None:
        try:
            await asyncio.wait_for(page.ws.close(code=GOING_AWAY, message=b"server shutdown"), CLOSE_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            page.drop()  # a page that does not read does not hold up the shutdown
