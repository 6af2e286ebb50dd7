"""HTTP intake and views of the Warble service, for clients that cannot speak MQTT.

    POST /warbles            JSON {"user", "source", "id"?} or a text/plain post (?user=NAME)
    GET  /warbles/<id>       status and result
    GET  /warbles?user=NAME  a user's history
    GET  /leaderboard        most digits of pi
    GET  /openapi.yaml       the description of this API (openapi.yaml, beside this module)

Served by the standard library's threading HTTP server; each request is
handed to the `warble_server` plugin on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from pidaemon import hookimpl
from pidaemon.config import parse_listen_address
from pidaemon.schema import Checked, Integer, settings

from .server import WarbleServer

OPENAPI_FILE = "openapi.yaml"


@settings
class WarbleHttpSettings:
    listen: tuple[str, int] = Checked(parse_listen_address, default="127.0.0.1:8080", expected="HOST:PORT")
    max_body: int = Integer(min=64, default=8192, doc="bytes accepted in a request body")


class WarbleHttp:
    config_schema = WarbleHttpSettings

    def __init__(self, node, config: WarbleHttpSettings):
        self.node = node
        self.host, self.port = config.listen
        self.max_body = config.max_body
        self.service: WarbleServer | None = None
        self.server: ThreadingHTTPServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @hookimpl
    def pidaemon_configure(self, node):
        self.service = node.lookup(WarbleServer)

    @hookimpl
    def pidaemon_startup(self, node):
        self.loop = asyncio.get_running_loop()
        self.server = ThreadingHTTPServer((self.host, self.port), self._handler_class())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]  # the real port when 0 was asked for
        threading.Thread(target=self.server.serve_forever, name=f"warble-http-{node.id}", daemon=True).start()
        node.log.info("Warble HTTP API on http://%s:%d/warbles", self.host, self.port)

    @hookimpl
    def pidaemon_shutdown(self, node):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def call(self, function, *args, **kwargs):
        """Run a warble_server method on the event loop, from a request thread."""
        async def run():
            return function(*args, **kwargs)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def _handler_class(self):
        plugin = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "pidaemon"

            def log_message(self, fmt, *args):
                plugin.node.log.debug("http %s: " + fmt, self.client_address[0], *args)

            def send_json(self, status: int, payload) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def error(self, status: HTTPStatus, message: str) -> None:
                self.send_json(status, {"error": message})

            def do_GET(self):
                url = urlsplit(self.path)
                service = plugin.service
                if url.path == "/warbles":
                    user = parse_qs(url.query).get("user", [None])[0]
                    if not user:
                        return self.error(HTTPStatus.BAD_REQUEST, "GET /warbles needs ?user=NAME")
                    return self.send_json(HTTPStatus.OK, {"user": user, "jobs": plugin.call(service.history, user)})
                if url.path.startswith("/warbles/"):
                    job = plugin.call(service.get, url.path.split("/", 2)[2])
                    if job is None:
                        return self.error(HTTPStatus.NOT_FOUND, "no such warble")
                    return self.send_json(HTTPStatus.OK, job)
                if url.path == "/leaderboard":
                    return self.send_json(HTTPStatus.OK, plugin.call(service.leaderboard.snapshot))
                if url.path == "/openapi.yaml":
                    body = resources.files(__package__).joinpath(OPENAPI_FILE).read_bytes()
                    self.send_response(HTTPStatus.OK)
                    self.send_header("Content-Type", "application/yaml")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    return self.wfile.write(body)
                return self.error(HTTPStatus.NOT_FOUND, f"no route {url.path}")

            def do_POST(self):
                url = urlsplit(self.path)
                if url.path != "/warbles":
                    return self.error(HTTPStatus.NOT_FOUND, f"no route {url.path}")
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                except ValueError:
                    return self.error(HTTPStatus.BAD_REQUEST, "bad Content-Length")
                if length > plugin.max_body:
                    return self.error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {plugin.max_body} bytes")
                raw = self.rfile.read(length)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    return self.error(HTTPStatus.BAD_REQUEST, "body is not UTF-8")
                user = parse_qs(url.query).get("user", ["anonymous"])[0]
                job_id = None
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    try:
                        request = json.loads(text)
                    except json.JSONDecodeError as exc:
                        return self.error(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc.msg}")
                    if not isinstance(request, dict) or not isinstance(request.get("source"), str):
                        return self.error(HTTPStatus.BAD_REQUEST, 'expected {"user": str, "source": str}')
                    text, user = request["source"], str(request.get("user") or user)
                    job_id = None if request.get("id") is None else str(request["id"])
                service = plugin.service
                answer = plugin.call(service.submit, user, text, job_id=job_id)
                status = HTTPStatus.UNPROCESSABLE_ENTITY if answer.get("status") == "rejected" else HTTPStatus.ACCEPTED
                return self.send_json(status, answer)

        return Handler
