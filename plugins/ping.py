"""Answers pings, so that a server (or any MQTT client) can tell a live node from a frozen one.

A ping is a message on `<prefix>/nodes/<id>/cmd/ping` or `<prefix>/broadcast/ping`
with an optional JSON object payload, e.g. `{"seq": 7}`.  The answer goes to the
MQTT v5 response topic when the ping carries one, else to
`<prefix>/nodes/<id>/reply/ping`, as `{"node": id, "seq": 7, "time": ...}`.
"""

from __future__ import annotations

import time

from pidaemon import hookimpl
from pidaemon.bus import Message, PayloadError, Subscription
from pidaemon.schema import Integer, Section


class PingPlugin:
    config_schema = Section({
        "qos": Integer(min=0, max=1, default=1, doc="QoS of the answers"),
    })

    def __init__(self, node, config):
        self.node = node
        self.qos = config["qos"]
        self.answered = 0

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topics.command(node.id, "ping")), Subscription(node.topics.broadcast("ping"))]

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        request = message.json() if message.payload else {}
        if not isinstance(request, dict):
            raise PayloadError(f"{message.topic}: expected a JSON object, got {type(request).__name__}")
        answer = {"node": node.id, "seq": request.get("seq"), "time": time.time()}
        topic = message.response_topic or node.topics.reply(node.id, "ping")
        props = {"correlation_data": message.correlation_data} if message.correlation_data else {}
        node.publish(topic, answer, qos=self.qos, **props)
        self.answered += 1
