"""One HTTP connection: aiohttp's request handler with the limits of a public endpoint.

aiohttp parses and answers requests; this subclass adds what it lacks:
- the cap on open connections (`ConnectionTable`), checked when the
  connection opens: one more is answered 503 at once and closed;
- a header timeout: a request head must arrive within `header_timeout`
  seconds of the connection opening or of the previous answer on a
  keep-alive connection, or it is answered 408 and closed (a keep-alive
  connection that sent nothing is closed silently);
- the request line (414; a flood of empty lines before it: 400), the number
  of headers and their bytes (431), the HTTP version (505, HTTP/0.9 too), a
  body's framing (a chunked one: 411; a POST, PUT or PATCH without a
  Content-Length has no body: what follows its head is dropped and the
  connection closed after the answer, 405 or the route's own 411) and
  its declared size (413), checked as the bytes arrive, before the parser
  sees them (`HeadScanner`): aiohttp would answer most of these 400, and
  would read what follows a refused head as the next request;
- a send timeout: a client that leaves what it is sent unread (the send
  buffer full) for `send_timeout` seconds is cut off;
- JSON answers for aiohttp's own refusals (malformed requests: 400);
- a connection whose request body was not read is closed after its answer.

A refusal made here writes its answer, half-closes, and reads what the client
still sends for a moment (bounded), so that the client reads the answer
rather than a reset.  The body timeout is `pidaemon.http.inputs.read_body`'s.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web_protocol
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong

from .errors import ascii_excerpt, error_response, raw_error

if TYPE_CHECKING:  # pragma: no cover
    from .server import HttpServer

LINGER_SECONDS = 1.0         # after a refusal: how long what the client still sends is read and dropped...
LINGER_BYTES = 256 * 1024    # ...at most
MAX_EMPTY_LEAD = 1024       # bytes of empty lines (CR, LF) taken before a request line: more is a 400
HTTP_VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")
METHODS_WITH_BODIES = (b"POST", b"PUT", b"PATCH")


class HeadScanner:
    """Counts a request head's line and headers as its bytes arrive; says which limit they pass."""

    def __init__(self, max_url: int, max_headers: int, max_header_bytes: int, max_body: int):
        self.max_url, self.max_headers, self.max_header_bytes = max_url, max_headers, max_header_bytes
        self.max_body = max_body
        self.reset()

    def reset(self) -> None:
        self.received = 0             # bytes of this head so far
        self.request_line = bytearray()
        self.line_done = False
        self.headers = 0
        self.header_bytes = 0
        self.current = b""            # the first bytes of the header line being read (its name, or blank?)
        self.has_length = False       # a Content-Length header came
        self.chunked = False          # a Transfer-Encoding header came
        self.unframed = False         # a method that sends a body, with no Content-Length: it has none
        self.end = 0                  # where the head ended in the last bytes fed
        self.done = False

    def feed(self, data: bytes) -> tuple[int, str] | None:
        """Account for `data`; (status, message) when it passes a limit.  Stops at the head's blank line."""
        position, size = 0, len(data)
        if not self.request_line:
            # Empty lines before a request are ignored (RFC 9112, 2.2): skipped at once, and a few only, so that
            # a client cannot keep the loop busy scanning a stream of them until the header timeout.
            position = size - len(data.lstrip(b"\r\n"))
            self.received += position
            if self.received > MAX_EMPTY_LEAD:
                return 400, f"malformed request: over {MAX_EMPTY_LEAD} bytes of empty lines before the request line"
        while position < size and not self.done:
            newline = data.find(b"\n", position)
            end = size if newline < 0 else newline + 1
            piece = data[position:end]
            self.received += len(piece)
            position = end
            if not self.line_done:
                self.request_line += piece
                if len(self.request_line) > self.max_url + 2:
                    return 414, f"request line over {self.max_url} bytes"
                if newline >= 0:
                    self.line_done = True
                    refusal = self._check_version()
                    if refusal:
                        return refusal
                continue
            self.header_bytes += len(piece)
            if len(self.current) < 64:
                self.current += piece[:64]
            if self.header_bytes > self.max_header_bytes + 2:  # + the blank line
                return 431, f"request headers over {self.max_header_bytes} bytes"
            if newline >= 0:
                if self.current in (b"\r\n", b"\n"):
                    self.done = True
                    self.end = position
                    return self._check_framing()
                refusal = self._header_done()
                if refusal:
                    return refusal
        return None

    def _header_done(self) -> tuple[int, str] | None:
        self.headers += 1
        if self.headers > self.max_headers:
            return 431, f"more than {self.max_headers} request headers"
        name, _, value = self.current.lower().partition(b":")
        self.current = b""
        self.chunked = self.chunked or name == b"transfer-encoding"
        if name == b"content-length":
            self.has_length = True
            value = value.strip()
            if value.isdigit() and int(value) > self.max_body:  # a malformed one: the parser's 400
                return 413, f"body over {self.max_body} bytes"
        return None

    def _check_framing(self) -> tuple[int, str] | None:
        """Bodies come with a Content-Length only: a chunked one is refused before its bytes are parsed.
        A POST without a length has no body (RFC 9112, 6.3): `unframed`, so that what its client sends
        after the head is not read as the next request."""
        if self.chunked:
            return 411, "Transfer-Encoding (a chunked body) is not accepted: send the body with a Content-Length"
        self.unframed = self.request_line.split(b" ", 1)[0] in METHODS_WITH_BODIES and not self.has_length
        return None

    def _check_version(self) -> tuple[int, str] | None:
        parts = bytes(self.request_line).rstrip(b"\r\n").split(b" ")
        if len(parts) == 2:  # METHOD TARGET: HTTP/0.9, which aiohttp would answer (with headers) as "HTTP/0.9 200"
            return 505, "a request line without an HTTP version (HTTP/0.9) is not supported: use HTTP/1.1"
        if len(parts) == 3 and parts[2].startswith(b"HTTP/") and parts[2] not in HTTP_VERSIONS:
            return 505, f"HTTP version {ascii_excerpt(parts[2][5:], 10)} is not supported: use HTTP/1.1"
        return None


