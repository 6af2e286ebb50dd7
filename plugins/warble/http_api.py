"""HTTP intake and views of the Warble service, for clients that cannot speak MQTT.

    POST /warbles            JSON {"user", "source", "id"?} or a text/plain post (?user=NAME)
    GET  /warbles/<id>       status and result
    GET  /warbles?user=NAME  a user's history
    GET  /leaderboard        most digits of pi
    GET  /openapi.yaml       the description of this API (openapi.yaml, beside this module)

Served by `http_server.py`: the standard library's threading HTTP server with
the limits of a server open to a LAN (connections, time, sizes, JSON depth),
each checked before the bytes it bounds are read.  Each request is handed to
the `warble_server` plugin on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from importlib import resources

from pidaemon import hookimpl
from pidaemon.config import parse_listen_address
from pidaemon.schema import Checked, Integer, Number, settings

from .http_server import (ErrorLog, LimitedHTTPServer, LimitedRequestHandler, Refusal, ServiceUnavailable,
                          ascii_excerpt, parse_json)
from .server import WarbleServer

OPENAPI_FILE = "openapi.yaml"
PLUGIN_NAME = "warble_http"  # its entry point, hence its section under `plugins:`
SERVICE_TIMEOUT = 10.0       # seconds a request waits for the Warble service on the event loop


@settings
class WarbleHttpSettings:
    listen: tuple[str, int] = Checked(parse_listen_address, default="127.0.0.1:8080", expected="HOST:PORT",
                                      doc="address of the HTTP API")
    max_body: int = Integer(min=64, default=8192, doc="bytes accepted in a request body; more: 413")
    max_url: int = Integer(min=256, max=65536, default=4096,
                           doc="bytes of the request line (method, path and query string); more: 414")
    max_headers: int = Integer(min=8, max=100, default=50, doc="request headers; more: 431")
    max_header_bytes: int = Integer(min=1024, max=65536, default=16384,
                                    doc="bytes of all request headers together; more: 431")
    request_timeout: float = Number(min=0.1, default=10,
                                    doc="seconds a connection has to send its whole request; then 408 and closed")
    max_connections: int = Integer(min=1, default=64,
                                   doc="connections served at once (a thread each); more: 503 at once")
    max_connections_per_client: int = Integer(min=1, default=8,
                                              doc="connections served at once from one IP address; more: 503")


class ListenError(Exception):
    """The HTTP API cannot listen on its address (taken, not on this machine, not allowed)."""


class WarbleRequestHandler(LimitedRequestHandler):
    """The Warble service's routes, on a request handler with the limits of `http_server.py`."""

    def route_get(self, url):
        service = self.owner.service
        if url.path == "/warbles":
            user = self.query(url).get("user", [None])[0]
            if not user:
                raise Refusal(HTTPStatus.BAD_REQUEST, "GET /warbles needs ?user=NAME")
            return self.send_json(HTTPStatus.OK, {"user": user, "jobs": self.owner.call(service.history, user)})
        if url.path.startswith("/warbles/"):
            job = self.owner.call(service.get, url.path.split("/", 2)[2])
            if job is None:
                raise Refusal(HTTPStatus.NOT_FOUND, "no such warble")
            return self.send_json(HTTPStatus.OK, job)
        if url.path == "/leaderboard":
            return self.send_json(HTTPStatus.OK, self.owner.call(service.leaderboard.snapshot))
        if url.path == "/openapi.yaml":
            body = resources.files(__package__).joinpath(OPENAPI_FILE).read_bytes()
            return self.send_body(HTTPStatus.OK, "application/yaml", body)
        raise Refusal(HTTPStatus.NOT_FOUND, f"no route {ascii_excerpt(url.path, 100)}")

    def route_post(self, url):
        if url.path != "/warbles":
            raise Refusal(HTTPStatus.NOT_FOUND, f"no route {ascii_excerpt(url.path, 100)}")
        user = self.query(url).get("user", ["anonymous"])[0]
        try:
            text = self.read_body().decode("utf-8")
        except UnicodeDecodeError:
            raise Refusal(HTTPStatus.BAD_REQUEST, "body is not UTF-8") from None
        job_id = None
        if self.headers.get("Content-Type", "").startswith("application/json"):
            request = parse_json(text)
            if not isinstance(request, dict) or not isinstance(request.get("source"), str):
                raise Refusal(HTTPStatus.BAD_REQUEST, 'expected {"user": str, "source": str}')
            text, user = request["source"], str(request.get("user") or user)
            job_id = None if request.get("id") is None else str(request["id"])
        answer = self.owner.call(self.owner.service.submit, user, text, job_id=job_id,
                                  origin=f"http:{self.client_address[0]}")  # per-client limits
        status = HTTPStatus.UNPROCESSABLE_ENTITY if answer.get("status") == "rejected" else HTTPStatus.ACCEPTED
        return self.send_json(status, answer)


