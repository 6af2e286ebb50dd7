"""Reading what a client sends, under the server's limits: the body, its JSON, the query string.

Each limit is checked before the bytes it bounds are read: a body only with
one valid `Content-Length` (aiohttp's parser refuses a malformed or
conflicting one with 400) of at most `max_body` bytes, never chunked (411),
within `body_timeout` seconds (408); JSON nested at most `MAX_JSON_DEPTH`
levels, and that `json` accepts in every way (400).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import hdrs, web

from .errors import HttpError
from .limits import LIMITS

MAX_JSON_DEPTH = 32     # a request is one flat object
MAX_QUERY_FIELDS = 16


async def read_body(request: web.BaseRequest, max_body: int | None = None) -> bytes:
    """The request's body, its length checked before a byte of it is read (411, 413, 400, 408)."""
    limits = request.config_dict[LIMITS]
    limit = limits.max_body if max_body is None else max_body
    if hdrs.TRANSFER_ENCODING in request.headers:
        raise HttpError(411, "Transfer-Encoding (a chunked body) is not accepted: send the body with a "
                             "Content-Length")
    length = request.content_length  # the parser accepted one well-formed Content-Length
    if length is None:
        raise HttpError(411, "a body needs a Content-Length")
    if length > limit:
        raise HttpError(413, f"body over {limit} bytes")
    try:
        async with asyncio.timeout(limits.body_timeout):
            return await request.content.readexactly(length)
    except TimeoutError:
        raise HttpError(408, f"the request body did not arrive within {limits.body_timeout:g} s") from None
    except asyncio.IncompleteReadError as exc:
        raise HttpError(400, f"body shorter than its Content-Length ({len(exc.partial)} of {length} bytes)") \
            from None


async def read_text(request: web.BaseRequest, max_body: int | None = None) -> str:
    """The body as UTF-8 text (400 when it is not)."""
    try:
        return (await read_body(request, max_body)).decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "body is not UTF-8") from None


async def read_json(request: web.BaseRequest, max_body: int | None = None) -> Any:
    """The body as JSON (see `parse_json`)."""
    return parse_json(await read_text(request, max_body))


def json_depth_over(text: str, limit: int) -> bool:
    """Whether JSON `text` nests arrays and objects deeper than `limit` (strings skipped; one pass, no parsing)."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def parse_json(text: str) -> Any:
    """A request body's JSON, or an HttpError (400) that says what is wrong with it."""
    if json_depth_over(text, MAX_JSON_DEPTH):
        raise HttpError(400, f"body is JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HttpError(400, f"body is not JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # an integer of 5000 digits...
        raise HttpError(400, f"body is not acceptable JSON: {exc}") from None


def query(request: web.BaseRequest, max_fields: int = MAX_QUERY_FIELDS):
    """The query string's parameters (a MultiDict), at most `max_fields` of them (400)."""
    if request.query_string.count("&") >= max_fields:
        raise HttpError(400, f"more than {max_fields} query parameters")
    return request.query
