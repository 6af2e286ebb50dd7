"""Serving a node's dashboard to the tests, and reading its live messages as a page would."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.support.mosquitto import free_port


def strict_json(text: str):
    """JSON as a browser reads it: NaN and Infinity are not JSON."""
    def refuse(constant):
        raise ValueError(f"{constant} in a message")
    return json.loads(text, parse_constant=refuse)


class DashboardHttp:
    """The node's `http` plugin on a free port of loopback, serving the dashboard's routes."""

    def __init__(self):
        self.port = free_port()

    def plugins(self, **dashboard) -> dict:
        """The plugin sections to add to the node that runs the dashboard."""
        return {"dashboard": dashboard, "http": {"listen": f"127.0.0.1:{self.port}"}}

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class Page:
    """A live connection read as the page reads it: every message kept, in order."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session, self.ws = session, ws
        self.messages: list[dict] = []
        self.closed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, url: str) -> "Page":
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url.replace("http://", "ws://"))
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self.messages.append(strict_json(message.data))
        finally:
            self.closed.set()

    async def wait_for(self, condition, timeout: float = 15.0, what: str = "a message"):
        """The first message (from the start) that meets `condition`; TimeoutError after `timeout` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for message in self.messages:
                if condition(message):
                    return message
            if loop.time() > deadline:
                raise TimeoutError(f"{what}: not among {len(self.messages)} messages within {timeout} s; last: "
                                   f"{str(self.messages[-3:])[:1500]}")
            await asyncio.sleep(0.02)

    def node(self, node_id: str):
        """The node's view as the page would hold it after every message so far (None: not known)."""
        view = None
        for message in self.messages:
            if node_id in message.get("nodes", {}):
                view = message["nodes"][node_id]
        return view

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.session.close()


@pytest.fixture
def dashboard_http():
    return DashboardHttp()


@pytest.fixture
def open_page():
    return Page.open
