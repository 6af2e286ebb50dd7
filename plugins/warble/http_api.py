"""HTTP intake and views of the Warble service, for clients that cannot speak MQTT.

    POST /warbles            JSON {"user", "source", "id"?} or a text/plain post (?user=NAME)
    GET  /warbles/{id}       status and result
    GET  /warbles?user=NAME  a user's history
    GET  /leaderboard        most digits of pi
    GET  /openapi.yaml       the description of this API (openapi.yaml, beside this module)

Routes only: the `http` plugin serves them (`pidaemon_http_routes`) on the
daemon's event loop with the limits of a public endpoint (`pidaemon.http`),
so the handlers call the `warble_server` plugin directly.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web

from pidaemon import hookimpl
from pidaemon.daemon import PluginMissing
from pidaemon.http import HttpError, HttpService, parse_json, query, read_text
from pidaemon.schema import Problem, Section

from .server import WarbleServer

OPENAPI_FILE = "openapi.yaml"
PLUGIN_NAME = "warble_http"  # its entry point, hence its section under `plugins:`

# Settings this plugin had when it ran its own server: now the `http` plugin's.
MOVED = {"listen": "listen", "max_body": "max_body", "max_url": "max_url", "max_headers": "max_headers",
         "max_header_bytes": "max_header_bytes", "request_timeout": "header_timeout and plugins.http.body_timeout",
         "max_connections": "max_connections", "max_connections_per_client": "max_connections_per_client"}


class WarbleHttpSection(Section):
    """No settings of its own; an old setting is an error that says where it went."""

    def check(self, value, path, problems):
        if isinstance(value, dict):
            for key in [k for k in value if k in MOVED]:
                problems.append(Problem(path + (key,), f"moved to the http plugin: set plugins.http.{MOVED[key]} "
                                                       "(and enable the http plugin, which serves warble_http's "
                                                       "routes)"))
            value = {k: v for k, v in value.items() if k not in MOVED}
        return super().check(value, path, problems)

    def extended(self, more):  # the daemon adds `enabled` and `required`: still this kind of section
        return WarbleHttpSection({**self.fields, **more}, whole=self.whole)

    def warnings(self, config, path):
        """`config check` says what the start would: without the `http` plugin nothing serves these routes."""
        http = config["plugins"].get("http")
        if http is not None and http.get("enabled", True):
            return []
        return [Problem(path, 'its routes are served by the "http" plugin, which this configuration does not '
                              'enable: add `http: {listen: "HOST:PORT"}` under plugins (without it, warble_http '
                              'fails at start)')]


class WarbleHttp:
    config_schema = WarbleHttpSection({})

    def __init__(self, node, config: dict):
        self.node = node
        self.service: WarbleServer | None = None

    @hookimpl
    def pidaemon_configure(self, node):
        self.service = node.lookup(WarbleServer)
        try:
            node.lookup(HttpService)
        except PluginMissing:
            raise PluginMissing('needs the "http" plugin on the same node, which serves its routes: add '
                                '`http: {listen: "HOST:PORT"}` under plugins') from None

    @hookimpl
    def pidaemon_http_routes(self, node):
        return [web.post("/warbles", self.submit), web.get("/warbles", self.history),
                web.get("/warbles/{id}", self.job), web.get("/leaderboard", self.leaderboard),
                web.get("/openapi.yaml", self.openapi)]

    # ------------------------------------------------------------ routes

    async def submit(self, request: web.Request) -> web.Response:
        user = query(request).get("user", "anonymous")
        text = await read_text(request)
        job_id = None
        if request.content_type == "application/json":
            body: Any = parse_json(text)
            if not isinstance(body, dict) or not isinstance(body.get("source"), str):
                raise HttpError(400, 'expected {"user": str, "source": str}')
            text, user = body["source"], str(body.get("user") or user)
            job_id = None if body.get("id") is None else str(body["id"])
        answer = self.service.submit(user, text, job_id=job_id, origin=f"http:{request.remote}")  # per-client limits
        return web.json_response(answer, status=422 if answer.get("status") == "rejected" else 202)

    async def history(self, request: web.Request) -> web.Response:
        user = query(request).get("user")
        if not user:
            raise HttpError(400, "GET /warbles needs ?user=NAME")
        return web.json_response({"user": user, "jobs": self.service.history(user)})

    async def job(self, request: web.Request) -> web.Response:
        job = self.service.get(request.match_info["id"])
        if job is None:
            raise HttpError(404, "no such warble")
        return web.json_response(job)

    async def leaderboard(self, request: web.Request) -> web.Response:
        return web.json_response(self.service.leaderboard.snapshot())

    async def openapi(self, request: web.Request) -> web.Response:
        body = resources.files(__package__).joinpath(OPENAPI_FILE).read_bytes()
        return web.Response(body=body, content_type="application/yaml")