class LimitedRequestHandler(web_protocol.RequestHandler):
    """aiohttp's HTTP protocol with the server's limits; created by `HttpServer` for each connection."""

    def __init__(self, manager, *, owner: "HttpServer", **kwargs: Any):
        super().__init__(manager, **kwargs)
        self.owner = owner
        limits = owner.limits
        self.head = HeadScanner(limits.max_url, limits.max_headers, limits.max_header_bytes, limits.max_body)
        self.address = "?"
        self.admitted = False
        self.refused = False          # answered by us (not aiohttp): only draining until closed
        self.dropping = False         # after a head that announced no body: the rest is dropped, then closed
        self.answers = 0              # answers finished on this connection
        self.in_request = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_deadline = 0.0
        self._idle_deadline: float | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._lingered = 0
        self._own_transport: Any = None

    # ------------------------------------------------------------ the connection

    def connection_made(self, transport) -> None:
        self._own_transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else "?"
        refusal = self.owner.connections.admit(self.address)
        if refusal is not None:
            self.refused = True
            self.owner.count_refusal(503)
            self._write_refusal(503, refusal, {"Retry-After": "1"})
            return
        self.admitted = True
        self.owner.protocols.add(self)
        super().connection_made(transport)
        self.expect_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        self._cancel_send_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if not self.admitted:
            return
        self.admitted = False
        self.owner.protocols.discard(self)
        self.owner.connections.release(self.address)
        if (exc is not None or self.in_request) and not self.refused:
            self.owner.dropped += 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self._own_transport.close()
            return
        if self.dropping:
            return
        if not self.head.done:
            refusal = self.head.feed(data)
            if refusal is not None:
                self.refuse(*refusal)
                return
            if self.head.done:
                self._cancel_head_timer()
                if self.head.unframed:  # a body it did not announce would be read as the next request
                    self.dropping = True
                    data = data[:self.head.end]
        super().data_received(data)

    def eof_received(self):
        if self.refused:
            self._own_transport.close()
        return super().eof_received()

    # ------------------------------------------------------------ the send timeout

    def pause_writing(self) -> None:
        """The send buffer is full: the client has send_timeout seconds to read some of it."""
        super().pause_writing()
        self._cancel_send_timer()
        self._send_timer = self._loop.call_later(self.owner.limits.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        self._cancel_send_timer()
        super().resume_writing()

    def _cancel_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timed_out(self) -> None:
        self._send_timer = None
        self.owner.log.debug("http %s: cut off: nothing of its answer read for %g s", self.address,
                             self.owner.limits.send_timeout)
        if self._own_transport is not None:
            self._own_transport.abort()  # close() would wait for the unread bytes to go

    # ------------------------------------------------------------ the header timeout

    def expect_head(self, after_answer: bool = False) -> None:
        """A request head is due within header_timeout (at the start, and after each answer kept alive).

        After an answer, a connection that sends nothing for keepalive_timeout is closed silently.
        """
        limits = self.owner.limits
        now = self._loop.time()
        self.head.reset()
        self._head_deadline = now + limits.header_timeout
        self._idle_deadline = now + limits.keepalive_timeout if after_answer else None
        self._arm_head_timer(min(self._head_deadline, self._idle_deadline or self._head_deadline))

    def _arm_head_timer(self, when: float) -> None:
        self._cancel_head_timer()
        self._head_timer = self._loop.call_at(when, self._head_timed_out)

    def request_started(self) -> None:
        """The server began handling a request (its head arrived, maybe pipelined before the last answer)."""
        self.head.done = True
        self._cancel_head_timer()
        self.in_request = True

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.refused or self.head.done or self._own_transport is None or self._own_transport.is_closing():
            return
        if self.answers and self.head.received == 0:
            self.force_close()  # an idle keep-alive connection: nobody is waiting for an answer
            return
        if self._loop.time() < self._head_deadline:
            self._arm_head_timer(self._head_deadline)
            return
        self.refuse(408, f"the request head did not arrive within {self.owner.limits.header_timeout:g} s")

    # ------------------------------------------------------------ refusals of our own

    def refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        """Answer `{"error": message}` now, without aiohttp (no request was parsed), and close."""
        self.refused = True
        self.owner.count_refusal(status)
        self.owner.log.debug("http %s: %d %s", self.address, status, message)
        self._write_refusal(status, message, headers)

    def _write_refusal(self, status: int, message: str, headers: dict[str, str] | None) -> None:
        transport = self._own_transport
        self._cancel_head_timer()
        try:
            transport.write(raw_error(status, message, headers))
            if transport.can_write_eof():
                transport.write_eof()
        except (OSError, RuntimeError):
            transport.close()
            return
        self._linger_timer = self._loop.call_later(LINGER_SECONDS, transport.close)

    # ------------------------------------------------------------ answers

    async def finish_response(self, request, resp, start_time):
        body_unread = not request.content.is_eof() or self.dropping
        if body_unread and hasattr(resp, "force_close"):
            resp.force_close()  # what the client still sends is drained (lingering_time), then closed
        result = await super().finish_response(request, resp, start_time)
        self.in_request = False
        self.answers += 1
        if getattr(resp, "keep_alive", False) and not body_unread and self.transport is not None:
            self.expect_head(after_answer=True)
        return result

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None):
        """aiohttp's refusals (a request its parser refuses) and its last resort: JSON, never HTML."""
        if isinstance(exc, HttpProcessingError):
            status = 431 if isinstance(exc, LineTooLong) else (exc.code or status)
            detail = (exc.message or "").split("\n", 1)[0].rstrip(":") or "malformed request"
            text = f"malformed request: {ascii_excerpt(detail, 120)}"
            if not isinstance(exc, BadHttpMethod):
                self.owner.log.debug("http %s: %d %s", self.address, status, text)
        elif status >= 500:
            if exc is not None:
                self.owner.errors.report(exc)
            text = "internal error (logged on the server)" if status == 500 else "the request took too long"
        else:
            text = message or "refused"
        if request.writer.output_size > 0:  # an answer has begun: the connection cannot carry another
            raise ConnectionError("an answer was already being sent")
        self.owner.count_refusal(status)
        response = error_response(status, text)
        response.force_close()
        return response
