"""A threading HTTP server (the standard library's) with the limits of a server open to a LAN.

Each limit is checked before the bytes it bounds are read or parsed:
- at most `max_connections` connections at once, `max_connections_per_client`
  of them from one address; one more is answered 503 at once, by the thread
  that accepts connections, without a thread of its own;
- a connection has `request_timeout` seconds to send its whole request (line,
  headers, body), however slowly it trickles; then 408 and the connection is
  closed; writing the answer is bounded too;
- a request line of at most `max_url` bytes (414), at most `max_headers`
  headers in `max_header_bytes` bytes (431), at most `MAX_QUERY_FIELDS` query
  parameters (400);
- a body only with one valid `Content-Length` of at most `max_body` bytes:
  none, or `Transfer-Encoding` (chunked), is 411; a negative, malformed or
  conflicting one is 400; a larger one 413; JSON nested deeper than
  `MAX_JSON_DEPTH` or that `json` refuses in any way is 400 (`parse_json`).

Every refusal, the standard library's own included, is `{"error": "..."}`
with its status.  A client that goes away early costs a debug line, never a
traceback; an unexpected failure is a 500 and one log line, at most once a
minute.  HTTP/1.0: one request per connection.
"""

from __future__ import annotations

import io
import json
import socket
import sys
import threading
import time
from collections import Counter
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from pidaemon.hooks import describe_error

MAX_JSON_DEPTH = 32          # a request is one flat object
MAX_QUERY_FIELDS = 16
LINGER_SECONDS = 1.0         # after refusing a body unread: how long its bytes are drained...
LINGER_BYTES = 256 * 1024    # ...at most, so that the client reads the refusal rather than a reset
ERROR_LOG_EVERY = 60.0


class Owner(Protocol):
    """What the server and its handlers need from whoever serves with them (a plugin)."""

    limits: Any   # max_body, max_url, max_headers, max_header_bytes, request_timeout
    errors: "ErrorLog"
    log: Any

    def count_refusal(self, status: HTTPStatus) -> None: ...

    def connection_failed(self, client_address, exc: BaseException | None) -> None: ...


