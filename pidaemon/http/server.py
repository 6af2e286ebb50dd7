"""The node's HTTP server: one aiohttp application on the daemon's event loop, with the limits.

    server = HttpServer(HttpLimits(), log)
    server.add_routes("warble_http", [web.get("/leaderboard", handler), ...])
    await server.start("127.0.0.1", 8080)
    ...
    await server.stop()

Every connection is a `LimitedRequestHandler` (protocol.py: connection caps,
header timeout, head limits).  Every request passes, in this order:
- the CORS headers of an allowed origin (cors.py), on whatever is answered;
- errors as JSON: `HttpError`, aiohttp's own (404, 405...) and a handler's
  bug (500, one log line at most a minute, the server goes on);
- the per-address rate limit (429 with Retry-After; rate_limit.py);
- CORS preflights (204, or 403 for an origin not allowed), and WebSocket
  upgrades from another site's page (403: browsers apply no CORS to them);
- a route whose plugin failed or stopped: 503.
WebSockets opened by handlers are closed with 1001 (going away) at `stop()`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from typing import Any, Callable, Iterable

from aiohttp import WSCloseCode, hdrs, web
from aiohttp.web_routedef import AbstractRouteDef, RouteDef, StaticDef

from .cors import CorsPolicy
from .connections import ConnectionTable
from .errors import ErrorLog, HttpError, ascii_excerpt, error_response
from .limits import LIMITS, HttpLimits
from .protocol import LimitedRequestHandler
from .rate_limit import RateLimiter, retry_after

SHUTDOWN_TIMEOUT = 1.0   # s a request being handled may take to finish at stop, then it is cancelled
WEBSOCKET_CLOSE_TIMEOUT = 1.0


class RouteConflict(Exception):
    """Two plugins (or one, twice) registered the same method and path, or aiohttp refused a route."""


class ListenError(Exception):
    """The server cannot listen on its address (taken, not on this machine, not allowed)."""


class LimitedSite(web.BaseSite):
    """A TCP site whose connections are made by our protocol factory (aiohttp's TCPSite uses its own)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, protocol_factory: Callable[[], Any],
                 backlog: int = 512):
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._factory = host, port, protocol_factory

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._factory, self._host, self._port, backlog=self._backlog,
                                                reuse_address=True)

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1] if self._server else self._port


