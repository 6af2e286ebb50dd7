"""CORS for the configured origins: which web pages, served elsewhere, may call this server.

No origins configured (the default): no CORS headers at all, so browsers keep
other sites' pages from reading the answers.  An allowed `Origin` gets
`Access-Control-Allow-Origin` echoing it and `Vary: Origin`; a preflight
(`OPTIONS` with `Access-Control-Request-Method`) from it is answered 204 with
the route's methods and the headers a client may send.  Any other origin gets
no CORS headers (its preflight: 403).

Browsers do not apply CORS to WebSockets: any site's page may open one to
this server, and read what it sends.  So a WebSocket upgrade that carries an
`Origin` (a browser's) is accepted only from the server's own pages (the
origin's host is the `Host` asked for) or from an allowed origin; others are
refused (403).  Clients other than browsers send no `Origin`.
"""

from __future__ import annotations

from typing import Iterable

from aiohttp import hdrs, web

ALLOWED_HEADERS = "Content-Type"
MAX_AGE = "600"  # seconds a browser may keep a preflight's answer


def check_origin(value: str) -> str:
    """A configured origin: "*" or scheme://host[:port] (no path); ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError("expected a string")
    if value == "*":
        return value
    scheme, sep, rest = value.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or "/" in rest or any(c.isspace() for c in rest):
        raise ValueError('an origin is "*" or scheme://host[:port], such as https://example.org, without a path')
    return value.lower()


class CorsPolicy:
    def __init__(self, origins: Iterable[str]):
        self.any = "*" in origins
        self.origins = frozenset(o.lower() for o in origins if o != "*")

    @property
    def enabled(self) -> bool:
        return self.any or bool(self.origins)

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self.any or origin.lower() in self.origins)

    def add_headers(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """Allow an allowed origin to read `response` (not yet prepared)."""
        if not self.enabled:
            return
        vary = response.headers.get(hdrs.VARY, "")
        if hdrs.ORIGIN.lower() not in vary.lower():
            response.headers[hdrs.VARY] = f"{vary}, {hdrs.ORIGIN}" if vary else hdrs.ORIGIN
        origin = request.headers.get(hdrs.ORIGIN)
        if self.allows(origin):
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin

    def allows_websocket(self, request: web.BaseRequest) -> bool:
        """Whether a WebSocket upgrade may be accepted: no Origin (not a browser), the server's own page's, or
        an allowed one."""
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return True
        _, sep, host = origin.partition("://")
        return (bool(sep) and host.lower() == (request.host or "").lower()) or self.allows(origin)

    @staticmethod
    def is_websocket(request: web.BaseRequest) -> bool:
        return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"

    @staticmethod
    def is_preflight(request: web.BaseRequest) -> bool:
        return (request.method == hdrs.METH_OPTIONS and hdrs.ORIGIN in request.headers
                and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers)

    def preflight(self, request: web.BaseRequest, methods: Iterable[str]) -> web.Response:
        """204 with what the route allows (the caller checked the origin)."""
        return web.Response(status=204, headers={
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ", ".join(sorted(set(methods) | {hdrs.METH_OPTIONS})),
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOWED_HEADERS,
            hdrs.ACCESS_CONTROL_MAX_AGE: MAX_AGE,
        })
