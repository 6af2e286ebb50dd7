"""An MQTT broker inside the daemon (amqtt), for trying the system with nothing else installed.

amqtt speaks MQTT 3.1.1 only and keeps everything in memory; production
clusters use mosquitto (see docs/broker.md).  amqtt is the `[broker]` extra,
imported only when a configuration asks for the embedded broker.
"""

from __future__ import annotations

import errno
import logging
import socket


class BrokerPortTaken(RuntimeError):
    pass


class _ClientErrorsOnOneLine(logging.Filter):
    """amqtt logs a client's bad CONNECT (an MQTT 5 client, garbage on the port) with a traceback,
    which reads like a crash of the broker: keep its one-line message, drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and type(record.exc_info[1]).__module__.startswith("amqtt."):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_amqtt_logs() -> None:
    broker_log = logging.getLogger("amqtt.broker")
    if not any(isinstance(f, _ClientErrorsOnOneLine) for f in broker_log.filters):
        broker_log.addFilter(_ClientErrorsOnOneLine())
    # amqtt loads its password-file plugin whatever the configuration says, and it warns, on every
    # start, that it has no password file; the embedded broker is anonymous by design (docs/broker.md).
    logging.getLogger("amqtt.broker.plugins.auth_file").setLevel(logging.ERROR)


class EmbeddedBroker:
    def __init__(self, host: str, port: int, *, port_taken_hint: str = ""):
        self.host, self.port = host, port
        self.port_taken_hint = port_taken_hint  # what the user can do instead, in the command's terms
        self._broker = None

    def _check_port_free(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    hint = self.port_taken_hint.format(host=self.host, port=self.port)
                    raise BrokerPortTaken(
                        f"port {self.host}:{self.port} is already taken (is a broker such as mosquitto running "
                        f"there?). {hint}".strip()) from None
                raise

    async def start(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise RuntimeError("the embedded broker needs amqtt: pip install 'pidaemon[broker]'") from None
        self._check_port_free()
        _quiet_amqtt_logs()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._broker = Broker(config)
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
