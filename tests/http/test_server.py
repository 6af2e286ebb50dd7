"""pidaemon.http's server against hostile and ordinary clients: raw sockets on loopback, no broker.

Each test starts an `HttpServer` with a few routes of its own on a free port
and speaks to it as a client would (or should not): every answer that is an
error must be JSON with its status, and the server must go on serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

import aiohttp
import pytest
from aiohttp import web

from pidaemon.http import HttpError, HttpLimits, HttpServer, RateLimit, RouteConflict, read_json
from pidaemon.http.rate_limit import RateLimiter
from tests.support.http_client import (closed_by_server, connect, exchange, exchange_raw, get, post, read_response,
                                       trickle)

LOG = logging.getLogger("test.http")


async def hello(request):
    return web.json_response({"hello": request.remote})


async def echo(request):
    return web.json_response({"echo": await read_json(request)})


async def boom(request):
    raise RuntimeError("a bug in a handler")


async def teapot(request):
    raise HttpError(418, "no coffee here", {"Retry-After": "7"})


ROUTES = [web.get("/hello", hello), web.post("/echo", echo), web.get("/boom", boom), web.get("/teapot", teapot)]


def serve(check, routes=ROUTES, **limits):
    """Run `check(port, server)` in a thread while a server with `routes` and `limits` serves on loopback."""
    async def scenario():
        server = HttpServer(HttpLimits(**limits), LOG)
        server.add_routes("test", routes)
        await server.start("127.0.0.1", 0)
        try:
            return await asyncio.to_thread(check, server.port, server)
        finally:
            await server.stop()

    return asyncio.run(scenario())


def no_tracebacks(capfd, caplog) -> None:
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]


def test_every_error_is_json_and_a_bug_is_one_500_and_one_log_line(capfd, caplog):
    cases = {
        "no route": (get("/nowhere"), 404, "no route /nowhere"),
        "a method the route does not take": (b"DELETE /hello HTTP/1.1\r\nHost: x\r\n\r\n", 405,
                                             "method DELETE is not allowed on /hello: use GET"),
        "a bug": (get("/boom"), 500, "internal error (logged on the server)"),
        "the same bug again": (get("/boom"), 500, "internal error (logged on the server)"),
        "a handler's own refusal": (get("/teapot"), 418, "no coffee here"),
        "garbage": (b"GARBAGE\r\n\r\n", 400, "malformed request"),
        "a stream of empty lines": (b"\r\n" * 5000, 400, "over 1024 bytes of empty lines before the request line"),
        "a few empty lines first": (b"\r\n\n\r\n" + get("/teapot"), 418, "no coffee here"),
        "a method with control characters": (b"\x1bX /hello HTTP/1.1\r\n\r\n", 400, "malformed request"),
        "a bad Content-Length": (post("/echo", ["Content-Length: -1"], b""), 400, "Content-Length"),
        "two Content-Lengths": (post("/echo", ["Content-Length: 2", "Content-Length: 3"], b"{}"), 400,
                                "Content-Length"),
        "a version from the future": (get("/hello", version="2.0"), 505, "HTTP version 2.0 is not supported"),
        "no version (HTTP/0.9)": (b"GET /hello\r\n\r\n", 505, "without an HTTP version (HTTP/0.9)"),
        "a long request line": (get("/hello?" + "a" * 5000), 414, "request line over 4096 bytes"),
        "many headers": (get("/hello", [f"X-H{i}: v" for i in range(60)]), 431, "more than 50 request headers"),
        "one huge header": (get("/hello", ["X-Big: " + "b" * 20000]), 431, "request headers over 16384 bytes"),
        "headers over their total": (get("/hello", [f"X-H{i}: " + "c" * 800 for i in range(30)]), 431,
                                     "request headers over 16384 bytes"),
    }

    def check(port, server):
        answers = {name: exchange_raw(port, data) for name, (data, _, _) in cases.items()}
        return answers, exchange(port, get("/hello")), dict(server.refused), server.errors.count

    with caplog.at_level(logging.DEBUG, logger="test.http"):
        answers, still, refused, errors = serve(check)
    for name, (_, status, message) in cases.items():
        code, headers, body = answers[name]
        assert code == status and headers["content-type"] == "application/json", (name, answers[name])
        assert message in json.loads(body)["error"], (name, answers[name])
    assert answers["a method the route does not take"][1]["allow"] in ("GET,HEAD", "HEAD,GET")
    assert answers["a handler's own refusal"][1]["retry-after"] == "7"
    assert still == (200, {"hello": "127.0.0.1"})
    assert errors == 2 and refused[500] == 2 and refused[431] == 3 and refused[404] == 1
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1 and "RuntimeError: a bug in a handler" in logged[0], logged
    no_tracebacks(capfd, caplog)


def test_slow_heads_and_bodies_get_408_and_idle_keepalive_is_closed(capfd, caplog):
    def check(port, server):
        results = {
            "silent": trickle(port, b"", byte=b""),
            "slow request line": trickle(port, b"GET /hello?x="),
            "slow headers": trickle(port, b"GET /hello HTTP/1.1\r\nX-Slow: "),
            "slow body": trickle(port, post("/echo", ["Content-Type: application/json", "Content-Length: 4000"],
                                            b'{"a": "')),
        }
        with connect(port) as sock:  # keep-alive: answered, then a slow second head
            sock.sendall(get("/hello"))
            results["first on keep-alive"] = read_response(sock)[0]
            sock.sendall(b"GET /hello HTTP/1.1\r\n")
            results["second head, slow"] = _status_and_json(sock)
        with connect(port) as sock:  # keep-alive: answered, then nothing
            sock.sendall(get("/hello"))
            read_response(sock)
            results["idle keep-alive closed"] = closed_by_server(sock)
            sock.settimeout(0)
        deadline = time.monotonic() + 10
        while server.open_connections and time.monotonic() < deadline:
            time.sleep(0.05)
        results["left open"] = server.open_connections
        return results

    results = serve(check, header_timeout=0.5, body_timeout=0.5, keepalive_timeout=0.3)
    head = (408, {"error": "the request head did not arrive within 0.5 s"})
    assert results["silent"] == head and results["slow request line"] == head and results["slow headers"] == head
    assert results["slow body"] == (408, {"error": "the request body did not arrive within 0.5 s"})
    assert results["first on keep-alive"] == 200 and results["second head, slow"] == head
    assert results["idle keep-alive closed"] is True
    assert results["left open"] == 0
    no_tracebacks(capfd, caplog)


def _status_and_json(sock):
    status, _, body = read_response(sock)
    return status, json.loads(body)


def test_a_body_is_refused_by_its_length_before_it_is_read(capfd, caplog):
    """The client sends only the head: a 413 or 411 must come without the body (the test would time out)."""
    json_type = "Content-Type: application/json"

    def check(port, server):
        return {
            "over max_body": exchange(port, post("/echo", [json_type, "Content-Length: 1000000000"], b"")),
            "no length": exchange(port, post("/echo", [json_type], b"")),
            "chunked": exchange(port, post("/echo", [json_type, "Transfer-Encoding: chunked"], b"")),
            "not UTF-8": exchange(port, post("/echo", [json_type, "Content-Length: 2"], b"\xff\xfe")),
            "not JSON": exchange(port, post("/echo", [json_type, "Content-Length: 9"], b"{not json")),
            "too deep": exchange(port, post("/echo", [json_type, "Content-Length: 200"], b"[" * 100 + b"]" * 100)),
            "fine": exchange(port, post("/echo", [json_type, "Content-Length: 8"], b'{"a": 1}')),
            "a PUT with no body where only GET goes": exchange(port, b"PUT /hello HTTP/1.1\r\nHost: x\r\n\r\n"),
            "a body it did not announce": unannounced_body(port),
        }

    answers = serve(check, max_body=1000)
    assert answers["over max_body"] == (413, {"error": "body over 1000 bytes"})
    assert answers["no length"] == (411, {"error": "a body needs a Content-Length"})
    assert answers["chunked"][0] == 411 and "Transfer-Encoding" in answers["chunked"][1]["error"]
    assert answers["not UTF-8"] == (400, {"error": "body is not UTF-8"})
    assert answers["not JSON"][0] == 400 and "body is not JSON" in answers["not JSON"][1]["error"]
    assert answers["too deep"] == (400, {"error": "body is JSON nested deeper than 32 levels"})
    assert answers["fine"] == (200, {"echo": {"a": 1}})
    # No Content-Length: no body (RFC 9112, 6.3). The route answers (405 here), and what follows the head
    # is never read as a request of its own: one answer (the route's 411), then the connection closes.
    assert answers["a PUT with no body where only GET goes"][0] == 405
    assert answers["a body it did not announce"] == (411, {"error": "a body needs a Content-Length"}, True)
    no_tracebacks(capfd, caplog)


def unannounced_body(port):
    """A POST without a Content-Length whose 'body' is a request, then garbage: (status, answer, nothing after)."""
    smuggled = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n{\"source\": \"PRINT(1)\"}\r\n\r\n"
    with connect(port) as sock:
        sock.sendall(post("/echo", ["Content-Type: application/json"], smuggled))
        status, _, body = read_response(sock)
        rest = b""
        while chunk := sock.recv(65536):  # until the server closes (the socket's timeout bounds it)
            rest += chunk
        return status, json.loads(body), rest == b""


def test_one_address_over_its_rate_gets_429_others_do_not():
    def check(port, server):
        with connect(port, "127.0.0.7") as sock:  # one keep-alive connection, many requests
            statuses = []
            for _ in range(5):
                sock.sendall(get("/hello"))
                status, headers, body = read_response(sock)
                statuses.append((status, headers.get("retry-after"), json.loads(body)))
        return statuses, exchange(port, get("/hello"), "127.0.0.8")

    statuses, other = serve(check, rate_limit=RateLimit(burst=3, per_second=0.01))
    assert [s for s, _, _ in statuses] == [200, 200, 200, 429, 429]
    assert statuses[3][1] == "100" and "over 0.01 requests a second from 127.0.0.7" in statuses[3][2]["error"]
    assert other[0] == 200


def test_the_rate_limiter_forgets_idle_addresses_and_stays_bounded():
    now = [0.0]
    limiter = RateLimiter(RateLimit(burst=2, per_second=1), max_addresses=100, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 1.0]
    for i in range(10_000):  # a spray of addresses
        limiter.take(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter.buckets) <= 100
    now[0] += 10  # every bucket full again: forgotten at the next request
    limiter.take("b")
    assert list(limiter.buckets) == ["b"]


CORS_ROUTES = ROUTES + [web.put("/hello", hello)]


def test_cors_for_configured_origins_only():
    allowed, other = "https://allowed.example", "https://evil.example"

    def check(port, server):
        def preflight(origin):
            return exchange_raw(port, (f"OPTIONS /hello HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n"
                                       "Access-Control-Request-Method: PUT\r\n\r\n").encode())
        return {
            "allowed": exchange_raw(port, get("/hello", [f"Origin: {allowed}"])),
            "other": exchange_raw(port, get("/hello", [f"Origin: {other}"])),
            "allowed, an error": exchange_raw(port, get("/nowhere", [f"Origin: {allowed}"])),
            "preflight allowed": preflight(allowed),
            "preflight other": preflight(other),
        }

    def plain(port, server):
        return exchange_raw(port, get("/hello", [f"Origin: {allowed}"]))

    answers = serve(check, routes=CORS_ROUTES, cors_origins=(allowed,))
    status, headers, _ = answers["allowed"]
    assert status == 200 and headers["access-control-allow-origin"] == allowed and headers["vary"] == "Origin"
    assert "access-control-allow-origin" not in answers["other"][1]
    assert answers["allowed, an error"][0] == 404
    assert answers["allowed, an error"][1]["access-control-allow-origin"] == allowed
    status, headers, _ = answers["preflight allowed"]
    assert status == 204 and headers["access-control-allow-origin"] == allowed
    assert set(headers["access-control-allow-methods"].split(", ")) >= {"GET", "PUT", "OPTIONS"}
    assert headers["access-control-allow-headers"] == "Content-Type"
    status, headers, body = answers["preflight other"]
    assert status == 403 and "access-control-allow-origin" not in headers and "not allowed" in json.loads(body)["error"]
    status, headers, _ = serve(plain)  # no origins configured: no CORS headers at all
    assert status == 200 and "access-control-allow-origin" not in headers and "vary" not in headers


def test_connections_are_capped_in_all_and_per_address():
    def check(port, server):
        results = {}
        idle = [connect(port, "127.0.0.1") for _ in range(2)]
        wait_connections(server, 2)
        results["third from one address"] = exchange_raw(port, get("/hello"), "127.0.0.1")
        results["another address"] = exchange(port, get("/hello"), "127.0.0.2")
        idle += [connect(port, "127.0.0.3") for _ in range(2)]
        wait_connections(server, 4)
        results["fifth in all"] = exchange(port, get("/hello"), "127.0.0.4")
        for sock in idle:
            sock.close()
        results["after they left"] = wait_connections(server, 0)
        results["served again"] = exchange(port, get("/hello"), "127.0.0.5")
        return results

    results = serve(check, max_connections=4, max_connections_per_client=2, header_timeout=60)
    status, headers, body = results["third from one address"]
    assert (status, headers["retry-after"]) == (503, "1")
    assert json.loads(body) == {"error": "2 connections from 127.0.0.1 are open already; try again in a moment"}
    assert results["another address"][0] == 200
    assert results["fifth in all"] == (503, {"error": "busy: 4 connections are open; try again in a moment"})
    assert results["after they left"] == 0 and results["served again"][0] == 200


def wait_connections(server, count, bound=10.0):
    deadline = time.monotonic() + bound
    while server.open_connections != count and time.monotonic() < deadline:
        time.sleep(0.02)
    return server.open_connections


async def websocket(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        await ws.send_str(message.data.upper())
    return ws


def test_a_websocket_outlives_the_header_timeout_and_is_closed_going_away_at_stop():
    async def scenario():
        server = HttpServer(HttpLimits(header_timeout=0.2, rate_limit=RateLimit(burst=1, per_second=0.01)), LOG)
        server.add_routes("test", [web.get("/ws", websocket)])
        await server.start("127.0.0.1", 0)
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{server.port}/ws") as ws:
                await asyncio.sleep(0.5)  # past the header timeout, and many messages past the rate limit
                answers = []
                for word in ("one", "two", "three"):
                    await ws.send_str(word)
                    answers.append((await ws.receive(timeout=5)).data)
                counted = server.open_connections
                stopping = asyncio.ensure_future(server.stop())
                closing = await ws.receive(timeout=5)
                await asyncio.wait_for(stopping, 10)
                return answers, counted, closing.type, ws.close_code

    answers, counted, kind, code = asyncio.run(scenario())
    assert answers == ["ONE", "TWO", "THREE"] and counted == 1
    assert kind == aiohttp.WSMsgType.CLOSE and code == aiohttp.WSCloseCode.GOING_AWAY


def test_a_websocket_is_refused_to_another_sites_page():
    """Browsers apply no CORS to WebSockets: the server refuses an upgrade from a page of another origin."""
    allowed = "https://allowed.example"

    async def scenario():
        server = HttpServer(HttpLimits(cors_origins=(allowed,)), LOG)
        server.add_routes("test", [web.get("/ws", websocket)])
        await server.start("127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.port}/ws"
        results = {}
        try:
            async with aiohttp.ClientSession() as session:
                for name, origin in [("no origin", None), ("its own page", f"http://127.0.0.1:{server.port}"),
                                     ("an allowed origin", allowed), ("another site", "https://evil.example"),
                                     ("another port", f"http://127.0.0.1:{server.port + 1}")]:
                    try:
                        async with session.ws_connect(url, origin=origin) as ws:
                            await ws.send_str("hi")
                            results[name] = (await ws.receive(timeout=5)).data
                    except aiohttp.WSServerHandshakeError as exc:
                        results[name] = exc.status
                async with session.get(url, headers={"Origin": "https://evil.example", "Upgrade": "websocket",
                                                     "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as answer:
                    results["the refusal"] = answer.status, await answer.json()
        finally:
            await server.stop()
        return results

    results = asyncio.run(scenario())
    assert results["no origin"] == results["its own page"] == results["an allowed origin"] == "HI"
    assert results["another site"] == results["another port"] == 403
    assert results["the refusal"] == (403, {"error": "a WebSocket from a page of https://evil.example is not "
                                                     "allowed (the http plugin's cors_origins)"})


def test_two_registrations_of_one_route_name_both_owners():
    server = HttpServer(HttpLimits(), LOG)
    server.add_routes("warble_http", [web.get("/leaderboard", hello)])
    with pytest.raises(RouteConflict, match='route GET /leaderboard is registered by both "warble_http" and "other"'):
        server.add_routes("other", [web.get("/leaderboard", hello)])
    with pytest.raises(RouteConflict, match='plugin "odd" gave .* as a route'):
        server.add_routes("odd", ["/not-a-route"])


async def big(request):
    return web.Response(body=b"x" * (32 << 20), content_type="application/octet-stream")


def test_a_client_that_never_reads_its_answer_is_cut_off_after_the_send_timeout(caplog):
    """Before: a client that asked for a large answer and read none of it held its connection for ever."""
    def check(port, server):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(get("/big"))
            deadline = time.monotonic() + 20  # bounds on failure: the server should cut it off within ~1 s
            while not server.connections.open and time.monotonic() < deadline:
                time.sleep(0.01)
            held = server.connections.open
            while server.connections.open and time.monotonic() < deadline:
                time.sleep(0.05)
            return held, server.connections.open

    caplog.set_level(logging.DEBUG, logger=LOG.name)
    assert serve(check, routes=[*ROUTES, web.get("/big", big)], send_timeout=0.5) == (1, 0)
    assert any("nothing of its answer read for 0.5 s" in r.getMessage() for r in caplog.records)
