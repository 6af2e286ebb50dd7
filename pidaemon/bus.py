"""The MQTT bus: one paho-mqtt 2.x client driven by the asyncio event loop.

paho's socket is watched with `add_reader`/`add_writer` instead of a network
thread per client, so a thousand simulated nodes share one loop.  Only the
blocking TCP/TLS connect runs in an executor thread.  The bus reconnects by
itself with capped exponential backoff and full jitter, subscribes again after
every reconnect, and keeps QoS 1 publishes made while disconnected (up to
`queue_limit`) to send them once connected; messages in flight when the
connection broke are re-sent by paho itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from .config import BrokerAddress
from .names import topic_name_problem

MISC_INTERVAL = 1.0  # seconds between paho's keepalive checks
CONNACK_TIMEOUT = 10.0  # seconds a broker has to answer the MQTT CONNECT once the TCP connection is up
CONNECT_ERRORS = (OSError, ssl.SSLError, socket.timeout, ValueError)
INVALID_TOPIC_LOG_INTERVAL = 60.0  # seconds between two log lines about refused topic names
SESSION_TAKEN_OVER = 142           # MQTT v5 DISCONNECT reason: another client connected with this client id
SHORT_CONNECTION = 2.0             # seconds: a connection the broker closes sooner was short
SHORT_CONNECTION_WINDOW = 60.0     # seconds in which...
SHORT_CONNECTIONS_FOR_TAKEOVER = 3  # ...this many short connections mean a takeover (MQTT 3.1.1)


# Why a device refuses a command that comes with the retain flag (see Subscription.retain_as_published).
RETAINED_COMMAND = ("a retained command is refused: it would be carried out again at every start "
                    "(clear it: mosquitto_pub -r -n -t TOPIC)")


class PayloadError(ValueError):
    """A message's payload is not what the receiver expects; says which topic."""


@dataclass(frozen=True)
class Subscription:
    topic: str
    qos: int = 1
    # MQTT v5: a retained message arrives with its retain flag even while this node is connected (by
    # default a broker clears it for subscribers already there).  For command topics, whose handlers
    # refuse retained commands, which would otherwise run again at every start.
    retain_as_published: bool = False


@dataclass
class Message:
    """A received message, independent of paho's types."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        try:
            return self.payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(f"{self.topic}: payload is not UTF-8 text (byte {exc.start})") from None

    def json(self) -> Any:
        text = self.text()  # raises its own PayloadError for bytes that are not UTF-8
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise PayloadError(f"{self.topic}: payload is not JSON: {exc.msg} at line {exc.lineno} "
                               f"column {exc.colno}") from None
        except (ValueError, RecursionError) as exc:  # nested too deep, or an integer of too many digits
            raise PayloadError(f"{self.topic}: payload is JSON this node will not read: "
                               f"{type(exc).__name__}: {str(exc)[:80]}") from None

    def json_object(self, max_bytes: int | None = None) -> dict[str, Any]:
        """The payload as a JSON object (a command's usual shape), at most `max_bytes` long."""
        if max_bytes is not None and len(self.payload) > max_bytes:
            raise PayloadError(f"{self.topic}: payload of {len(self.payload)} bytes, more than {max_bytes}")
        value = self.json()
        if not isinstance(value, dict):
            raise PayloadError(f"{self.topic}: expected a JSON object, got {type(value).__name__}")
        return value

    def user_property(self, name: str) -> str | None:
        for key, value in self.user_properties:
            if key == name:
                return value
        return None


def encode_payload(payload: Any) -> bytes:
    """bytes as they are, str as UTF-8, anything else as JSON."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload, separators=(",", ":"), default=str).encode("utf-8")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic matching, for routing each message to its plugins.

    Not paho's topic_matches_sub: that builds a matcher tree per call, and a
    process hosting a thousand simulated nodes routes every message this way.
    """
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2]
    if topic_filter == topic:
        return True
    filter_levels, topic_levels = topic_filter.split("/"), topic.split("/")
    if topic.startswith("$") and filter_levels[0] in ("+", "#"):
        return False          # wildcards do not match $SYS and other $ topics at the first level
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True       # also matches the parent: "a/#" matches "a"
        if i >= len(topic_levels) or (level != "+" and level != topic_levels[i]):
            return False
    return len(filter_levels) == len(topic_levels)


