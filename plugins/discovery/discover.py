"""A node with no broker configured (`mqtt.broker: null`) finds it from the server's announcement.

Implements `pidaemon_find_broker`: listen on the UDP port for the datagram the
`announce` plugin broadcasts and, at the same time, browse mDNS/DNS-SD for the
`_pidaemon._tcp.local.` service; the first valid, fresh announcement wins.
Every datagram goes through `datagram.decode` (size limit, version, HMAC); a
rejected one is logged (the same kind at most once per `log_every` seconds,
with a count) and changes nothing.

Signed (the default), an announcement is also judged fresh or not
(`freshness.py`): its counter must be greater than the last one accepted
from that server, and its time within `freshness` seconds of that server's
clock as this node knows it.  A node does not trust its own wall clock (a Pi
has no real-time clock): the first time it hears a server, and whenever an
announcement cannot be judged or is refused, it asks the address the
announcement came from (a signed query with a random nonce, from a socket of
its own) and takes only the answer that carries the nonce; that answer also
tells it the server's clock.  A captured datagram played back, at boot or
later, is therefore never taken: its counter is old, or its time is, and its
sender cannot answer the query.

After the broker is found the node keeps listening:

- if the server announces another broker while this node has been
  disconnected for `follow_after` seconds, the node switches to it without a
  restart;
- if a broker this node used before such a switch is announced again (fresh)
  and accepts a TCP connection, the node goes back to it (`go_back`), even if
  connected to the other one: the earliest such broker wins, and the ones used
  after it are forgotten.

The MQTT prefix is adopted from the announcement when the node is started (it
cannot change later: subscriptions are made with it), and the IP address (and
MAC) in the node's `info` become those of the interface that faces the broker.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
import time
from dataclasses import dataclass

from pidaemon import hookimpl
from pidaemon.config import BrokerAddress, parse_broker_url
from pidaemon.daemon import DaemonError
from pidaemon.names import NAME, NAME_DOC
from pidaemon.nodeinfo import interface_for_ip, mac_address, primary_ip
from pidaemon.schema import Boolean, Integer, ListOf, Number, String, settings
from pidaemon.topics import Topics

from .datagram import (DEFAULT_PORT, MDNS_SERVICE_TYPE, Announcement, DatagramError, Query, decode, encode_query,
                       from_txt, query_port_from_txt)
from .freshness import Freshness, Verdict
from .secret import SigningSettings, signing_checked

STILL_WAITING_EVERY = 30.0  # seconds between two "still waiting" log lines
QUERY_SPREAD = 1.0          # a query leaves after a random delay of up to this: a thousand Pis do not ask at once
QUERY_TIMEOUT = 3.0         # seconds to wait for the answer to a query
MAX_PENDING_QUERIES = 8
PROBE_TIMEOUT = 2.0         # seconds for the TCP connection that tells whether an earlier broker is back
PROBE_EVERY = 2.0           # seconds between two such probes of one broker
MAX_EARLIER = 8             # brokers remembered to go back to


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, plugin: "DiscoveryPlugin", via: str | None):
        self.plugin = plugin
        self.via = via  # None: the answers to our queries (their `via` is that of what we asked about)

    def datagram_received(self, data: bytes, addr) -> None:
        self.plugin.received(data, (addr[0], addr[1]), self.via)

    def error_received(self, exc: Exception) -> None:
        self.plugin.node.log.debug("discovery: socket error: %s", exc)


@dataclass
class _PendingQuery:
    address: tuple[str, int]
    via: str
    timer: asyncio.TimerHandle | None = None


@signing_checked
@settings
class DiscoverySettings(SigningSettings):
    port: int = Integer(min=1, max=65535, default=DEFAULT_PORT, doc="UDP port of the server's announcements")
    listen: str = String(default="0.0.0.0", doc="address to listen on (0.0.0.0: every interface)")
    udp: bool = Boolean(default=True, doc="listen for UDP announcements")
    mdns: bool = Boolean(default=True, doc="also browse mDNS/DNS-SD for the server")
    mdns_interfaces: tuple[str, ...] | None = ListOf(String(), default=None,
                                                     doc="interface addresses for mDNS; null: all")
    cluster: str | None = String(default=None, pattern=NAME, pattern_doc=f"a cluster name ({NAME_DOC})",
                                 doc="accept only this cluster's announcements; null: any")
    adopt_prefix: bool = Boolean(default=True, doc="use the MQTT prefix the server announces")
    follow: bool = Boolean(default=True, doc="switch to a newly announced broker after losing the current one")
    follow_after: float = Number(min=0, default=10, doc="seconds without a connection before switching")
    go_back: bool = Boolean(default=True, doc="after a switch, go back to the earlier broker once it is "
                                              "announced again and accepts connections")
    freshness: float = Number(min=1, default=30,
                              doc="signed: seconds an announcement's time may differ from the server's clock "
                                  "as this node knows it (learnt from the server's answer to a query)")
    timeout: float | None = Number(min=0.1, default=None, doc="give up after this many seconds; null: wait forever")
    log_every: float = Number(min=0.1, default=60,
                              doc="seconds between two log lines about the same kind of rejected datagram")


class DiscoveryPlugin:
    config_schema = DiscoverySettings

    def __init__(self, node, config: DiscoverySettings):
        self.node = node
        self.config = config
        self.secret = config.read_secret()
        if (warning := config.secret_file_warning()) is not None:
            node.log.warning("discovery: %s", warning)
        if not (config.udp or config.mdns):
            raise ValueError("enable udp, mdns or both")
        self.freshness = Freshness(config.freshness)
        self.announcement: Announcement | None = None
        self.via: str | None = None
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.switches = 0
        self.queries = 0
        self.earlier: list[str] = []  # brokers used before a switch, oldest first: go back to these
        self._found: asyncio.Future | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._query_transport: asyncio.DatagramTransport | None = None
        self._mdns_task: asyncio.Task | None = None
        self._pending: dict[str, _PendingQuery] = {}
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._probed: dict[str, float] = {}
        self._disconnected_since: float | None = None
        self._switching = False

    # ------------------------------------------------------------ hooks

    @hookimpl
    def pidaemon_find_broker(self, node):
        return self.discover()

    @hookimpl
    def pidaemon_connected(self, node):
        self._disconnected_since = None

    @hookimpl
    def pidaemon_disconnected(self, node):
        if self._disconnected_since is None:
            self._disconnected_since = time.monotonic()

    @hookimpl
    def pidaemon_info(self, node):
        if self.announcement is None:
            return None
        a = self.announcement
        return {"discovery": {"cluster": a.cluster, "server": a.server, "broker": a.broker_url, "via": self.via}}

    @hookimpl
    def pidaemon_telemetry(self, node):
        if self._transport is None and self.announcement is None:
            return None
        return {"discovery": {"accepted": self.accepted, "rejected": sum(self.rejected.values())}}

    @hookimpl
    async def pidaemon_shutdown(self, node):
        await self.close()

    # ------------------------------------------------------------ finding the broker

    async def discover(self) -> str:
        """Wait for the first valid announcement; the broker URL it names."""
        loop = asyncio.get_running_loop()
        self._found = loop.create_future()
        if not self.secret:
            self.node.log.warning("discovery is not signed (insecure: true): any host on the LAN can redirect "
                                  "this node; use it for a trial on one desk only")
        if self.secret:
            self._query_transport, _ = await loop.create_datagram_endpoint(
                lambda: _Receiver(self, None), local_addr=("0.0.0.0", 0), family=socket.AF_INET)
        if self.config.udp:
            await self._listen_udp()
        if self.config.mdns:
            self._mdns_task = loop.create_task(self._browse_mdns(), name=f"discovery:mdns:{self.node.id}")
        ways = " and ".join(w for w, on in ((f"UDP port {self.config.port}", self.config.udp),
                                            ("mDNS", self.config.mdns)) if on)
        self.node.log.info("no broker configured: waiting for the server's announcement (%s%s)", ways,
                           f", cluster {self.config.cluster}" if self.config.cluster else "")
        started = loop.time()
        next_report = started + STILL_WAITING_EVERY
        try:
            while not self._found.done():
                now = loop.time()
                if self.config.timeout is not None and now - started >= self.config.timeout:
                    raise DaemonError(f"no valid server announcement within {self.config.timeout} s ({ways})")
                if now >= next_report:
                    next_report = now + STILL_WAITING_EVERY
                    self.node.log.info("still waiting for the server's announcement (%s)", ways)
                step = 0.5 if self.config.timeout is None else max(0.01, min(0.5, started + self.config.timeout - now))
                await asyncio.wait([self._found], timeout=step)
        except BaseException:  # timeout, or the start-up cancelled by a stop request
            await self.close()
            raise
        announcement = self._found.result()
        await self._stop_mdns()
        if self.config.adopt_prefix and announcement.prefix != self.node.topics.prefix:
            self.node.log.info("using the announced MQTT prefix %s (configured: %s)", announcement.prefix,
                               self.node.topics.prefix)
            self.node.topics = Topics(announcement.prefix)
        await self._face_broker(announcement.host)
        self.node.log.info("found the broker %s by %s, announced by server %s (cluster %s)%s",
                           announcement.broker_url, self.via, announcement.server, announcement.cluster,
                           "" if self.secret else ", NOT signed")
        self._disconnected_since = time.monotonic()  # until the first connection
        return announcement.broker_url

    async def _listen_udp(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Several nodes on one machine (simulated Pis on a desktop) share the port:
        # broadcasts reach each of them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((self.config.listen, self.config.port))
        except OSError as exc:
            sock.close()
            if not self.config.mdns:
                raise DaemonError(f"discovery: cannot listen on UDP {self.config.listen}:{self.config.port}: "
                                  f"{exc}") from None
            self.node.log.warning("discovery: cannot listen on UDP %s:%d: %s (mDNS only)", self.config.listen,
                                  self.config.port, exc)
            return
        sock.setblocking(False)
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _Receiver(self, "udp"), sock=sock)

    async def _browse_mdns(self) -> None:
        from zeroconf import IPVersion, ServiceStateChange
        from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

        loop = asyncio.get_running_loop()
        names: asyncio.Queue[str] = asyncio.Queue()

        def on_change(zeroconf, service_type, name, state_change):
            if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
                loop.call_soon_threadsafe(names.put_nowait, name)

        kwargs = {"interfaces": list(self.config.mdns_interfaces)} if self.config.mdns_interfaces else {}
        try:
            zc = AsyncZeroconf(ip_version=IPVersion.V4Only, **kwargs)
        except Exception as exc:
            self.node.log.warning("discovery: mDNS unavailable: %s: %s", type(exc).__name__, exc)
            return
        browser = None
        try:
            browser = AsyncServiceBrowser(zc.zeroconf, MDNS_SERVICE_TYPE, handlers=[on_change])
            while True:
                name = await names.get()
                info = AsyncServiceInfo(MDNS_SERVICE_TYPE, name)
                if not await info.async_request(zc.zeroconf, 3000):
                    continue
                properties = info.properties or {}
                try:
                    announcement = from_txt(properties, self.secret)
                except DatagramError as exc:
                    self._reject(str(exc), f"mDNS {name}")
                    continue
                # Where to ask: the service's address, and the port in its (unsigned) `q` property.
                query_port, addresses = query_port_from_txt(properties), info.parsed_addresses(IPVersion.V4Only)
                ask = (addresses[0], query_port) if query_port and addresses else None
                self.consider(announcement, "mdns", f"mDNS {name}", ask)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # mDNS is the second way: its failure leaves UDP listening
            self.node.log.warning("discovery: mDNS browsing failed: %s: %s", type(exc).__name__, exc)
        finally:
            try:
                if browser is not None:
                    await browser.async_cancel()
                await zc.async_close()
            except Exception as exc:
                self.node.log.debug("discovery: closing mDNS: %s", exc)

    async def _stop_mdns(self) -> None:
        task, self._mdns_task = self._mdns_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        await self._stop_mdns()
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        self._pending.clear()
        for transport in (self._transport, self._query_transport):
            if transport is not None:
                transport.close()
        self._transport = self._query_transport = None

    # ------------------------------------------------------------ receiving

    def received(self, data: bytes, address: tuple[str, int], via: str | None) -> None:
        """A UDP datagram arrived: an announcement (`via` "udp") or the answer to a query (`via` None)."""
        source = f"{address[0]}:{address[1]}"
        try:
            announcement = decode(data, self.secret)
        except DatagramError as exc:
            self._reject(str(exc), source)
            return
        self.consider(announcement, via or "udp", source, address)

    def consider(self, announcement: Announcement, via: str, source: str, ask: tuple[str, int] | None) -> None:
        """A valid announcement from `source`; `ask`: where its sender answers queries, if known."""
        a = announcement
        if self.config.cluster and a.cluster != self.config.cluster:
            self._reject(f"announcement for another cluster ({a.cluster})", source, level="debug")
            return
        if self.secret:
            pending = self._pending.pop(a.nonce, None) if a.nonce else None
            if pending is not None:
                if pending.timer is not None:
                    pending.timer.cancel()
                via = pending.via
            verdict = self.freshness.judge(a, answers_our_query=pending is not None)
            if verdict is Verdict.DUPLICATE:
                return  # the datagram already taken, again (a worker hears both broadcast addresses)
            if verdict not in (Verdict.FRESH, Verdict.ANSWER):
                if verdict is not Verdict.UNKNOWN:
                    moving = self.announcement is None or a.broker_url != self.announcement.broker_url
                    self._reject(self.freshness.describe(a, verdict), source,
                                 level="warning" if moving else "debug")
                self._ask(ask, via, source, a.server)
                return
            self.freshness.accept(a, verdict)
        self.accepted += 1
        self._act(a, via)

    def _act(self, announcement: Announcement, via: str) -> None:
        """Do what a fresh announcement calls for: take it (at start), follow it, go back, or nothing."""
        a = announcement
        if self._found is not None and not self._found.done():
            self.announcement, self.via = a, via
            self._found.set_result(a)
            return
        if self.announcement is None or not self.config.follow:
            return
        if a.broker_url == self.announcement.broker_url:
            self.announcement = a
            return
        if self._switching:
            return
        if self.config.go_back and a.broker_url in self.earlier:
            now = time.monotonic()
            if now - self._probed.get(a.broker_url, -PROBE_EVERY) >= PROBE_EVERY:
                self._probed[a.broker_url] = now
                self._switching = True
                self.node.spawn(self._switch(a, via, back=True), name="discovery:go-back")
            return
        if self._disconnected_since is None or time.monotonic() - self._disconnected_since < self.config.follow_after:
            return  # still connected (or not for long) to the broker we have: stay
        self._switching = True
        self.node.spawn(self._switch(a, via), name="discovery:switch")

    def _reject(self, reason: str, source: str, level: str = "warning") -> None:
        kind = reason.split(":")[0].split("(")[0].strip()
        self.rejected[kind] = self.rejected.get(kind, 0) + 1
        now = time.monotonic()
        last = self._last_logged.get(kind)
        if last is not None and now - last < self.config.log_every:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last_logged[kind] = now
        more = self._suppressed.pop(kind, 0)
        also = f" ({more} more of this kind since the last report)" if more else ""
        getattr(self.node.log, level)("discovery: ignored a datagram from %s: %s%s", source, reason, also)

    # ------------------------------------------------------------ asking a server for a fresh announcement

    def _ask(self, address: tuple[str, int] | None, via: str, source: str, server: str) -> None:
        """Send a signed query with a new nonce to `address` (soon, at a random moment), unless one is pending."""
        if address is None or self._query_transport is None or len(self._pending) >= MAX_PENDING_QUERIES:
            return
        if any(p.address == address for p in self._pending.values()):
            return
        nonce = secrets.token_hex(16)
        pending = self._pending[nonce] = _PendingQuery(address, via)
        delay = random.uniform(0, QUERY_SPREAD)
        loop = asyncio.get_running_loop()
        loop.call_later(delay, self._send_query, nonce)
        pending.timer = loop.call_later(delay + QUERY_TIMEOUT, self._unanswered, nonce, source, server)
        self.node.log.debug("discovery: asking %s (server %s) for a fresh announcement", source, server)

    def _send_query(self, nonce: str) -> None:
        pending = self._pending.get(nonce)
        if pending is None or self._query_transport is None:
            return
        self.queries += 1
        self._query_transport.sendto(encode_query(Query(self.node.id, nonce), self.secret), pending.address)

    def _unanswered(self, nonce: str, source: str, server: str) -> None:
        if self._pending.pop(nonce, None) is not None:
            self._reject(f"unconfirmed announcement: no answer from {source} within {QUERY_TIMEOUT:g} s to a "
                         f"query about server {server} (a replay, or the server is unreachable)", source)

    # ------------------------------------------------------------ following a new broker, going back

    async def _switch(self, announcement: Announcement, via: str, back: bool = False) -> None:
        try:
            new = parse_broker_url(announcement.broker_url)
            node = self.node
            if announcement.prefix != node.topics.prefix:
                node.log.warning("discovery: the server now announces %s with prefix %s; this node uses %s "
                                 "and cannot change it while running: restart it to follow",
                                 new, announcement.prefix, node.topics.prefix)
                return
            if new.tls != node.broker.tls:
                node.log.warning("discovery: the server now announces %s; switching between mqtt:// and mqtts:// "
                                 "needs a restart", new)
                return
            if back and not await self._reachable(new):
                node.log.debug("discovery: %s is announced again but not reachable yet", new)
                return
            if back and announcement.broker_url not in self.earlier:
                return  # the node moved meanwhile
            old = self.announcement
            node.retarget_broker(new)
            if back:
                del self.earlier[self.earlier.index(announcement.broker_url):]
            else:
                self.earlier = [url for url in self.earlier if url != announcement.broker_url]
                if old is not None:
                    self.earlier = (self.earlier + [old.broker_url])[-MAX_EARLIER:]
            self.announcement, self.via = announcement, via
            self.switches += 1
            await self._face_broker(new.host)
            if back:
                node.log.warning("discovery: %s is announced again and reachable: going back to it from %s", new,
                                 old.broker_url if old else "?")
            else:
                node.log.warning("discovery: the server now announces %s: switching from %s", new,
                                 old.broker_url if old else "?")
        finally:
            self._switching = False

    async def _reachable(self, broker: BrokerAddress) -> bool:
        """Whether the broker accepts a TCP connection (closed at once)."""
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(broker.host, broker.port), PROBE_TIMEOUT)
        except (OSError, TimeoutError):
            return False
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return True

    async def _face_broker(self, host: str) -> None:
        """Make the `ip` (and `mac`) in the node's info those of the interface facing the broker."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_DGRAM)
            towards = infos[0][4][0]
        except (OSError, IndexError):
            return
        ip = primary_ip(towards)
        if ip == self.node.facts.get("ip"):
            return
        self.node.facts["ip"] = ip
        interface = interface_for_ip(ip)
        if interface and interface != "lo":  # loopback has no MAC: keep the machine's own
            self.node.facts["mac"] = mac_address(interface)
