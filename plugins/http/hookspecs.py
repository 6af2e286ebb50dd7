"""The `http` plugin's extension point: routes that other plugins of the node serve.

Declared by the `http` plugin (`hookspecs = pidaemon_plugins.http.hookspecs`),
so the hook is known on every node that loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from pidaemon import hookspec

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp.web import AbstractRouteDef

    from pidaemon.daemon import Daemon


@hookspec
def pidaemon_http_routes(node: "Daemon") -> Iterable["AbstractRouteDef"] | None:
    """Routes this plugin serves on the node's HTTP server, as aiohttp route definitions.

    Asked once, when the `http` plugin starts (after every plugin's
    `pidaemon_configure`): `web.get("/path", handler)`, `web.post(...)`,
    `web.static(prefix, directory)`, a handler that opens a WebSocket...
    Handlers run on the daemon's event loop: call your plugin's methods
    directly, never block.  Read bodies with `pidaemon.http.read_body` /
    `read_json` (limits checked before reading) and refuse with
    `pidaemon.http.HttpError(status, message)`: every error is answered as
    `{"error": "..."}`.  Two plugins giving the same method and path is an
    error that names both.  May be a coroutine.
    """
