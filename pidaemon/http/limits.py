"""The limits of the node's HTTP server: what one client may take of it.

A plain dataclass, so that the server can be built without a configuration
(tests, tools); the `http` plugin's settings fill it in with these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per client address: `burst` requests at once, refilled at `per_second`; 0 disables."""

    burst: int = 60
    per_second: float = 20.0

    @property
    def enabled(self) -> bool:
        return self.burst > 0 and self.per_second > 0


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 2048            # open connections in all; more: 503 at once
    max_connections_per_client: int = 16   # open connections from one address; more: 503 at once
    header_timeout: float = 10.0           # s for a request head, from the connection or the previous answer: 408
    body_timeout: float = 10.0             # s for a request body, once its head has arrived: 408
    keepalive_timeout: float = 5.0         # s an idle keep-alive connection stays open
    send_timeout: float = 30.0             # s a client may leave an answer unread (the send buffer full): closed
    max_url: int = 4096                    # bytes of the request line: 414
    max_headers: int = 50                  # request headers: 431
    max_header_bytes: int = 16384          # bytes of all request headers together: 431
    max_body: int = 8192                   # bytes of a body read with `read_body`: 413
    cors_origins: tuple[str, ...] = ()     # origins whose pages may call the API ("*": any)
    rate_limit: RateLimit = field(default_factory=RateLimit)


# Where a handler finds the limits of the server it runs on: `request.config_dict[LIMITS]`.
LIMITS = web.AppKey("pidaemon_http_limits", HttpLimits)
