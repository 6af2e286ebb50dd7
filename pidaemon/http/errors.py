"""Errors answered as JSON: `{"error": "..."}` with their status, whatever raised them."""

from __future__ import annotations

import json
import time
from http import HTTPStatus
from typing import Mapping

from aiohttp import web

from pidaemon.hooks import describe_error

ERROR_LOG_EVERY = 60.0  # seconds between two log lines about unexpected failures


class HttpError(Exception):
    """Raise it in a route handler to answer `{"error": message}` with `status` (and `headers`)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.headers = dict(headers or {})


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """`{"error": message}` as application/json with `status`."""
    return web.Response(status=status, body=error_body(message), content_type="application/json",
                        headers=dict(headers or {}))


def raw_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 answer that closes its connection: for refusals made before aiohttp parses a request."""
    body = error_body(message)
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n")
    return head.encode("latin-1") + body


def ascii_excerpt(text: str | bytes, size: int = 40) -> str:
    """A piece of what a client sent, safe for a message or a log line (escaped, unquoted)."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return ascii(text[:size])[1:-1] + ("..." if len(text) > size else "")


class ErrorLog:
    """Unexpected failures: one line each, at most one line per `every` seconds (with how many were not logged)."""

    def __init__(self, log, what: str, every: float = ERROR_LOG_EVERY):
        self.log = log
        self.what = what
        self.every = every
        self.count = 0
        self._unlogged = 0
        self._last = float("-inf")

    def report(self, exc: BaseException) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._last < self.every:
            self._unlogged += 1
            return
        self._last, unlogged, self._unlogged = now, self._unlogged, 0
        more = f" ({unlogged} more since the last report)" if unlogged else ""
        self.log.error("%s: %s%s", self.what, describe_error(exc), more)
