"""Answers pings, so that a server (or any MQTT client) can tell a live node from a frozen one.

A ping is a message on `<prefix>/nodes/<id>/cmd/ping` or `<prefix>/broadcast/ping`
with an optional JSON object payload, e.g. `{"seq": 7}` (`seq`: an integer, 0 or more).  The answer goes to the
MQTT v5 response topic when the ping carries one, else to
`<prefix>/nodes/<id>/reply/ping`, as `{"node": id, "seq": 7, "time": ..., "delay": ...}`.

A ping may ask for `"spread": s` (seconds; more than MAX_PING_SPREAD counts as
MAX_PING_SPREAD): the node then answers after a random delay of up to s, and says
how long it waited in `delay`. A broadcast ping to a thousand nodes otherwise brings a thousand
answers to the server in the same few milliseconds, and whatever the server
was doing (dispatching Warble jobs) waits behind them.
"""

from __future__ import annotations

import asyncio
import random
import time

from pidaemon import hookimpl
from pidaemon.bus import Message, PayloadError, Subscription
from pidaemon.schema import Integer, settings
from pidaemon.topics import MAX_PING_SPREAD

MAX_DELAYED = 100   # answers waiting at once; beyond that (a ping flood) answers go out at once
MAX_SEQ = 2 ** 63 - 1


def requested_seq(request: dict, topic: str) -> int | None:
    """The ping's number, echoed in the answer: an integer 0 or more (or none), never whatever the ping held."""
    seq = request.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ):
        raise PayloadError(f"{topic}: seq must be an integer from 0 to {MAX_SEQ}, got {repr(seq)[:40]}")
    return seq


def requested_spread(request: dict, topic: str) -> float:
    spread = request.get("spread", 0)
    if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not spread >= 0:
        raise PayloadError(f"{topic}: spread must be a number of seconds, 0 or more, got {spread!r}")
    return min(float(spread), MAX_PING_SPREAD)


@settings
class PingSettings:
    qos: int = Integer(min=0, max=1, default=1, doc="QoS of the answers")


class PingPlugin:
    config_schema = PingSettings

    def __init__(self, node, config: PingSettings):
        self.node = node
        self.config = config
        self.answered = 0
        self._delayed: dict[object, asyncio.TimerHandle] = {}   # answers waiting for their moment

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topics.command(node.id, "ping")), Subscription(node.topics.broadcast("ping"))]

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        request = message.json() if message.payload else {}
        if not isinstance(request, dict):
            raise PayloadError(f"{message.topic}: expected a JSON object, got {type(request).__name__}")
        requested_seq(request, message.topic)
        spread = requested_spread(request, message.topic)
        if not spread or len(self._delayed) >= MAX_DELAYED:
            self._answer(node, message, request, 0.0)
            return
        delay, token = random.uniform(0, spread), object()
        self._delayed[token] = asyncio.get_running_loop().call_later(
            delay, self._answer_later, token, node, message, request, delay)

    @hookimpl
    def pidaemon_shutdown(self, node):
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()

    def _answer_later(self, token: object, node, message: Message, request: dict, delay: float) -> None:
        del self._delayed[token]
        self._answer(node, message, request, delay)

    def _answer(self, node, message: Message, request: dict, delay: float) -> None:
        answer = {"node": node.id, "seq": request.get("seq"), "time": time.time(), "delay": round(delay, 4)}
        topic = message.response_topic or node.topics.reply(node.id, "ping")
        props = {"correlation_data": message.correlation_data} if message.correlation_data else {}
        node.publish(topic, answer, qos=self.config.qos, **props)
        self.answered += 1
