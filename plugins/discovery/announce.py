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
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

from pidaemon import hookimpl
from pidaemon.names import NAME, NAME_DOC
from pidaemon.nodeinfo import primary_ip
from pidaemon.schema import Boolean, Integer, ListOf, Number, String, settings

from .datagram import DEFAULT_PORT, MDNS_SERVICE_TYPE, Announcement, DatagramError, encode, to_txt
from .secret import SigningSettings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


class AnnouncePlugin:
    config_schema = AnnounceSettings

    def __init__(self, node, config: AnnounceSettings):
        self.node = node
        self.config = config
        self.targets = list(config.targets)
        self.secret = config.read_secret()
        self.sent = 0
        self.send_errors = 0
        self._failing_targets: set[str] = set()
        self._socket: socket.socket | None = None
        self._zeroconf = None
        self._service = None

    # ------------------------------------------------------------ what is announced

    def announcement(self) -> Announcement:
        broker = self.node.broker
        host = self.config.broker_host or broker.host
        if not self.config.broker_host and is_loopback(host):
            host = primary_ip()
        return Announcement(cluster=self.config.cluster, server=self.node.id, host=host,
                            port=self.config.broker_port or broker.port, prefix=self.node.topics.prefix,
                            tls=broker.tls, time=round(time.time(), 3))

    def datagram(self) -> bytes:
        return encode(self.announcement(), self.secret)

    # ------------------------------------------------------------ hooks

    @hookimpl
    def pidaemon_startup(self, node):
        self.datagram()  # a bad broker_host fails the plugin at start, not later
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setblocking(False)
        self._socket = sock
        node.spawn(self._announce_forever(), name="announce")
        if self.config.mdns:
            node.spawn(self._register_mdns(), name="announce:mdns")
        node.log.info("announcing %s (cluster %s) on UDP port %d to %s every %s s%s%s",
                      self.announcement().broker_url, self.config.cluster, self.config.port,
                      ", ".join(self.targets) or "nobody",
                      self.config.interval, " and by mDNS" if self.config.mdns else "",
                      ", signed" if self.secret else "")

    @hookimpl
    def pidaemon_info(self, node):
        return {"capabilities": ["announce"]}

    @hookimpl
    async def pidaemon_shutdown(self, node):
        if self._socket is not None:
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

    # ------------------------------------------------------------ mDNS

    async def _register_mdns(self) -> None:
        from zeroconf import IPVersion, NonUniqueNameException
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

        announcement = self.announcement()
        try:
            address = socket.inet_aton(socket.gethostbyname(announcement.host))
        except OSError:
            address = None
        info = AsyncServiceInfo(
            MDNS_SERVICE_TYPE, f"{self.config.cluster}.{MDNS_SERVICE_TYPE}",
            addresses=[address] if address else None, port=announcement.port,
            properties=to_txt(encode(announcement, self.secret)),
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