def full_jitter_delay(attempt: int, min_delay: float, max_delay: float, rng: random.Random) -> float:
    """AWS-style "full jitter": uniform in [0, min(cap, base * 2^attempt)]."""
    return rng.uniform(0, min(max_delay, min_delay * 2 ** min(attempt, 32)))


@dataclass
class BusSettings:
    client_id: str
    broker: BrokerAddress
    protocol: str = "5"
    keepalive: int = 30
    username: str | None = None
    password: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_insecure: bool = False
    session_expiry: int = 0
    queue_limit: int = 10000
    reconnect_min_delay: float = 0.5
    reconnect_max_delay: float = 60.0
    will_topic: str | None = None
    will_payload: bytes = b"offline"

    @classmethod
    def from_config(cls, mqtt_config: dict, *, client_id: str, broker: BrokerAddress,
                    will_topic: str | None, password: str | None) -> "BusSettings":
        tls = mqtt_config["tls"]
        return cls(
            client_id=mqtt_config["client_id"] or client_id, broker=broker,
            protocol=mqtt_config["protocol"], keepalive=mqtt_config["keepalive"],
            username=mqtt_config["username"], password=password,
            tls_ca_file=tls["ca_file"], tls_cert_file=tls["cert_file"], tls_key_file=tls["key_file"],
            tls_insecure=tls["insecure"], session_expiry=mqtt_config["session_expiry"],
            queue_limit=mqtt_config["queue_limit"],
            reconnect_min_delay=mqtt_config["reconnect"]["min_delay"],
            reconnect_max_delay=mqtt_config["reconnect"]["max_delay"],
            will_topic=will_topic,
        )