class HttpServer:
    def __init__(self, limits: HttpLimits, log, *, available: Callable[[str], bool] | None = None):
        self.limits = limits
        self.log = log
        self.available = available          # plugin name -> whether its routes may be served
        self.connections = ConnectionTable(limits.max_connections, limits.max_connections_per_client)
        self.protocols: set[LimitedRequestHandler] = set()
        self.refused: Counter[int] = Counter()
        self.dropped = 0
        self.errors = ErrorLog(log, "http: a request failed")
        self.cors = CorsPolicy(limits.cors_origins)
        self.rate_limiter = RateLimiter(limits.rate_limit)
        self.websockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self.app = web.Application(middlewares=[self._front, self._cors_headers, self._json_errors,
                                                self._rate_limit, self._cross_origin, self._owner_running])
        self.app[LIMITS] = limits
        self.app.on_response_prepare.append(self._track_websocket)
        self.route_owners: dict[Any, str] = {}   # aiohttp route -> plugin
        self._keys: dict[tuple[str, str], str] = {}
        self.runner: web.AppRunner | None = None
        self.site: LimitedSite | None = None
        self.host: str | None = None
        self.port: int | None = None

    # ------------------------------------------------------------ routes

    def add_routes(self, owner: str, routes: Iterable[AbstractRouteDef]) -> None:
        """Register `owner`'s routes; RouteConflict if one is taken already or aiohttp refuses it."""
        routes = list(routes)
        for route in routes:
            if not isinstance(route, AbstractRouteDef):
                raise RouteConflict(f'plugin "{owner}" gave {ascii_excerpt(repr(route), 80)} as a route: expected '
                                    "aiohttp.web route definitions (web.get(...), web.static(...), ...)")
            method, path = ((route.method.upper(), route.path) if isinstance(route, RouteDef)
                            else ("GET", route.prefix.rstrip("/") + "/{static}") if isinstance(route, StaticDef)
                            else ("?", repr(route)))
            for (other_method, other_path), other in self._keys.items():
                if other_path == path and (method == other_method or hdrs.METH_ANY in (method, other_method)):
                    who = f'both "{other}" and "{owner}"' if other != owner else f'"{owner}" twice'
                    raise RouteConflict(f"route {method} {path} is registered by {who}: two plugins cannot "
                                        "serve the same path")
            self._keys[(method, path)] = owner
        try:
            registered = self.app.router.add_routes(routes)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise RouteConflict(f'plugin "{owner}" gave a route that aiohttp refuses: {exc}') from None
        for route in registered:
            self.route_owners[route] = owner

    # ------------------------------------------------------------ life

    async def start(self, host: str, port: int) -> None:
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None,
                                    shutdown_timeout=SHUTDOWN_TIMEOUT)
        await self.runner.setup()
        self.site = LimitedSite(self.runner, host, port, self._make_protocol)
        try:
            await self.site.start()
        except OSError as exc:
            await self.runner.cleanup()
            self.runner = None
            raise ListenError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
        self.host, self.port = host, self.site.port

    async def stop(self) -> None:
        """Close WebSockets (1001), stop listening, end requests (cancelled after SHUTDOWN_TIMEOUT), close all."""
        closing = [asyncio.ensure_future(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down"))
                   for ws in list(self.websockets) if not ws.closed]
        if closing:
            await asyncio.wait(closing, timeout=WEBSOCKET_CLOSE_TIMEOUT)
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        for protocol in list(self.protocols):  # refused ones still draining
            protocol.force_close()
        for task in closing:
            task.cancel()

    def _make_protocol(self) -> LimitedRequestHandler:
        limits = self.limits
        return LimitedRequestHandler(
            self.runner.server, owner=self, loop=asyncio.get_running_loop(),
            # Ours fire first (protocol.py); aiohttp's is the backstop.
            keepalive_timeout=max(limits.header_timeout, limits.keepalive_timeout) + 1,
            # Our HeadScanner refuses first with its own statuses; the parser's limits are a backstop.
            max_line_size=limits.max_url + 64, max_field_size=limits.max_header_bytes + 64,
            max_headers=limits.max_headers + 8,
            lingering_time=1.0, access_log=None)

    # ------------------------------------------------------------ readings

    @property
    def open_connections(self) -> int:
        return self.connections.open

    def count_refusal(self, status: int) -> None:
        self.refused[int(status)] += 1

    def readings(self) -> dict[str, Any]:
        return {"connections": self.connections.open,
                "refused": {str(status): n for status, n in sorted(self.refused.items())},
                "dropped": self.dropped, "errors": self.errors.count}

    # ------------------------------------------------------------ middlewares

    @web.middleware
    async def _front(self, request: web.Request, handler):
        protocol = request.protocol
        if isinstance(protocol, LimitedRequestHandler):
            protocol.request_started()
        return await handler(request)

    @web.middleware
    async def _cors_headers(self, request: web.Request, handler):
        response = await handler(request)
        if not response.prepared:
            self.cors.add_headers(request, response)
        return response

    @web.middleware
    async def _json_errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except HttpError as exc:
            status, message, headers = exc.status, exc.message, exc.headers
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            status, message = exc.status, self._describe(request, exc)
            headers = {name: exc.headers[name] for name in (hdrs.ALLOW, hdrs.RETRY_AFTER, hdrs.WWW_AUTHENTICATE)
                       if name in exc.headers}
        except ConnectionError as exc:  # the client left while the handler wrote to it
            self.log.debug("http %s: connection lost in %s %s: %s", request.remote, request.method,
                           ascii_excerpt(request.path, 100), exc)
            status, message, headers = 500, "connection lost", {}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a handler's bug: 500, one log line, the server goes on
            self.errors.report(exc)
            status, message, headers = 500, "internal error (logged on the server)", {}
        self.count_refusal(status)
        return error_response(status, message, headers)

    @staticmethod
    def _describe(request: web.Request, exc: web.HTTPException) -> str:
        path = ascii_excerpt(request.path, 100)
        if isinstance(exc, web.HTTPNotFound) and exc.text == "404: Not Found":
            return f"no route {path}"
        if isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = " or ".join(sorted(exc.allowed_methods - {hdrs.METH_HEAD}))
            return f"method {ascii_excerpt(request.method)} is not allowed on {path}: use {allowed}"
        default = f"{exc.status}: {exc.reason}"
        return exc.reason if not exc.text or exc.text == default else exc.text

    @web.middleware
    async def _rate_limit(self, request: web.Request, handler):
        wait = self.rate_limiter.take(request.remote or "?")
        if wait:
            limit = self.limits.rate_limit
            raise HttpError(429, f"over {limit.per_second:g} requests a second from {request.remote} "
                                 f"(bursts of {limit.burst}): try again in a moment",
                            {hdrs.RETRY_AFTER: retry_after(wait)})
        return await handler(request)

    @web.middleware
    async def _cross_origin(self, request: web.Request, handler):
        if self.cors.is_websocket(request) and not self.cors.allows_websocket(request):
            raise HttpError(403, f"a WebSocket from a page of {ascii_excerpt(request.headers[hdrs.ORIGIN], 100)} "
                                 "is not allowed (the http plugin's cors_origins)")
        if not self.cors.is_preflight(request):
            return await handler(request)
        route_error = getattr(request.match_info, "http_exception", None)
        if isinstance(route_error, web.HTTPNotFound):
            raise route_error
        if not self.cors.allows(request.headers[hdrs.ORIGIN]):
            raise HttpError(403, f"origin {ascii_excerpt(request.headers[hdrs.ORIGIN], 100)} is not allowed "
                                 "(the http plugin's cors_origins)")
        if isinstance(route_error, web.HTTPMethodNotAllowed):
            methods = route_error.allowed_methods
        else:
            methods = {route.method for route in request.match_info.route.resource or ()}
        return self.cors.preflight(request, methods)

    @web.middleware
    async def _owner_running(self, request: web.Request, handler):
        owner = self.route_owners.get(request.match_info.route)
        if owner is not None and self.available is not None and not self.available(owner):
            raise HttpError(503, f'the "{owner}" plugin that serves {ascii_excerpt(request.path, 100)} '
                                 "is not running")
        return await handler(request)

    async def _track_websocket(self, request: web.Request, response: web.StreamResponse) -> None:
        if isinstance(response, web.WebSocketResponse):
            self.websockets.add(response)
