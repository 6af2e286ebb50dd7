"""The Warble HTTP API against hostile clients: raw sockets on loopback, a real in-process server.

Each test names a class of attack and tries several members of it: a body
whose length is missing, negative, malformed, conflicting, too large or
chunked; JSON that `json` cannot take; request lines and headers past their
limits; clients that trickle, that never send, that open too many connections,
that leave without reading the answer.  Every refusal must be JSON with the
right status, and nothing may reach the log as a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
import struct
import threading
import time

import pytest

from pidaemon.daemon import DaemonError
from tests.support.mosquitto import free_port
from tests.support.nodes import make_daemon
from tests.support.warble_cluster import InProcessCluster, server_plugins

MAX_BODY = 8192  # warble_http's default


def with_api(broker, tmp_path, check, **http):
    """Run `check(port, plugin)` in a thread while a server with the HTTP API serves on loopback."""
    port = free_port()

    async def scenario():
        section = {"listen": f"127.0.0.1:{port}", **http}
        async with InProcessCluster(broker.url, tmp_path, workers=0, more_plugins={"warble_http": section}) as cluster:
            return await asyncio.to_thread(check, port, cluster.server.plugin("warble_http"))

    return asyncio.run(scenario())


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The whole answer, up to the server's close (the socket's timeout bounds a server that never answers)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            if data:
                break
            raise
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def exchange(port: int, data: bytes, source: str = "127.0.0.1") -> tuple[int, dict]:
    """Send `data` and read the answer without closing our side: the server must answer before EOF."""
    with connect(port, source) as sock:
        sock.sendall(data)
        status, headers, body = read_response(sock)
    assert headers.get("content-type") == "application/json", (status, headers, body[:200])
    return status, json.loads(body)


def post(path: str, headers: list[str], body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode() + body


def no_tracebacks(capfd, caplog) -> None:
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err[-2000:]
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING and "http" in r.getMessage().lower()]
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert not loud, [r.getMessage() for r in loud]


def test_a_body_is_refused_by_its_length_before_it_is_read(broker, tmp_path, capfd, caplog):
    """Content-Length missing, negative, malformed, conflicting, too large, or chunked: refused, body unread.

    The client keeps its connection open after what it sends: a server that reads until EOF
    (`Content-Length: -1`) never answers, and the test fails on its socket timeout.
    """
    body = b'{"user": "mallory", "source": "PRINT(1)"}' + b" " * 65536  # more than any limit
    json_type = "Content-Type: application/json"
    cases = {
        "negative": ([json_type, "Content-Length: -1"], 400, "bad Content-Length '-1'"),
        "signed": ([json_type, "Content-Length: +41"], 400, "bad Content-Length '+41'"),
        "not a number": ([json_type, "Content-Length: 1e3"], 400, "bad Content-Length"),
        "underscore": ([json_type, "Content-Length: 4_1"], 400, "bad Content-Length"),
        "unicode digits": ([json_type, "Content-Length: ٤١"], 400, "bad Content-Length"),
        "missing": ([json_type], 411, "a body needs a Content-Length"),
        "chunked": ([json_type, "Transfer-Encoding: chunked"], 411, "Transfer-Encoding"),
        "chunked and a length": ([json_type, "Transfer-Encoding: chunked", "Content-Length: 41"], 411,
                                 "Transfer-Encoding"),
        "conflicting": ([json_type, "Content-Length: 41", "Content-Length: 42"], 400, "conflicting"),
        "over the limit": ([json_type, f"Content-Length: {MAX_BODY + 1}"], 413, f"body over {MAX_BODY} bytes"),
        "huge": ([json_type, "Content-Length: 600000000"], 413, f"body over {MAX_BODY} bytes"),
        "absurd": ([json_type, "Content-Length: " + "9" * 40], 413, f"body over {MAX_BODY} bytes"),
    }

    def check(port, plugin):
        answers = {name: exchange(port, post("/warbles", headers, body)) for name, (headers, _, _) in cases.items()}
        # Still serving, and a body of exactly the limit is fine.
        source = b'{"user": "ada", "source": "PRINT(1)"}'
        exact = source + b" " * (MAX_BODY - len(source))
        fine = exchange(port, post("/warbles", [json_type, f"Content-Length: {len(exact)}"], exact))
        return answers, fine

    answers, fine = with_api(broker, tmp_path, check)
    for name, (_, status, message) in cases.items():
        assert answers[name][0] == status, (name, answers[name])
        assert message in answers[name][1]["error"], (name, answers[name])
    assert fine[0] == 202 and fine[1]["status"] == "queued"
    no_tracebacks(capfd, caplog)


def test_json_that_the_parser_cannot_take_is_a_400_not_a_dropped_connection(broker, tmp_path, capfd, caplog):
    nested = "[" * 4000 + "]" * 4000
    bodies = {
        "4000 levels deep": ('{"user": "m", "source": ' + nested + "}", "nested deeper than 32 levels"),
        "deep inside a field": ('{"source": "PRINT(1)", "id": ' + "[{\"a\":" * 900 + "}]" * 900 + "}",
                                "nested deeper than 32 levels"),
        "an integer of 5000 digits": ('{"user": "m", "source": "PRINT(1)", "id": ' + "7" * 5000 + "}",
                                      "not acceptable JSON"),
        "not JSON": ("{not json", "body is not JSON"),
        "brackets in strings are not nesting": ('{"user": "m", "source": "' + "[" * 4000 + '"}', None),
    }

    def check(port, plugin):
        answers = {}
        for name, (text, _) in bodies.items():
            data = text.encode()
            answers[name] = exchange(port, post("/warbles", ["Content-Type: application/json",
                                                             f"Content-Length: {len(data)}"], data))
        return answers

    answers = with_api(broker, tmp_path, check)
    for name, (_, message) in bodies.items():
        status, answer = answers[name]
        if message is None:
            assert status in (202, 422) and "id" in answer, (name, answers[name])  # reached the service
        else:
            assert status == 400 and message in answer["error"], (name, answers[name])
    no_tracebacks(capfd, caplog)


def test_request_lines_headers_and_queries_past_their_limits(broker, tmp_path, capfd, caplog):
    def get(target: str, headers: list[str] = ()) -> bytes:
        return (f"GET {target} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode()

    cases = {
        "long request line": (get("/warbles?user=" + "a" * 5000), 414, "request line over 4096 bytes"),
        "many headers": (get("/leaderboard", [f"X-H{i}: v" for i in range(60)]), 431, "more than 50 request headers"),
        "more headers than the standard library allows": (get("/leaderboard", [f"X-H{i}: v" for i in range(200)]),
                                                          431, "more than 50 request headers"),
        "one huge header": (get("/leaderboard", ["X-Big: " + "b" * 20000]), 431, "request headers over 16384 bytes"),
        "headers over their total": (get("/leaderboard", [f"X-H{i}: " + "c" * 800 for i in range(30)]), 431,
                                     "request headers over 16384 bytes"),
        "many query parameters": (get("/warbles?user=a&" + "&".join(f"p{i}=1" for i in range(100))), 400,
                                  "more than 16 query parameters"),
        "a malformed request line": (b"GARBAGE\r\n\r\n", 400, "Bad request"),
        "a request version from the future": (b"GET /leaderboard HTTP/2.0\r\n\r\n", 505, "Invalid HTTP version"),
        "another method": (b"DELETE /warbles HTTP/1.1\r\nHost: x\r\n\r\n", 405,
                           "method DELETE is not allowed: use GET or POST"),
        "a method with control characters": (b"\x1bX /warbles HTTP/1.1\r\n\r\n", 405, "method \\x1bX is not"),
        "an unknown route": (get("/nowhere"), 404, "no route /nowhere"),
    }

    def check(port, plugin):
        answers = {name: exchange(port, data) for name, (data, _, _) in cases.items()}
        return answers, exchange(port, get("/warbles?user=ada")), dict(plugin.refused)

    answers, history, refused = with_api(broker, tmp_path, check)
    for name, (_, status, message) in cases.items():
        assert answers[name][0] == status, (name, answers[name])
        assert message in answers[name][1]["error"], (name, answers[name])
    assert history == (200, {"user": "ada", "jobs": []})
    assert refused[431] == 4 and refused[414] == 1
    no_tracebacks(capfd, caplog)


def trickle(port: int, start: bytes, byte: bytes = b"a", pause: float = 0.05, rounds: int = 400):
    """Send `start`, then one byte every `pause` s until the server answers or closes: (status, answer) or None."""
    with connect(port) as sock:
        sock.sendall(start)
        sock.settimeout(pause)
        for _ in range(rounds):  # a bound on failure: the server should close long before
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
                return None  # closed without an answer
            except (TimeoutError, BlockingIOError):
                pass
            except ConnectionResetError:
                return None
            try:
                sock.send(byte)
            except OSError:
                break
        else:
            raise AssertionError(f"the server still held the connection after {rounds} bytes")
        sock.settimeout(10)
        status, _, body = read_response(sock)
        return status, json.loads(body)


def test_a_slow_or_silent_client_is_cut_off_and_cannot_pin_a_thread(broker, tmp_path, capfd, caplog):
    def check(port, plugin):
        silent = trickle(port, b"", byte=b"", rounds=400)  # connects and sends nothing
        slow_headers = trickle(port, b"GET /leaderboard HTTP/1.1\r\nX-Slow: ")
        slow_line = trickle(port, b"GET /warbles?user=")
        body = b'{"user": "m", "source": "PRINT(1)"}'
        slow_body = trickle(port, post("/warbles", ["Content-Type: application/json", "Content-Length: 4000"], body))
        deadline = time.monotonic() + 10
        while plugin.server.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        return silent, slow_headers, slow_line, slow_body, plugin.server.connections

    *answers, left_open = with_api(broker, tmp_path, check, request_timeout=0.5)
    for answer in answers:
        assert answer == (408, {"error": "the request did not arrive within 0.5 s"}), answers
    assert left_open == 0
    no_tracebacks(capfd, caplog)


def answered(sockets: list[socket.socket], wanted: int, bound: float = 10.0) -> list[socket.socket]:
    """The sockets with something to read, once `wanted` of them have (or after `bound` seconds)."""
    deadline = time.monotonic() + bound
    ready: list[socket.socket] = []
    while len(ready) < wanted and time.monotonic() < deadline:
        ready = select.select(sockets, [], [], 0.1)[0]
    return ready


def test_connections_are_bounded_in_all_and_per_client(broker, tmp_path, capfd, caplog):
    """A client opening many connections gets 503s at once; the server's threads stay bounded; others get served."""
    def wait_connections(plugin, count):
        deadline = time.monotonic() + 10
        while plugin.server.connections != count and time.monotonic() < deadline:
            time.sleep(0.02)
        return plugin.server.connections

    def check(port, plugin):
        results = {}
        idle = [connect(port, "127.0.0.1") for _ in range(2)]
        results["idle from one client"] = wait_connections(plugin, 2)
        results["one more from it"] = exchange(port, b"GET /leaderboard HTTP/1.0\r\n\r\n", "127.0.0.1")
        results["another client"] = exchange(port, b"GET /leaderboard HTTP/1.0\r\n\r\n", "127.0.0.2")
        wait_connections(plugin, 2)  # its slot is free again
        idle += [connect(port, "127.0.0.3") for _ in range(2)]
        results["idle in all"] = wait_connections(plugin, 4)
        results["a fifth client"] = exchange(port, b"GET /leaderboard HTTP/1.0\r\n\r\n", "127.0.0.4")
        for sock in idle:
            sock.close()
        results["after they left"] = wait_connections(plugin, 0)
        # A flood from one address: all but two answered 503 at once, by the accepting thread.
        flood = [connect(port, "127.0.0.5") for _ in range(60)]
        ready = answered(flood, 58)
        results["flood answered"] = len(ready)
        results["flood served"] = plugin.server.connections
        results["flood answers"] = {read_response(sock)[0] for sock in ready}
        for sock in flood:
            sock.close()
        results["served again"] = exchange(port, b"GET /leaderboard HTTP/1.0\r\n\r\n", "127.0.0.6")
        return results

    results = with_api(broker, tmp_path, check, max_connections=4, max_connections_per_client=2,
                       request_timeout=60)
    assert results["idle from one client"] == 2
    assert results["one more from it"] == (503, {"error": "2 connections from 127.0.0.1 are open already; "
                                                          "try again in a moment"})
    assert results["another client"][0] == 200
    assert results["idle in all"] == 4
    assert results["a fifth client"] == (503, {"error": "busy: 4 connections are open; try again in a moment"})
    assert results["after they left"] == 0
    assert results["flood answered"] == 58 and results["flood served"] == 2
    assert results["flood answers"] == {503}
    assert results["served again"][0] == 200
    no_tracebacks(capfd, caplog)