class WarbleHttp:
    config_schema = WarbleHttpSettings

    def __init__(self, node, config: WarbleHttpSettings):
        self.node = node
        self.limits = config
        self.host, self.port = config.listen
        self.service: WarbleServer | None = None
        self.server: LimitedHTTPServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.refused: Counter[int] = Counter()
        self.dropped_connections = 0  # clients gone before their answer, timed-out writes
        self.errors = ErrorLog(node.log, "warble_http: a request failed")
        self.log = node.log
        self._counts = threading.Lock()

    @hookimpl
    def pidaemon_configure(self, node):
        self.service = node.lookup(WarbleServer)

    @hookimpl
    def pidaemon_startup(self, node):
        self.loop = asyncio.get_running_loop()
        handler = type("Handler", (WarbleRequestHandler,), {"owner": self})
        try:
            self.server = LimitedHTTPServer((self.host, self.port), handler, owner=self,
                                            max_connections=self.limits.max_connections,
                                            max_per_client=self.limits.max_connections_per_client)
        except OSError as exc:
            raise ListenError(f"cannot listen on {self.host}:{self.port} ({exc.strerror or exc}): "
                              f"set a free address with --set plugins.{PLUGIN_NAME}.listen=HOST:PORT "
                              f"(or plugins.{PLUGIN_NAME}.listen in the configuration)") from exc
        self.port = self.server.server_address[1]  # the real port when 0 was asked for
        threading.Thread(target=self.server.serve_forever, name=f"warble-http-{node.id}", daemon=True).start()
        node.log.info("Warble HTTP API on http://%s:%d/warbles", self.host, self.port)

    @hookimpl
    def pidaemon_shutdown(self, node):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @hookimpl
    def pidaemon_telemetry(self):
        with self._counts:
            refused = {str(int(status)): n for status, n in sorted(self.refused.items())}
            dropped = self.dropped_connections
        return {"warble_http": {"connections": self.server.connections if self.server else 0,
                                "refused": refused, "dropped_connections": dropped, "errors": self.errors.count}}

    # ------------------------------------------------------------ for the request threads

    def call(self, function, *args, **kwargs):
        """Run a warble_server method on the event loop, from a request thread."""
        async def run():
            return function(*args, **kwargs)
        try:
            future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        except RuntimeError:  # the loop is closed: the node is shutting down
            raise ServiceUnavailable("the Warble service is shutting down") from None
        try:
            return future.result(SERVICE_TIMEOUT)
        except FutureTimeout:
            future.cancel()
            raise ServiceUnavailable(f"the Warble service did not answer within {SERVICE_TIMEOUT:g} s; "
                                     "try again later") from None

    def count_refusal(self, status: HTTPStatus) -> None:
        with self._counts:
            self.refused[status] += 1

    def connection_failed(self, client_address, exc: BaseException | None) -> None:
        """A connection ended badly (the client left, a write timed out): counted, one debug line."""
        with self._counts:
            self.dropped_connections += 1
        if isinstance(exc, OSError) or exc is None:
            self.node.log.debug("http %s: connection dropped: %s", client_address[0], exc)
        else:
            self.errors.report(exc)
