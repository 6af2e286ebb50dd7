"""The server announces itself, so that nodes find the broker with no configuration.

Every `interval`, a datagram (see `datagram.py`) goes by UDP to
each address of `targets` on `port`: the LAN broadcast and the loopback
broadcast by default, so that simulated nodes on the same desktop hear it too.
The same bytes are published as the TXT record of an mDNS/DNS-SD service
(`_pidaemon._tcp.local.`), for networks that drop broadcasts.

The broker address announced is `broker_host`:`broker_port` when configured;
otherwise the server's own broker address, except that a loopback broker host
(the server's usual `mqtt://127.0.0.1:1883`) is replaced by the server's IP
address that faces the LAN.

Signed (the default), every datagram carries the server's clock and a counter
(`counter.py`) that never goes back, and the socket the announcements leave
from (bound to `query_port`) answers the nodes' signed queries: a node that
cannot yet judge an announcement's freshness sends a random nonce, and gets
back the current announcement with that nonce in it (see `freshness.py`).
A query is answered once (a replayed one gets nothing) and the answers are
rate-limited.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
import time

from pidaemon import hookimpl
from pidaemon.names import NAME, NAME_DOC
from pidaemon.nodeinfo import primary_ip
from pidaemon.schema import Boolean, Integer, ListOf, Number, String, settings

from .counter import STATE_FILE, AnnouncementCounter
from .datagram import (DEFAULT_PORT, DEFAULT_QUERY_PORT, MAX_DATAGRAM_SIZE, MDNS_SERVICE_TYPE, Announcement,
                       DatagramError, decode_query, encode, to_txt)
from .secret import SigningSettings, signing_checked

ANSWERS_PER_SECOND = 500     # answers to queries, sustained (a thousand nodes booting at once: a 2 s burst)
ANSWER_BURST = 2000
REMEMBERED_NONCES = 8192     # queries answered recently: the same one again gets no answer


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@signing_checked
@settings
class AnnounceSettings(SigningSettings):
    port: int = Integer(min=1, max=65535, default=DEFAULT_PORT, doc="UDP port the nodes listen on")
    interval: float = Number(min=0.05, default=2, doc="seconds between two announcements")
    targets: tuple[str, ...] = ListOf(String(), default=["255.255.255.255", "127.255.255.255"],
                                      doc="addresses the datagram is sent to (broadcast, subnet broadcast "
                                          "or unicast)")
    cluster: str = String(default="picluster", pattern=NAME, pattern_doc=f"a cluster name ({NAME_DOC})",
                          doc="cluster name; nodes can be set to accept only this one")
    broker_host: str | None = String(default=None, doc="broker host to announce; default: see module doc")
    broker_port: int | None = Integer(min=1, max=65535, default=None, doc="broker port; default: the server's own")
    mdns: bool = Boolean(default=True, doc="also register an mDNS/DNS-SD service")
    mdns_interfaces: tuple[str, ...] | None = ListOf(String(), default=None,
                                                     doc="interface addresses for mDNS; null: all interfaces")
    query_port: int = Integer(min=0, max=65535, default=DEFAULT_QUERY_PORT,
                              doc="UDP port the announcements leave from and the nodes' queries arrive at "
                                  "(signed discovery); 0: any free port")


class AnnouncePlugin:
    config_schema = AnnounceSettings

    def __init__(self, node, config: AnnounceSettings):
        self.node = node
        self.config = config
        self.targets = list(config.targets)
        self.secret = config.read_secret()
        if (warning := config.secret_file_warning()) is not None:
            node.log.warning("announce: %s", warning)
        self.sent = 0
        self.send_errors = 0
        self.answered = 0
        self.refused_queries = 0
        self.counter: AnnouncementCounter | None = None
        self._answered_nonces: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._tokens = float(ANSWER_BURST)
        self._tokens_at = time.monotonic()
        self._last_refusal_log = -1e9
        self._failing_targets: set[str] = set()
        self._socket: socket.socket | None = None
        self._zeroconf = None
        self._service = None

    # ------------------------------------------------------------ what is announced

    def announcement(self, nonce: str | None = None) -> Announcement:
        broker = self.node.broker
        host = self.config.broker_host or broker.host
        if not self.config.broker_host and is_loopback(host):
            host = primary_ip()
        if self.counter is None:
            self.counter = AnnouncementCounter(self.node.state_dir / STATE_FILE, log=self.node.log)
        return Announcement(cluster=self.config.cluster, server=self.node.id, host=host,
                            port=self.config.broker_port or broker.port, prefix=self.node.topics.prefix,
                            tls=broker.tls, time=round(time.time(), 3), counter=self.counter.next(), nonce=nonce)

    def datagram(self, nonce: str | None = None) -> bytes:
        return encode(self.announcement(nonce), self.secret)

    @property
    def query_address(self) -> tuple[str, int] | None:
        """Where this server answers queries (the socket the announcements leave from), once started."""
        return self._socket.getsockname() if self._socket is not None and self.secret else None

    # ------------------------------------------------------------ hooks

    @hookimpl
    def pidaemon_startup(self, node):
        self.datagram()  # a bad broker_host fails the plugin at start, not later
        if not self.secret:
            node.log.warning("announce: discovery is not signed (insecure: true): any host on the LAN can "
                             "redirect the nodes; use it for a trial on one desk only")
        self._socket = self._open_socket()
        if self.secret:
            asyncio.get_running_loop().add_reader(self._socket.fileno(), self._queries_ready)
        node.spawn(self._announce_forever(), name="announce")
        if self.config.mdns:
            node.spawn(self._register_mdns(), name="announce:mdns")
        node.log.info("announcing %s (cluster %s) on UDP port %d to %s every %s s%s%s",
                      self.announcement().broker_url, self.config.cluster, self.config.port,
                      ", ".join(self.targets) or "nobody",
                      self.config.interval, " and by mDNS" if self.config.mdns else "",
                      f", signed; answering queries on UDP port {self._socket.getsockname()[1]}" if self.secret
                      else ", NOT signed")

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setblocking(False)
        if self.secret:
            try:
                sock.bind(("0.0.0.0", self.config.query_port))
            except OSError as exc:
                # Nodes answer to the port an announcement came from: any port works, unless a firewall
                # opens only query_port.
                sock.bind(("0.0.0.0", 0))
                self.node.log.warning("announce: cannot use UDP port %d for queries (%s): using port %d",
                                      self.config.query_port, exc.strerror or exc, sock.getsockname()[1])
        return sock

    @hookimpl
    def pidaemon_info(self, node):
        return {"capabilities": ["announce"]}

    @hookimpl
    async def pidaemon_shutdown(self, node):
        if self._socket is not None:
            if self.secret:
                asyncio.get_running_loop().remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None
        if self._zeroconf is not None:
            try:
                await asyncio.wait_for(self._zeroconf.async_unregister_all_services(), 1.0)
                await asyncio.wait_for(self._zeroconf.async_close(), 1.0)
            except Exception as exc:
                node.log.debug("announce: mDNS close: %s", exc)
            self._zeroconf = None

    # ------------------------------------------------------------ UDP

    def send_once(self) -> int:
        """Send the datagram to every target; the number of targets it reached the kernel for."""
        if self._socket is None:
            return 0
        data = self.datagram()
        reached = 0
        for target in self.targets:
            try:
                self._socket.sendto(data, (target, self.config.port))
            except OSError as exc:
                self.send_errors += 1
                if target not in self._failing_targets:
                    self._failing_targets.add(target)
                    self.node.log.warning("announce: cannot send to %s:%d: %s (will keep trying)",
                                          target, self.config.port, exc.strerror or exc)
                continue
            if target in self._failing_targets:
                self._failing_targets.discard(target)
                self.node.log.info("announce: sending to %s:%d works again", target, self.config.port)
            reached += 1
        self.sent += 1
        return reached

    async def _announce_forever(self) -> None:
        while True:
            try:
                self.send_once()
            except DatagramError as exc:
                self.node.log.error("announce: %s", exc)
            await asyncio.sleep(self.config.interval)

    # ------------------------------------------------------------ queries (signed discovery)

    def _queries_ready(self) -> None:
        """The socket has datagrams: answer every valid query among them (runs on the event loop)."""
        for _ in range(256):  # then let the loop breathe; the reader is called again
            if self._socket is None:
                return
            try:
                data, address = self._socket.recvfrom(MAX_DATAGRAM_SIZE + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error for an earlier datagram
                self.node.log.debug("announce: socket: %s", exc)
                continue
            self.answer(data, address)

    def answer(self, data: bytes, address: tuple[str, int]) -> bool:
        """Answer one query with the current announcement carrying its nonce; False if refused."""
        try:
            query = decode_query(data, self.secret)
        except DatagramError as exc:
            return self._refuse(f"{exc}", address)
        if query.nonce in self._answered_nonces:
            return self._refuse(f"query {query.nonce[:8]}... of {query.node} already answered (a replay)", address)
        now = time.monotonic()
        self._tokens = min(ANSWER_BURST, self._tokens + (now - self._tokens_at) * ANSWERS_PER_SECOND)
        self._tokens_at = now
        if self._tokens < 1:
            return self._refuse("too many queries: answering at most "
                                f"{ANSWERS_PER_SECOND} a second", address)
        self._tokens -= 1
        self._answered_nonces[query.nonce] = None
        if len(self._answered_nonces) > REMEMBERED_NONCES:
            self._answered_nonces.popitem(last=False)
        try:
            self._socket.sendto(self.datagram(query.nonce), address)
        except (OSError, DatagramError) as exc:
            self.node.log.debug("announce: cannot answer %s at %s:%d: %s", query.node, *address, exc)
            return False
        self.answered += 1
        return True

    def _refuse(self, reason: str, address: tuple[str, int]) -> bool:
        self.refused_queries += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= 60:
            self._last_refusal_log = now
            self.node.log.warning("announce: refused a query from %s:%d: %s (%d refused so far)", address[0],
                                  address[1], reason, self.refused_queries)
        return False

    # ------------------------------------------------------------ mDNS

    async def _register_mdns(self) -> None:
        from zeroconf import IPVersion, NonUniqueNameException
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

        announcement = self.announcement()
        query_address = self.query_address
        try:
            address = socket.inet_aton(socket.gethostbyname(announcement.host))
        except OSError:
            address = None
        info = AsyncServiceInfo(
            MDNS_SERVICE_TYPE, f"{self.config.cluster}.{MDNS_SERVICE_TYPE}",
            addresses=[address] if address else None, port=announcement.port,
            properties=to_txt(encode(announcement, self.secret), query_address[1] if query_address else None),
            server=f"{self.node.id}.local.",
        )
        kwargs = {"interfaces": list(self.config.mdns_interfaces)} if self.config.mdns_interfaces else {}
        try:
            self._zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only, **kwargs)
            await self._zeroconf.async_register_service(info, allow_name_change=True)
        except Exception as exc:
            reason = ("the name is taken by another server" if isinstance(exc, NonUniqueNameException)
                      else f"{type(exc).__name__}: {exc}")
            self.node.log.warning("announce: mDNS registration of %s failed: %s (UDP announcements go on)",
                                  info.name, reason)
            if self._zeroconf is not None:
                await self._zeroconf.async_close()
                self._zeroconf = None
            return
        self.node.log.info("announce: mDNS service %s registered", info.name)