class Bus:
    """An MQTT connection that stays up on its own.

    `on_message(Message)`, `on_connected()` and `on_disconnected()` are called
    on the event loop, never inside a paho callback.
    """

    def __init__(self, settings: BusSettings, *, on_message: Callable[[Message], None],
                 on_connected: Callable[[], None] = lambda: None,
                 on_disconnected: Callable[[], None] = lambda: None,
                 log: logging.Logger | logging.LoggerAdapter | None = None):
        self.settings = settings
        self.log = log or logging.getLogger("pidaemon.bus")
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._filters: dict[str, int] = {}
        self._retain_as_published: set[str] = set()
        self._offline_queue: deque[tuple[str, bytes, int, bool, Properties | None]] = deque()
        self._rng = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task | None = None
        self._misc: asyncio.Task | None = None
        self._connection_lost = asyncio.Event()
        self._answered = asyncio.Event()   # the broker answered this attempt's CONNECT (accepted or refused)
        self._stopping = False
        self._connected = False
        self._watched_socket: int | None = None  # file descriptor
        self._pending_suback: int | None = None
        self._retarget_pending = False
        self._last_connection_was_up = False  # did the latest attempt get as far as a CONNACK?
        self._unacknowledged: set[int] = set()  # message ids of QoS 1/2 publishes not yet acknowledged
        self.connected_event = asyncio.Event()
        self.stats = {"connects": 0, "disconnects": 0, "refused_publishes": 0, "failed_attempts": 0,
                      "invalid_topics": 0, "taken_over": 0}
        self._invalid_topic_logged = float("-inf")
        self._connected_since = float("-inf")
        self._short_connections: deque[float] = deque()  # when connections closed right after opening
        self.client = self._make_client()

    # ------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        """Connected, and every subscription acknowledged by the broker."""
        return self._connected and self._pending_suback is None

    @property
    def queued(self) -> int:
        """QoS 1 messages waiting for a connection."""
        return len(self._offline_queue)

    @property
    def unacknowledged(self) -> int:
        """QoS 1 messages sent (or to be re-sent) but not yet acknowledged by the broker."""
        return len(self._unacknowledged)

    def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        self._loop = asyncio.get_running_loop()
        self._runner = self._loop.create_task(self._connection_loop(), name=f"bus:{self.settings.client_id}")
        self._misc = self._loop.create_task(self._misc_loop(), name=f"bus-misc:{self.settings.client_id}")

    async def wait_connected(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self.connected_event.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def retarget(self, broker: BrokerAddress) -> None:
        """Connect to `broker` from the next attempt on (the server announced another one)."""
        if broker.tls != self.settings.broker.tls:
            raise ValueError("cannot switch between mqtt:// and mqtts:// while running")
        self.settings.broker, self._retarget_pending = broker, True
        if self._connected:
            # Leaving on purpose is a clean disconnect, which does not fire the last will: say
            # `offline` on the broker left behind, or its retained status would say `online` for good.
            if self.settings.will_topic:
                self.client.publish(self.settings.will_topic, self.settings.will_payload, 1, True)
            self.client.disconnect()

    def subscribe(self, topic_filter: str, qos: int = 1, retain_as_published: bool = False) -> None:
        """Add a filter; it is (re)subscribed on every connection."""
        if retain_as_published:
            self._retain_as_published.add(topic_filter)
        if self._filters.get(topic_filter, -1) >= qos and not retain_as_published:
            return
        self._filters[topic_filter] = max(qos, self._filters.get(topic_filter, 0))
        if self._connected:
            self.client.subscribe([self._subscription(topic_filter)])

    def _subscription(self, topic_filter: str) -> tuple:
        qos = self._filters[topic_filter]
        if self.settings.protocol != "5":
            return topic_filter, qos
        return topic_filter, SubscribeOptions(qos=qos, retainAsPublished=topic_filter in self._retain_as_published)

    def publish(self, topic: str, payload: Any, qos: int = 0, retain: bool = False,
                properties: Properties | None = None) -> bool:
        """Send a message; False if it was refused (an invalid topic name, QoS 0 while offline,
        or the queue is full).

        While disconnected, QoS 1 and 2 messages wait in a queue of at most
        `queue_limit`; they are sent, in order, after the next connection.
        """
        problem = topic_name_problem(topic)
        if problem is not None:
            self._refuse_topic(topic, problem)
            return False
        data = encode_payload(payload)
        if self._connected:
            info = self.client.publish(topic, data, qos, retain, properties)
            if qos > 0:
                self._unacknowledged.add(info.mid)
            return info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN) and (qos > 0 or info.rc == 0)
        if qos == 0:
            return False
        if len(self._offline_queue) >= self.settings.queue_limit:
            self.stats["refused_publishes"] += 1
            self.log.warning("offline queue full (%d messages): refused a message for %s",
                             self.settings.queue_limit, topic)
            return False
        self._offline_queue.append((topic, data, qos, retain, properties))
        return True

    def _refuse_topic(self, topic: Any, problem: str) -> None:
        """A publish to an invalid topic name never reaches paho (the broker would drop the
        connection, and a retry would do it again): counted, and logged at most once a minute."""
        self.stats["invalid_topics"] += 1
        now = time.monotonic()
        if now - self._invalid_topic_logged < INVALID_TOPIC_LOG_INTERVAL:
            return
        self._invalid_topic_logged = now
        shown = repr(topic)[:100]
        self.log.warning("refused to publish to %s: %s (%d such refusals so far)", shown, problem,
                         self.stats["invalid_topics"])

    def properties(self, *, response_topic: str | None = None, correlation_data: bytes | None = None,
                   user_properties: dict[str, str] | None = None) -> Properties | None:
        """PUBLISH properties for MQTT v5 (None under 3.1.1, which has none)."""
        if self.settings.protocol != "5":
            return None
        props = Properties(PacketTypes.PUBLISH)
        if response_topic:
            props.ResponseTopic = response_topic
        if correlation_data is not None:
            props.CorrelationData = correlation_data
        for key, value in (user_properties or {}).items():
            props.UserProperty = (key, value)
        return props

    async def stop(self, final: list[tuple[str, Any, int, bool]] = (), timeout: float = 2.0) -> None:
        """Publish `final` messages (e.g. `offline`), wait for their delivery, disconnect."""
        self._stopping = True
        try:
            if self._connected:
                for topic, payload, qos, retain in final:
                    self.publish(topic, payload, qos, retain)
                # Wait for the broker to acknowledge everything sent at QoS 1, not only `final`.
                await self._wait_for(lambda: not self._unacknowledged, timeout)
                self.client.disconnect()
                await self._wait_for(lambda: self._watched_socket is None, timeout=0.5)
            undelivered = len(self._unacknowledged) + len(self._offline_queue)
            if undelivered:
                self.log.warning("stopping with %d QoS 1 messages not acknowledged by the broker", undelivered)
        finally:
            for task in (self._runner, self._misc):
                if task is not None:
                    task.cancel()
            self._unwatch_socket()
            self.client._sock_close()  # drop a half-open connection without a DISCONNECT
            self._connected = False

    # ------------------------------------------------------------ paho setup

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        v5 = s.protocol == "5"
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else s.session_expiry == 0,
            reconnect_on_failure=False,
        )
        client.max_queued_messages_set(0)  # the offline queue bounds what waits
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.broker.tls:
            client.tls_set(ca_certs=s.tls_ca_file, certfile=s.tls_cert_file, keyfile=s.tls_key_file)
            client.tls_insecure_set(s.tls_insecure)
        if s.will_topic:
            client.will_set(s.will_topic, s.will_payload, qos=1, retain=True)
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)
            if s.session_expiry:
                properties.SessionExpiryInterval = s.session_expiry
        client.connect_async(s.broker.host, s.broker.port, s.keepalive,
                             clean_start=not s.session_expiry if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                             properties=properties)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        client.on_subscribe = self._paho_subscribe
        client.on_publish = self._paho_publish
        client.on_socket_open = self._paho_socket_open
        client.on_socket_close = self._paho_socket_close
        client.on_socket_register_write = self._paho_register_write
        client.on_socket_unregister_write = self._paho_unregister_write
        return client

    # ------------------------------------------------------------ connection loop

    async def _connection_loop(self) -> None:
        attempt = 0
        while not self._stopping:
            self._connection_lost.clear()
            self._last_connection_was_up = False
            if self._retarget_pending:
                self._switch_client()
            # Close the previous socket here, on the loop, rather than in paho's
            # reconnect() in the executor thread.
            self.client._sock_close()
            self._answered.clear()
            try:
                await self._loop.run_in_executor(None, self.client.reconnect)
            except CONNECT_ERRORS as exc:
                self.stats["failed_attempts"] += 1
                level = logging.WARNING if attempt == 0 else logging.DEBUG
                self.log.log(level, "cannot reach broker %s: %s", self.settings.broker, exc)
            else:
                if await self._answer_in_time():
                    await self._connection_lost.wait()
                else:
                    self.stats["failed_attempts"] += 1
                    level = logging.WARNING if attempt == 0 else logging.DEBUG
                    self.log.log(level, "broker %s took the connection but did not answer the MQTT %s CONNECT "
                                 "within %g s (a broker that does not speak MQTT %s? set mqtt.protocol); trying "
                                 "again", self.settings.broker, self.settings.protocol, CONNACK_TIMEOUT,
                                 self.settings.protocol)
                    self.client._sock_close()
                if self.stats["connects"] and self._last_connection_was_up:
                    attempt = 0
            if self._stopping:
                return
            delay = full_jitter_delay(attempt, self.settings.reconnect_min_delay,
                                      self.settings.reconnect_max_delay, self._rng)
            attempt += 1
            self.log.debug("reconnecting in %.2f s (attempt %d)", delay, attempt)
            await asyncio.sleep(delay)


    async def _answer_in_time(self) -> bool:
        """Whether the broker answered the CONNECT (or the connection dropped) within CONNACK_TIMEOUT:
        a listener that never answers would otherwise leave the node waiting without a word."""
        waits = [asyncio.ensure_future(self._answered.wait()), asyncio.ensure_future(self._connection_lost.wait())]
        try:
            done, _ = await asyncio.wait(waits, timeout=CONNACK_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return bool(done)

    def _switch_client(self) -> None:
        """A new paho client for the new broker; what the old one had not delivered moves to the queue."""
        self._retarget_pending = False
        old = self.client
        old._sock_close()
        # paho keeps unacknowledged QoS>0 messages in _out_messages (no public accessor).
        undelivered = [(m.topic, m.payload, m.qos, bool(m.retain), m.properties)
                       for m in getattr(old, "_out_messages", {}).values() if m.qos > 0]
        self._offline_queue.extendleft(reversed(undelivered))
        self._unacknowledged.clear()
        self.client = self._make_client()
        self.log.info("switching to broker %s (%d unacknowledged messages carried over)", self.settings.broker,
                      len(undelivered))

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL)
            if self._watched_socket is not None:
                self.client.loop_misc()

    # ------------------------------------------------------------ paho callbacks (never block)

    def _paho_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._loop.call_soon_threadsafe(self._answered.set)
        if reason_code.is_failure:
            self.log.error("broker %s refused the connection: %s", self.settings.broker, reason_code)
            self._last_connection_was_up = False
            return
        self._loop.call_soon(self._after_connect)

    def _paho_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self._connected
        self._connected = False
        self.connected_event.clear()
        self._connection_lost.set()
        if was_connected:
            self.stats["disconnects"] += 1
            if not self._stopping:
                self.log.warning("lost connection to broker %s (%s)%s; reconnecting", self.settings.broker,
                                 reason_code, self._takeover_hint(reason_code))
            self._loop.call_soon(self._on_disconnected)

    def _takeover_hint(self, reason_code) -> str:
        """Two clients with one client id take over each other's session, again and again: say so.

        MQTT v5 brokers give the reason (Session taken over); under 3.1.1 the sign
        is a run of connections closed by the broker right after they opened.
        """
        now = time.monotonic()
        taken_over = getattr(reason_code, "value", None) == SESSION_TAKEN_OVER
        if not taken_over and now - self._connected_since < SHORT_CONNECTION:
            self._short_connections.append(now)
            while self._short_connections and now - self._short_connections[0] > SHORT_CONNECTION_WINDOW:
                self._short_connections.popleft()
            taken_over = len(self._short_connections) >= SHORT_CONNECTIONS_FOR_TAKEOVER
        if not taken_over:
            return ""
        self.stats["taken_over"] += 1
        return (f": another client uses this client id {self.settings.client_id!r} (two nodes with the same "
                f"node id take over each other's connection: give each node its own node.id)")

    def _paho_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        message = Message(
            topic=msg.topic, payload=bytes(msg.payload), qos=msg.qos, retain=bool(msg.retain),
            response_topic=getattr(props, "ResponseTopic", None),
            correlation_data=getattr(props, "CorrelationData", None),
            user_properties=tuple(getattr(props, "UserProperty", ()) or ()),
        )
        self._loop.call_soon(self._on_message, message)

    # paho calls the socket callbacks from the executor thread during connect,
    # hence call_soon_threadsafe.  Sockets are watched by file descriptor number:
    # a socket closed in another thread can no longer tell its number.
    def _paho_socket_open(self, client, userdata, sock) -> None:
        try:  # small MQTT packets must not wait for Nagle and delayed ACKs (40 ms stalls)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        self._on_loop(self._watch_socket, sock.fileno())

    def _paho_socket_close(self, client, userdata, sock) -> None:
        self._on_loop(self._unwatch_socket)

    def _paho_register_write(self, client, userdata, sock) -> None:
        self._on_loop(self._watch_writes, sock.fileno())

    def _paho_unregister_write(self, client, userdata, sock) -> None:
        self._on_loop(self._unwatch_writes, sock.fileno())

    def _on_loop(self, callback, *args) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        try:
            in_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            callback(*args)
        else:
            self._loop.call_soon_threadsafe(callback, *args)

    # ------------------------------------------------------------ on the loop

    def _watch_socket(self, fd: int) -> None:
        if fd < 0:
            return
        if self._stopping:  # a connect that finished in its thread after stop()
            self.client._sock_close()
            return
        self._unwatch_socket()
        self._watched_socket = fd
        self._loop.add_reader(fd, self.client.loop_read)

    def _watch_writes(self, fd: int) -> None:
        if fd >= 0 and fd == self._watched_socket:
            self._loop.add_writer(fd, self.client.loop_write)

    def _unwatch_writes(self, fd: int) -> None:
        if fd >= 0 and fd == self._watched_socket:
            self._loop.remove_writer(fd)

    def _unwatch_socket(self) -> None:
        fd, self._watched_socket = self._watched_socket, None
        if fd is not None:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)

    def _after_connect(self) -> None:
        if self.client._sock is None:  # lost again before we got here
            return
        self._connected = True
        self._connected_since = time.monotonic()
        self._last_connection_was_up = True
        self.stats["connects"] += 1
        self.log.info("connected to broker %s", self.settings.broker)
        # Subscribe before sending what waited, so that a node's own messages to
        # topics it listens on come back to it.
        if self._filters:
            _, self._pending_suback = self.client.subscribe([self._subscription(f) for f in self._filters])
        while self._offline_queue and self._connected:
            topic, data, qos, retain, properties = self._offline_queue.popleft()
            self._unacknowledged.add(self.client.publish(topic, data, qos, retain, properties).mid)
        if not self._filters:
            self._subscriptions_ready()

    def _paho_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._unacknowledged.discard(mid)

    def _paho_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if mid != self._pending_suback:
            return
        for topic_filter, code in zip(self._filters, reason_codes):
            if code.is_failure:
                self.log.error("broker refused the subscription to %s: %s", topic_filter, code)
        self._loop.call_soon(self._subscriptions_ready)

    def _subscriptions_ready(self) -> None:
        self._pending_suback = None
        if self._connected:
            self.connected_event.set()
            self._on_connected()

    async def _wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = self._loop.time() + timeout
        while not condition():
            if self._loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True