class Refusal(Exception):
    """A request that is answered with an error: its status and the message of its JSON body."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ServiceUnavailable(Exception):
    """The Warble service did not answer (busy event loop, or the node is shutting down)."""


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


class DeadlineReader(io.RawIOBase):
    """A socket's incoming bytes with one deadline for them all: each wait lasts only the time left.

    A per-read timeout alone lets a client that sends a byte now and then hold
    a connection (and its thread) for ever.
    """

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


def ascii_excerpt(text: str, size: int = 40) -> str:
    """A piece of what a client sent, safe for a message or a log line (escaped, unquoted)."""
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
        self._lock = threading.Lock()

    def report(self, exc: BaseException) -> None:
        with self._lock:
            self.count += 1
            now = time.monotonic()
            if now - self._last < self.every:
                self._unlogged += 1
                return
            self._last, unlogged, self._unlogged = now, self._unlogged, 0
        more = f" ({unlogged} more since the last report)" if unlogged else ""
        self.log.error("%s: %s%s", self.what, describe_error(exc), more)


class LimitedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with a bound on its threads: in all, and per client address."""

    daemon_threads = True
    block_on_close = False  # shutting down never waits for a client

    def __init__(self, address, handler_class, *, max_connections: int, max_per_client: int, owner: Owner):
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.owner = owner
        self.open_connections: Counter[str] = Counter()
        self._slots = threading.Lock()
        super().__init__(address, handler_class)

    @property
    def connections(self) -> int:
        with self._slots:
            return sum(self.open_connections.values())

    def process_request(self, request, client_address):
        host = client_address[0]
        with self._slots:
            if sum(self.open_connections.values()) >= self.max_connections:
                refusal = f"busy: {self.max_connections} connections are open; try again in a moment"
            elif self.open_connections[host] >= self.max_per_client:
                refusal = f"{self.max_per_client} connections from {host} are open already; try again in a moment"
            else:
                refusal = None
                self.open_connections[host] += 1
        if refusal is not None:
            self.owner.count_refusal(HTTPStatus.SERVICE_UNAVAILABLE)
            self.refuse_at_once(request, refusal)
            return
        try:
            super().process_request(request, client_address)
        except Exception:  # no thread for it (the machine's limit): the slot is free again
            self.release(host)
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.release(client_address[0])

    def release(self, host: str) -> None:
        with self._slots:
            self.open_connections[host] -= 1
            if self.open_connections[host] <= 0:
                del self.open_connections[host]

    def refuse_at_once(self, request: socket.socket, message: str) -> None:
        """503 from the accepting thread: never blocks (the answer fits in the socket's buffer)."""
        body = json.dumps({"error": message}).encode()
        head = (f"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        try:
            request.setblocking(False)
            request.send(head + body)
            request.shutdown(socket.SHUT_WR)
            request.recv(65536)  # whatever the client sent already: closing on unread bytes resets
        except OSError:
            pass
        request.close()

    def handle_error(self, request, client_address):
        """Whatever escaped a request's handling: one line, never the standard library's traceback on stderr."""
        self.owner.connection_failed(client_address, sys.exc_info()[1])


class LimitedRequestHandler(BaseHTTPRequestHandler):
    """One connection, one request, under the limits; `owner` is set on the subclass that serves it,
    which also gives `route_get(url)` and `route_post(url)`."""

    server_version = "pidaemon"
    owner: Owner

    # ------------------------------------------------------------ the connection

    def setup(self):
        super().setup()
        self.rfile.close()  # the plain socket file: replaced by one with a deadline
        deadline = time.monotonic() + self.owner.limits.request_timeout
        self.rfile = io.BufferedReader(DeadlineReader(self.connection, deadline))
        self.answered = False
        self.command, self.requestline, self.request_version = "", "", ""  # until parse_request sets them
        # Whether the client may still be sending when we answer: then what it sends is drained
        # before closing, or its TCP stack may reset the connection before it reads our answer.
        self.unread_input = True

    def handle(self):
        self.handle_one_request()  # HTTP/1.0: one request per connection

    def handle_one_request(self):
        routes = {"GET": self.route_get, "POST": self.route_post}
        try:
            if not self.read_request_head():
                return
            self.unread_input = self.announces_body()
            if self.command not in routes:
                raise Refusal(HTTPStatus.METHOD_NOT_ALLOWED,
                              f"method {ascii_excerpt(self.command)} is not allowed: use GET or POST")
            routes[self.command](urlsplit(self.path))
        except Refusal as refusal:
            self.refuse(refusal.status, refusal.message)
        except ServiceUnavailable as exc:
            self.refuse(HTTPStatus.SERVICE_UNAVAILABLE, str(exc))
        except TimeoutError:
            self.unread_input = False  # a slow client: no more of its time
            self.refuse(HTTPStatus.REQUEST_TIMEOUT,
                        f"the request did not arrive within {self.owner.limits.request_timeout:g} s")
        except OSError as exc:  # the client went away: nothing to answer, nobody to tell
            self.unread_input = False
            self.owner.connection_failed(self.client_address, exc)
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 and is logged, the server goes on
            self.owner.errors.report(exc)
            self.refuse(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (logged on the server)")
        finally:
            self.close_connection = True

    def finish(self):
        if self.unread_input:
            self.drain()
        super().finish()

    def drain(self) -> None:
        """Read and forget what the client still sends (bounded), so that it gets our answer, not a reset."""
        deadline = time.monotonic() + LINGER_SECONDS
        drained = 0
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while drained < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                chunk = self.connection.recv(65536)
                if not chunk:
                    return
                drained += len(chunk)
        except OSError:
            pass

    def read_request_head(self) -> bool:
        """The request line and headers, read under the limits, then parsed by the standard library.

        False when there is no request to answer (nothing sent, or an answer was sent already).
        """
        limits = self.owner.limits
        line = self.rfile.readline(limits.max_url + 3)
        if not line:
            self.unread_input = False
            return False
        if len(line) > limits.max_url + 2:
            raise Refusal(HTTPStatus.REQUEST_URI_TOO_LONG, f"request line over {limits.max_url} bytes")
        if not line.endswith(b"\n"):
            return False  # the client closed in the middle of its request line
        head: list[bytes] = []
        size = 0
        while True:
            header = self.rfile.readline(limits.max_header_bytes - size + 1)
            size += len(header)
            if size > limits.max_header_bytes:
                raise Refusal(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                              f"request headers over {limits.max_header_bytes} bytes")
            if not header.endswith(b"\n"):
                return False  # closed in the middle of the headers
            if header in (b"\r\n", b"\n"):
                break
            head.append(header)
            if len(head) > limits.max_headers:
                raise Refusal(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                              f"more than {limits.max_headers} request headers")
        self.raw_requestline = line
        connection_file, self.rfile = self.rfile, io.BytesIO(b"".join(head) + b"\r\n")
        try:
            return self.parse_request()  # answers (send_error) and returns False when malformed
        finally:
            self.rfile = connection_file

    def announces_body(self) -> bool:
        return "Transfer-Encoding" in self.headers or any(
            value.strip() != "0" for value in self.headers.get_all("Content-Length", []))

    # ------------------------------------------------------------ answers

    def log_message(self, fmt, *args):
        self.owner.log.debug("http %s: %s", self.client_address[0], ascii_excerpt(fmt % args, 300))

    def send_body(self, status: int, content_type: str, body: bytes) -> None:
        # Writing has its own time: the client must take the answer within request_timeout.
        self.connection.settimeout(self.owner.limits.request_timeout)
        if self.request_version == "HTTP/0.9":  # or a malformed request line: answer with a status and headers
            self.request_version = "HTTP/1.0"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.answered = True
        self.wfile.write(body)

    def send_json(self, status: int, payload) -> None:
        self.send_body(status, "application/json", json.dumps(payload).encode())

    def refuse(self, status: HTTPStatus, message: str) -> None:
        """Answer `{"error": message}` with `status` (unless an answer has begun already) and close."""
        self.close_connection = True
        if self.answered:
            return
        self.owner.count_refusal(status)
        try:
            self.send_json(status, {"error": message})
        except OSError as exc:
            self.unread_input = False
            self.owner.connection_failed(self.client_address, exc)

    def send_error(self, code, message=None, explain=None):
        """The standard library's own refusals (a malformed request line...): JSON like ours."""
        status = HTTPStatus(code)
        detail = message or status.phrase
        if explain and explain != status.description:
            detail = f"{detail}: {explain}"
        self.refuse(status, detail)

    # ------------------------------------------------------------ the request

    def query(self, url) -> dict[str, list[str]]:
        try:
            return parse_qs(url.query, max_num_fields=MAX_QUERY_FIELDS)
        except ValueError:
            raise Refusal(HTTPStatus.BAD_REQUEST, f"more than {MAX_QUERY_FIELDS} query parameters") from None

    def read_body(self) -> bytes:
        """The body, its length checked before a byte of it is read."""
        limit = self.owner.limits.max_body
        if "Transfer-Encoding" in self.headers:
            raise Refusal(HTTPStatus.LENGTH_REQUIRED, "Transfer-Encoding (a chunked body) is not accepted: "
                                                      "send the body with a Content-Length")
        lengths = {value.strip() for value in self.headers.get_all("Content-Length", [])}
        if not lengths:
            raise Refusal(HTTPStatus.LENGTH_REQUIRED, "a body needs a Content-Length")
        if len(lengths) > 1:
            raise Refusal(HTTPStatus.BAD_REQUEST, "conflicting Content-Length headers")
        text = lengths.pop()
        if not (text.isascii() and text.isdigit()):
            raise Refusal(HTTPStatus.BAD_REQUEST, f"bad Content-Length '{ascii_excerpt(text)}': "
                                                  "expected a number of bytes")
        if len(text) > 18 or int(text) > limit:
            raise Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {limit} bytes")
        length = int(text)
        body = self.rfile.read(length)
        self.unread_input = False
        if len(body) < length:
            raise Refusal(HTTPStatus.BAD_REQUEST, f"body shorter than its Content-Length ({len(body)} of "
                                                  f"{length} bytes)")
        return body


def parse_json(text: str):
    """A request body's JSON, or a Refusal that says what is wrong with it."""
    if json_depth_over(text, MAX_JSON_DEPTH):
        raise Refusal(HTTPStatus.BAD_REQUEST, f"body is JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Refusal(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # an integer of 5000 digits...
        raise Refusal(HTTPStatus.BAD_REQUEST, f"body is not acceptable JSON: {exc}") from None
