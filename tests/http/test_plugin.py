"""The `http` plugin in a daemon: routes from every plugin, conflicts named, a stop that never hangs."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from pidaemon import hookimpl
from pidaemon.daemon import DaemonError
from tests.support.mosquitto import free_port
from tests.support.nodes import make_daemon
from tests.support.plugins import catalog_with


class Greeter:
    def __init__(self, node, config):
        self.node = node

    @hookimpl
    async def pidaemon_http_routes(self, node):  # may be a coroutine
        return [web.get("/hello", self.hello), web.get("/live", self.live)]

    async def hello(self, request):
        return web.json_response({"hello": self.node.id})

    async def live(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("welcome")
        async for _ in ws:
            pass
        return ws


class AnotherGreeter(Greeter):
    @hookimpl
    def pidaemon_http_routes(self, node):
        return [web.get("/hello", self.hello)]


class BrokenGreeter(Greeter):
    @hookimpl
    def pidaemon_startup(self, node):  # after the http plugin took its routes
        raise RuntimeError("no greeting today")


def daemon(broker, port, **plugins):
    catalog = catalog_with(greeter=Greeter, another_greeter=AnotherGreeter, broken_greeter=BrokenGreeter)
    return make_daemon("web", broker.url, catalog=catalog,
                       plugins={"http": {"listen": f"127.0.0.1:{port}", "required": True}, **plugins})


def test_two_plugins_with_one_route_stop_the_http_plugin_naming_both(broker):
    async def scenario():
        node = daemon(broker, free_port(), greeter={}, another_greeter={})
        try:
            await node.start()
        except DaemonError as exc:
            return str(exc)
        finally:
            await node.shutdown()

    message = asyncio.run(scenario())
    assert 'required plugin "http" failed' in message
    assert 'route GET /hello is registered by both "greeter" and "another_greeter"' in message


def test_plugins_routes_are_served_and_a_stop_closes_websockets_going_away_without_waiting_on_clients(broker):
    port = free_port()

    async def scenario():
        node = daemon(broker, port, greeter={})
        await node.start()
        slow = []
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/hello") as response:
                    hello = response.status, await response.json()
                async with session.get(f"http://127.0.0.1:{port}/nowhere") as response:
                    missing = response.status, response.content_type
                for _ in range(5):  # clients in the middle of a request head
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(b"GET /hello HTTP/1.1\r\nX-Slow: ")
                    slow.append(writer)
                async with session.ws_connect(f"http://127.0.0.1:{port}/live") as ws:
                    first = (await ws.receive(timeout=5)).data
                    await asyncio.wait_for(node.shutdown(), 10)  # fails the test if it hangs
                    closing = await ws.receive(timeout=5)
                    # The frame's code: this client answers the close only now, the server did not wait for it.
                    return hello, missing, first, closing.type, closing.data, node.plugin("http").server.open_connections
        finally:
            for writer in slow:
                writer.close()
            await node.shutdown()

    hello, missing, first, kind, code, left = asyncio.run(scenario())
    assert hello == (200, {"hello": "web"})
    assert missing == (404, "application/json")
    assert first == "welcome"
    assert kind == aiohttp.WSMsgType.CLOSE and code == aiohttp.WSCloseCode.GOING_AWAY
    assert left == 0


def test_the_routes_of_a_plugin_that_failed_to_start_answer_503(broker):
    port = free_port()

    async def scenario():
        node = daemon(broker, port, broken_greeter={})
        await node.start()
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/hello") as response:
                    return response.status, await response.json()
        finally:
            await node.shutdown()

    assert asyncio.run(scenario()) == (503, {"error": 'the "broken_greeter" plugin that serves /hello is not running'})
