"""The `http` plugin: the node's one HTTP listener, serving the routes every plugin gives.

At start it asks every plugin for its routes (`pidaemon_http_routes`), puts
them on one aiohttp application with the limits of a public endpoint
(`pidaemon.http`) and listens on `listen`; at shutdown it closes WebSockets
with 1001 (going away), stops listening and ends what is in flight within a
second.  Its telemetry (`http`): open connections, refusals by status,
connections dropped by their clients, unexpected errors.
"""

from __future__ import annotations

from pidaemon import hookimpl
from pidaemon.config import parse_listen_address
from pidaemon.http import HttpLimits, HttpServer, HttpService, ListenError, RateLimit
from pidaemon.http.cors import check_origin
from pidaemon.schema import Checked, Integer, ListOf, Number, settings

from . import hookspecs

PLUGIN_NAME = "http"  # its entry point, hence its section under `plugins:`
DEFAULTS = HttpLimits()
SERVING_STATES = ("configured", "running")


@settings
class RateLimitSettings:
    burst: int = Integer(min=0, default=DEFAULTS.rate_limit.burst,
                         doc="requests one client address may make at once; 0: no rate limit")
    per_second: float = Number(min=0, default=DEFAULTS.rate_limit.per_second,
                               doc="requests a second one client address may make after its burst; 0: no rate limit")


@settings
class HttpSettings:
    listen: tuple[str, int] = Checked(parse_listen_address, default="127.0.0.1:8080", expected="HOST:PORT",
                                      doc="address of the node's HTTP server (the Warble API, the dashboard)")
    max_connections: int = Integer(min=1, default=DEFAULTS.max_connections,
                                   doc="connections open at once; more are answered 503 at once")
    max_connections_per_client: int = Integer(min=1, default=DEFAULTS.max_connections_per_client,
                                              doc="connections open at once from one IP address; more: 503")
    header_timeout: float = Number(min=0.1, default=DEFAULTS.header_timeout,
                                   doc="seconds for a request's line and headers to arrive, from the connection "
                                       "or the previous answer; then 408 and closed")
    body_timeout: float = Number(min=0.1, default=DEFAULTS.body_timeout,
                                 doc="seconds for a request's body to arrive once its head has; then 408")
    keepalive_timeout: float = Number(min=0.1, default=DEFAULTS.keepalive_timeout,
                                      doc="seconds an idle keep-alive connection stays open")
    send_timeout: float = Number(min=0.1, default=DEFAULTS.send_timeout,
                                 doc="seconds a client may leave what it is sent unread (the connection's send "
                                     "buffer full: a large answer, a live page); then the connection is closed")
    max_url: int = Integer(min=256, max=65536, default=DEFAULTS.max_url,
                           doc="bytes of the request line (method, path and query string); more: 414")
    max_headers: int = Integer(min=8, max=100, default=DEFAULTS.max_headers, doc="request headers; more: 431")
    max_header_bytes: int = Integer(min=1024, max=65536, default=DEFAULTS.max_header_bytes,
                                    doc="bytes of all request headers together; more: 431")
    max_body: int = Integer(min=64, default=DEFAULTS.max_body,
                            doc="bytes accepted in a request body (routes may ask for less); more: 413")
    cors_origins: tuple[str, ...] = ListOf(Checked(check_origin, expected="an origin such as https://example.org"),
                                           default=[], doc='web origins whose pages may call this server '
                                                           '(CORS); "*": any; empty: none')
    rate_limit: RateLimitSettings

    def limits(self) -> HttpLimits:
        return HttpLimits(
            max_connections=self.max_connections, max_connections_per_client=self.max_connections_per_client,
            header_timeout=self.header_timeout, body_timeout=self.body_timeout,
            keepalive_timeout=self.keepalive_timeout, send_timeout=self.send_timeout, max_url=self.max_url, max_headers=self.max_headers,
            max_header_bytes=self.max_header_bytes, max_body=self.max_body, cors_origins=tuple(self.cors_origins),
            rate_limit=RateLimit(burst=self.rate_limit.burst, per_second=self.rate_limit.per_second))


class HttpPlugin(HttpService):
    config_schema = HttpSettings
    hookspecs = hookspecs

    def __init__(self, node, config: HttpSettings):
        self.node = node
        self.host, self.port = config.listen
        self.server = HttpServer(config.limits(), node.log, available=self._plugin_serving)

    @property
    def url(self) -> str | None:
        return f"http://{self.host}:{self.port}/" if self.server.port is not None else None

    @hookimpl
    async def pidaemon_startup(self, node):
        for call in await node.hook_runner.each_awaited("pidaemon_http_routes", node=node):
            self.server.add_routes(call.plugin, call.result or ())  # RouteConflict: this plugin fails
        try:
            await self.server.start(self.host, self.port)
        except ListenError as exc:
            raise ListenError(f"{exc}: set a free address: plugins.{PLUGIN_NAME}.listen in the configuration, "
                              f"--set plugins.{PLUGIN_NAME}.listen=HOST:PORT on `pidaemon run`, "
                              f"--http HOST:PORT on `pidaemon sim`") from exc.__cause__
        self.port = self.server.port  # the real port when 0 was asked for
        node.log.info("HTTP on %s", self.url)

    @hookimpl
    async def pidaemon_shutdown(self, node):
        await self.server.stop()

    @hookimpl
    def pidaemon_telemetry(self):
        return {"http": self.server.readings()}

    def _plugin_serving(self, name: str) -> bool:
        record = self.node.records.get(name)
        return record is None or record.state in SERVING_STATES