def test_clients_that_leave_without_their_answer_cost_no_traceback(broker, tmp_path, capfd, caplog):
    def check(port, plugin):
        before = set(threading.enumerate())
        for i in range(100):
            sock = connect(port)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
            if i % 2:
                sock.sendall(b"GET /leaderboard HTTP/1.0\r\n\r\n")
            else:
                data = b'{"user": "gone", "source": "PRINT(1)"}'
                sock.sendall(post("/warbles", ["Content-Type: application/json", f"Content-Length: {len(data)}"], data))
            sock.close()
        deadline = time.monotonic() + 10  # until every request thread is done with its client
        while set(threading.enumerate()) - before and time.monotonic() < deadline:
            time.sleep(0.05)
        return exchange(port, b"GET /leaderboard HTTP/1.0\r\n\r\n")

    still = with_api(broker, tmp_path, check)
    assert still[0] == 200
    no_tracebacks(capfd, caplog)


@pytest.mark.parametrize("required", [False, True])
def test_a_taken_port_says_which_setting_to_change(broker, tmp_path, required):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    plugins = {**server_plugins(tmp_path), "warble_http": {"listen": f"127.0.0.1:{port}", "required": required}}

    async def scenario():
        server = make_daemon("server", broker.url, role="server", plugins=plugins)
        server.config["node"]["state_dir"] = str(tmp_path)
        try:
            await server.start()
            return server.info()["plugins"]["warble_http"]
        except DaemonError as exc:
            return str(exc)
        finally:
            await server.shutdown()

    try:
        outcome = asyncio.run(scenario())
    finally:
        taken.close()
    hint = "--set plugins.warble_http.listen=HOST:PORT"
    if required:
        assert isinstance(outcome, str) and f"cannot listen on 127.0.0.1:{port}" in outcome and hint in outcome
    else:
        assert outcome["state"] == "failed", outcome
        assert f"cannot listen on 127.0.0.1:{port}" in outcome["error"] and hint in outcome["error"]
