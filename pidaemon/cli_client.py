"""The MQTT client of the command-line tools (`pidaemon status`, `pidaemon submit`).

One place that turns `--broker`, `--protocol`, `--username`, `--password-file`
and `--ca-file` into a connection (`BusSettings`, as a node's bus uses), then a
small blocking client over paho with its own network thread:

- `connect(timeout)` returns once the broker accepted the connection, or raises
  `BrokerUnreachable`, `BrokerRefused` (`ProtocolRefused` when the broker does
  not speak the MQTT version asked for) or `BrokerSilent`;
- `subscribe([...], timeout)` returns once the SUBACK came, with the filters
  the broker refused;
- `publish(...)` sends at QoS 1 and returns once the PUBACK came;
- `next_event(timeout)` hands over, in order, every message as a
  `pidaemon.bus.Message` and every change of the connection as a
  `ConnectionChange`.

Only messages matching a subscribed filter are handed over: some brokers
(amqtt) also deliver retained messages of topics nobody subscribed to.  After a
lost connection paho reconnects by itself; the subscriptions are renewed and
`ConnectionChange(up=True)` comes once they are acknowledged again.
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .names import TOPIC_PREFIX_DOC, is_topic_prefix

# paho, the bus and the configuration module (YAML) are imported where they are used, not here: building the
# command line (`pidaemon --help`) imports this module and must stay quick.
if TYPE_CHECKING:  # pragma: no cover
    import paho.mqtt.client as mqtt

    from .bus import BusSettings, Message, Subscription

RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY = 0.1, 2.0  # seconds between paho's attempts after a lost connection
UNSUPPORTED_PROTOCOL_VERSION = 0x84  # CONNACK reason (3.1.1 return code 1, which paho reports as 0x84)
NOT_AUTHORIZED = (0x86, 0x87)        # bad user name or password, not authorized


class UsageError(ValueError):
    """A command-line value that cannot be used (a broker URL, a password file...)."""


class BrokerError(Exception):
    """The broker cannot be used; the message says why, for a person."""


class BrokerUnreachable(BrokerError):
    """No connection at all: refused by the host, no route, DNS, TLS."""


class BrokerSilent(BrokerError):
    """A connection, but no answer to CONNECT or SUBSCRIBE in time."""


class BrokerRefused(BrokerError):
    """The broker answered CONNECT with a refusal (`reason` is paho's ReasonCode)."""

    def __init__(self, message: str, reason: Any):
        super().__init__(message)
        self.reason = reason


class ProtocolRefused(BrokerRefused):
    """The broker does not speak the MQTT version asked for (amqtt speaks 3.1.1 only)."""


class PublishRefused(BrokerError):
    """The broker answered a PUBLISH with a failure reason (MQTT 5 only, e.g. an ACL)."""


@dataclass(frozen=True)
class ConnectionChange:
    """The connection was lost (`up` False), or is back with its subscriptions acknowledged (`up` True)."""

    up: bool


# ---------------------------------------------------------------- command-line options

def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--broker, --prefix, --protocol and the credentials, the same for every command that talks MQTT."""
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", metavar="URL",
                        help="mqtt://HOST:PORT or mqtts://HOST:PORT (default mqtt://127.0.0.1:1883)")
    parser.add_argument("--prefix", default="picluster", help="MQTT topic prefix (default picluster)")
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="3.1.1",
                        help="MQTT version (default 3.1.1, which every broker speaks, the embedded one included)")
    parser.add_argument("--username", help="MQTT user name")
    parser.add_argument("--password-file", metavar="FILE", help="file holding the MQTT password")
    parser.add_argument("--ca-file", metavar="FILE", help="CA certificate for mqtts://")


def settings_from_args(args: argparse.Namespace, client_id: str) -> BusSettings:
    """The connection the options describe; UsageError says which option is wrong."""
    from .bus import BusSettings
    from .config import parse_broker_url

    try:
        broker = parse_broker_url(args.broker)
    except ValueError as exc:
        raise UsageError(f"--broker {args.broker}: {exc}") from None
    if not is_topic_prefix(args.prefix):
        raise UsageError(f"--prefix {args.prefix!r}: expected {TOPIC_PREFIX_DOC}")
    password = None
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                password = f.read().strip()
        except OSError as exc:
            raise UsageError(f"--password-file {args.password_file}: {exc.strerror or exc}") from None
    return BusSettings(client_id=client_id, broker=broker, protocol=args.protocol, keepalive=30,
                       username=args.username, password=password, tls_ca_file=args.ca_file)


# ---------------------------------------------------------------- the client

class CliClient:
    def __init__(self, settings: BusSettings):
        self.settings = settings
        self.events: queue.Queue[Message | ConnectionChange] = queue.Queue()
        self._filters: dict[str, int] = {}
        self._matching: tuple[str, ...] = ()   # replaced, never changed: read by the network thread
        self._cond = threading.Condition()
        self._connack: Any = None              # the first CONNACK's reason code
        self._subacks: dict[int, list[Any]] = {}
        self._pubacks: dict[int, Any] = {}
        self._renewal_mid: int | None = None   # the SUBSCRIBE sent after a reconnection
        self.connected = False
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        import paho.mqtt.client as mqtt

        s = self.settings
        v5 = s.protocol == "5"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id,
                             protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, clean_session=None if v5 else True)
        client.reconnect_delay_set(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.broker.tls:
            client.tls_set(ca_certs=s.tls_ca_file, certfile=s.tls_cert_file, keyfile=s.tls_key_file)
            client.tls_insecure_set(s.tls_insecure)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    # ------------------------------------------------------------ what commands call

    def connect(self, timeout: float) -> None:
        """Connect within `timeout` seconds, or raise a BrokerError that says what went wrong."""
        from .bus import CONNECT_ERRORS

        broker = self.settings.broker
        self.client.connect_timeout = max(timeout, 0.1)
        try:
            self.client.connect(broker.host, broker.port, keepalive=self.settings.keepalive)
        except CONNECT_ERRORS as exc:
            raise BrokerUnreachable(f"cannot reach the broker {broker}: {exc}") from None
        self.client.loop_start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._connack is not None, timeout):
                raise BrokerSilent(f"the broker {broker} accepted a TCP connection but did not answer MQTT's CONNECT "
                                   f"within {timeout:g} s (is it an MQTT broker? mqtts:// needs TLS)")
        reason = self._connack
        if not reason.is_failure:
            return
        version = "MQTT 5" if self.settings.protocol == "5" else "MQTT 3.1.1"
        if reason.value == UNSUPPORTED_PROTOCOL_VERSION:
            instead = "3.1.1 (the embedded amqtt broker speaks 3.1.1 only)" if self.settings.protocol == "5" else "5"
            raise ProtocolRefused(f"the broker {broker} refused {version} ({reason}): it does not speak that version; "
                                  f"use --protocol {instead}", reason)
        hint = " (give --username and --password-file)" if reason.value in NOT_AUTHORIZED else ""
        raise BrokerRefused(f"the broker {broker} refused the connection: {reason}{hint}", reason)

    def subscribe(self, subscriptions: list[Subscription], timeout: float) -> list[str]:
        """Subscribe and wait for the SUBACK; returns the filters the broker refused (they are dropped)."""
        with self._cond:
            for sub in subscriptions:
                self._filters[sub.topic] = sub.qos
            self._matching = tuple(self._filters)
        _, mid = self.client.subscribe([(sub.topic, sub.qos) for sub in subscriptions])
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._subacks, timeout):
                raise BrokerSilent(f"the broker {self.settings.broker} did not acknowledge a subscription within "
                                   f"{timeout:g} s")
            codes = self._subacks.pop(mid)
            refused = [sub.topic for sub, code in zip(subscriptions, codes) if code.is_failure]
            for topic in refused:
                self._filters.pop(topic, None)
            self._matching = tuple(self._filters)
        return refused

    def publish(self, topic: str, payload: Any, timeout: float, retain: bool = False) -> bool:
        """Send at QoS 1; True once the broker acknowledged it, False if it did not within `timeout`.

        Raises PublishRefused when the broker answers with a failure (MQTT 5).
        A message not acknowledged when the connection breaks is sent again by paho after reconnecting.
        """
        from .bus import encode_payload

        info = self.client.publish(topic, encode_payload(payload), qos=1, retain=retain,
                                   properties=self._origin_properties())
        with self._cond:
            if not self._cond.wait_for(lambda: info.mid in self._pubacks, timeout):
                return False
            reason = self._pubacks.pop(info.mid)
        if reason is not None and reason.is_failure:
            raise PublishRefused(f"the broker {self.settings.broker} refused the message on {topic}: {reason}")
        return True

    def _origin_properties(self):
        """Under MQTT v5, the user property `client_id`: the Warble server counts a client's
        submissions together (its per-client share) whatever user names they carry."""
        if self.settings.protocol != "5":
            return None
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = ("client_id", self.settings.client_id)
        return properties

    def next_event(self, timeout: float | None) -> Message | ConnectionChange | None:
        """The next message or change of the connection, or None after `timeout` seconds."""
        try:
            return self.events.get(timeout=None if timeout is None else max(timeout, 0.0))
        except queue.Empty:
            return None

    def quiet(self, quiet: float, limit: float) -> list[Message | ConnectionChange]:
        """Events until none came for `quiet` seconds (retained messages arrive in one burst), at most `limit` s."""
        events = []
        deadline = time.monotonic() + limit
        while True:
            event = self.next_event(min(quiet, deadline - time.monotonic()))
            if event is None:
                return events
            events.append(event)

    def close(self, wait: bool = True) -> None:
        """Disconnect; with `wait` False (Ctrl-C), without waiting for the network thread."""
        self.client.disconnect()  # also wakes the network thread up
        if wait:
            self.client.loop_stop()

    # ------------------------------------------------------------ paho callbacks (network thread, never block)

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        with self._cond:
            first = self._connack is None
            if first:
                self._connack = reason
                self._cond.notify_all()
            if reason.is_failure:
                return
            self.connected = True
            if not first:  # a reconnection: renew the subscriptions, announce it once they are acknowledged
                if self._filters:
                    _, self._renewal_mid = client.subscribe(list(self._filters.items()))
                else:
                    self.events.put(ConnectionChange(up=True))

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        with self._cond:
            was_connected, self.connected = self.connected, False
        if was_connected:
            self.events.put(ConnectionChange(up=False))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            if mid == self._renewal_mid:
                self._renewal_mid = None
                self.events.put(ConnectionChange(up=True))
            else:
                self._subacks[mid] = list(reason_codes)
                self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        with self._cond:
            self._pubacks[mid] = reason
            self._cond.notify_all()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        from .bus import Message, topic_matches

        if not any(topic_matches(f, msg.topic) for f in self._matching):
            return  # amqtt also sends retained messages of topics nobody here subscribed to
        props = getattr(msg, "properties", None)
        self.events.put(Message(
            topic=msg.topic, payload=bytes(msg.payload), qos=msg.qos, retain=bool(msg.retain),
            response_topic=getattr(props, "ResponseTopic", None),
            correlation_data=getattr(props, "CorrelationData", None),
            user_properties=tuple(getattr(props, "UserProperty", ()) or ()),
        ))
