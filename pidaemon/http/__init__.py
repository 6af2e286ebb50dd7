"""HTTP on the daemon's event loop: aiohttp with the limits of a public endpoint.

The `http` plugin runs one `HttpServer` per node; other plugins add routes to
it through the `pidaemon_http_routes` hook (aiohttp route definitions) and use
what this package offers in their handlers:

    from pidaemon.http import HttpError, read_json, query

    async def submit(request):
        body = await read_json(request)        # 411, 413, 400, 408 as HttpError
        if "source" not in body:
            raise HttpError(400, "no source")  # {"error": "no source"}, status 400
        return web.json_response(...)
"""

from .errors import ErrorLog, HttpError, ascii_excerpt, error_response
from .inputs import MAX_JSON_DEPTH, MAX_QUERY_FIELDS, json_depth_over, parse_json, query, read_body, read_json, read_text
from .limits import LIMITS, HttpLimits, RateLimit
from .server import HttpServer, ListenError, RouteConflict
from .service import HttpService

__all__ = ["LIMITS", "MAX_JSON_DEPTH", "MAX_QUERY_FIELDS", "ErrorLog", "HttpError", "HttpLimits", "HttpServer",
           "HttpService", "ListenError", "RateLimit", "RouteConflict", "ascii_excerpt", "error_response",
           "json_depth_over", "parse_json", "query", "read_body", "read_json", "read_text"]
