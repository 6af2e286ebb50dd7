"""The page's files: served from memory with an ETag, and under the server's send timeout like any answer."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp

from pidaemon_plugins import dashboard
from tests.support.nodes import make_daemon
from tests.support.waiting import wait_until

STATIC = Path(dashboard.__file__).parent / "static"


def test_the_files_are_the_packages_and_a_known_one_is_not_sent_again(broker, dashboard_http):
    async def scenario():
        server = make_daemon("server", broker.url, role="server", plugins=dashboard_http.plugins())
        await server.start()
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(dashboard_http.url("/dashboard/dashboard.js")) as answer:
                    body, etag = await answer.read(), answer.headers["ETag"]
                    assert answer.headers["Content-Type"].startswith("text/javascript")
                async with session.get(dashboard_http.url("/dashboard/dashboard.js"),
                                       headers={"If-None-Match": etag}) as again:
                    assert (again.status, await again.read()) == (304, b"")
                async with session.get(dashboard_http.url("/")) as page:
                    assert await page.read() == (STATIC / "index.html").read_bytes()
                    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
                async with session.get(dashboard_http.url("/dashboard/..%2Fplugin.py")) as outside:
                    assert outside.status == 404 and (await outside.json())["error"]
            return body
        finally:
            await server.shutdown()

    assert asyncio.run(scenario()) == (STATIC / "dashboard.js").read_bytes()


def test_a_client_that_asks_for_the_files_and_never_reads_is_cut_off(broker, dashboard_http):
    """Before: the files went out with sendfile, which the send timeout did not see: a client that asked for
    dashboard.js 300 times over and read nothing held its connection for as long as it liked."""
    plugins = dashboard_http.plugins()
    plugins["http"]["send_timeout"] = 0.5
    request = b"GET /dashboard/dashboard.js HTTP/1.1\r\nHost: x\r\n\r\n"

    async def scenario():
        server = make_daemon("server", broker.url, role="server", plugins=plugins)
        await server.start()
        http = server.plugin("http").server
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            await asyncio.to_thread(sock.connect, ("127.0.0.1", dashboard_http.port))
            await asyncio.to_thread(sock.sendall, request * 300)
            await wait_until(lambda: http.open_connections == 1, 10, what="the connection")
            await wait_until(lambda: http.open_connections == 0, 20, what="the client that never reads cut off")
        finally:
            sock.close()
            await server.shutdown()

    asyncio.run(scenario())
