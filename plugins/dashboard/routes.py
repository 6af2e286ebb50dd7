"""The dashboard's HTTP routes, served by the node's `http` plugin (`pidaemon_http_routes`):

    GET /                      the page (static/index.html)
    GET /dashboard/live        the WebSocket of live changes (live.py; docs/dashboard.md)
    GET /dashboard/nodes/{id}  one node's panel, JSON (detail.py); 404 for a node the dashboard does not know
    GET /dashboard/{file}      the page's other files (static/), by name only

The page's files are shipped in the package: no build step, nothing fetched
at run time.  They are served with `Cache-Control: no-cache` (checked again
after an upgrade, by their ETag) and, for the page itself, a content security
policy that allows only the page's own scripts, styles and WebSocket.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from pathlib import Path
from typing import Callable

from aiohttp import web

from pidaemon.http.errors import error_response
from pidaemon.names import is_name
from pidaemon.telemetry_history import TelemetryHistory

from .detail import node_detail
from .live import LiveHub, LivePage
from .model import ClusterModel

STATIC_DIR = Path(__file__).parent / "static"
INDEX = "index.html"
FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")
CONTENT_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml",
                 ".png": "image/png", ".json": "application/json", ".woff2": "font/woff2", ".txt": "text/plain",
                 ".ico": "image/x-icon"}
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
HEARTBEAT = 30.0          # seconds between pings to a page; one that does not answer is closed
CLOSE_TIMEOUT = 2.0       # seconds a page has to answer the close
MAX_INCOMING = 4096       # bytes of a message from a page (it needs to send none)
WRITER_LIMIT = 64 * 1024  # bytes aiohttp buffers for a page before a send waits


class DashboardRoutes:
    def __init__(self, model: ClusterModel, hub: LiveHub, history: Callable[[], TelemetryHistory | None], *,
                 detail_window: float, max_backlog: int, log: logging.Logger | logging.LoggerAdapter,
                 static_dir: Path = STATIC_DIR):
        self.model = model
        self.hub = hub
        self.history = history
        self.detail_window = detail_window
        self.max_backlog = max_backlog
        self.log = log
        self.static_dir = static_dir
        self.files: dict[str, tuple[bytes, str]] | None = None   # read at the first request

    def route_defs(self) -> list[web.RouteDef]:
        # /dashboard/live and /dashboard/nodes/... before /dashboard/{file}: the first match serves.
        return [web.get("/", self.index), web.get("/dashboard/live", self.live),
                web.get("/dashboard/nodes/{node_id}", self.node), web.get("/dashboard/{file}", self.file)]

    # ------------------------------------------------------------ files

    def _load_files(self) -> dict[str, tuple[bytes, str]]:
        """The page's files, read once (about 50 KB): {name: (bytes, ETag)}.  Served from memory rather
        than with sendfile, which would bypass the server's send timeout for a client that never reads."""
        files = {}
        for path in sorted(self.static_dir.iterdir()):
            if FILE_NAME.fullmatch(path.name) and path.is_file():
                body = path.read_bytes()
                files[path.name] = body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return files

    def _serve(self, request: web.Request, name: str, headers: dict[str, str] | None = None) -> web.StreamResponse:
        if self.files is None:
            self.files = self._load_files()
        if name not in self.files:
            return error_response(404, f"no file {name[:100]!r} in the dashboard")
        body, etag = self.files[name]
        headers = {"Content-Type": CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream"),
                   "Cache-Control": "no-cache", "ETag": etag, "X-Content-Type-Options": "nosniff", **(headers or {})}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers=headers)

    async def index(self, request: web.Request) -> web.StreamResponse:
        return self._serve(request, INDEX, {"Content-Security-Policy": PAGE_POLICY, "X-Frame-Options": "DENY",
                                            "Referrer-Policy": "no-referrer"})

    async def file(self, request: web.Request) -> web.StreamResponse:
        return self._serve(request, request.match_info["file"])

    # ------------------------------------------------------------ a node's panel

    async def node(self, request: web.Request) -> web.Response:
        node_id = request.match_info["node_id"]
        detail = None
        if is_name(node_id):
            detail = await node_detail(self.model, node_id, self.history(), self.detail_window, self.log)
        if detail is None:
            return error_response(404, f"no node {node_id[:64]!r} in the dashboard")
        return web.json_response(detail, headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------ live

    async def live(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, compress=False, max_msg_size=MAX_INCOMING,
                                   writer_limit=WRITER_LIMIT, timeout=CLOSE_TIMEOUT)
        if not ws.can_prepare(request).ok:
            return error_response(400, "GET /dashboard/live is a WebSocket: the request must ask for an upgrade")
        if self.hub.full:
            self.hub.stats["refused"] += 1
            return error_response(503, f"too many live dashboards open ({self.hub.max_pages}, max_clients); "
                                   f"try again later")
        await ws.prepare(request)
        page = LivePage(ws, request, self.max_backlog)
        self.hub.join(page)
        sender = asyncio.ensure_future(page.send_forever())
        reader = asyncio.ensure_future(self._read_until_closed(ws))
        try:
            await asyncio.wait([sender, reader], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.hub.leave(page)
            for task in (sender, reader):
                task.cancel()
            await asyncio.gather(sender, reader, return_exceptions=True)
            if not ws.closed and not page.dropped:
                try:
                    await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT)
                except (asyncio.TimeoutError, ConnectionError):
                    page.drop()
            if not page.dropped and page.unsent():
                # Closed (by the heartbeat, say) with bytes the page never read: a closing transport would wait
                # for them as long as the client keeps its connection open, and hold its place in the caps.
                page.drop()
        return ws

    @staticmethod
    async def _read_until_closed(ws: web.WebSocketResponse) -> None:
        """The page sends nothing the server needs; reading answers its pings and sees its close."""
        async for _ in ws:
            pass
