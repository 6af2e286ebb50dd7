"""An independent MQTT client (paho, own network thread) that watches what nodes publish."""

from __future__ import annotations

import json
import threading
import time
import uuid

import paho.mqtt.client as mqtt


class Observer:
    def __init__(self, port: int, topics=("#",), protocol=mqtt.MQTTv5):
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"observer-{uuid.uuid4().hex[:8]}",
                                  protocol=protocol)
        self._subscribed = threading.Event()
        self.client.reconnect_delay_set(0.1, 1)  # back at once after a test restarts the broker
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("observer could not subscribe")

    def _on_message(self, client, userdata, message):
        with self._lock:
            self.messages.append(message)
            self._lock.notify_all()

    def wait_for(self, topic: str, payload: bytes | str | None = None, timeout: float = 10.0, since: int = 0):
        """The first message (from index `since`) on `topic` (with `payload`), or TimeoutError."""
        if isinstance(payload, str):
            payload = payload.encode()
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for message in self.messages[since:]:
                    if mqtt.topic_matches_sub(topic, message.topic) and (payload is None or message.payload == payload):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(m.topic, m.payload[:60]) for m in self.messages[-10:]]
                    raise TimeoutError(f"no message on {topic} ({payload!r}) within {timeout} s; last seen: {seen}")
                self._lock.wait(remaining)

    def count(self, topic: str) -> int:
        with self._lock:
            return sum(1 for m in self.messages if mqtt.topic_matches_sub(topic, m.topic))

    def publish(self, topic: str, payload, qos: int = 1, retain: bool = False, properties=None):
        info = self.client.publish(topic, payload, qos, retain, properties)
        info.wait_for_publish(10)
        return info

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def next_payload(observer: Observer, topic: str, condition=lambda payload: True, since: int = 0,
                 timeout: float = 15) -> dict:
    """The first JSON payload on `topic` from index `since` that meets `condition` (a bound on failure only)."""
    deadline = time.monotonic() + timeout
    while True:
        for message in observer.messages[since:]:
            if message.topic == topic and message.payload and condition(payload := json.loads(message.payload)):
                return payload
        if time.monotonic() > deadline:
            seen = [(m.topic, m.payload[:200]) for m in observer.messages[since:] if m.topic == topic][-3:]
            raise TimeoutError(f"no such message on {topic}; last ones: {seen}")
        time.sleep(0.02)
