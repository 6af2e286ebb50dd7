"""Facts about the machine a node runs on: hostname, IP and MAC address."""

from __future__ import annotations

import os
import platform
import socket
import uuid
from pathlib import Path

SYS_NET = Path("/sys/class/net")


def hostname() -> str:
    return socket.gethostname()


def primary_ip(towards: str = "192.0.2.1") -> str:
    """The local address the kernel would use to reach `towards` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((towards, 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def interface_for_ip(ip: str) -> str | None:
    """The network interface holding `ip` (Linux: /proc/net/fib_trie is awkward; use the routes)."""
    try:
        import fcntl
        import struct
    except ImportError:  # pragma: no cover - not Linux
        return None
    for iface in sorted(p.name for p in SYS_NET.iterdir()) if SYS_NET.exists() else []:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", iface[:15].encode()))  # SIOCGIFADDR
            except OSError:
                continue
            if socket.inet_ntoa(packed[20:24]) == ip:
                return iface
    return None


def mac_address(iface: str | None = None) -> str:
    """The MAC of `iface`, else of the first real interface, else uuid.getnode()."""
    candidates = [iface] if iface else []
    if SYS_NET.exists():
        candidates += sorted(p.name for p in SYS_NET.iterdir() if p.name != "lo")
    for name in candidates:
        try:
            mac = (SYS_NET / name / "address").read_text().strip()
        except OSError:
            continue
        if mac and mac != "00:00:00:00:00:00":
            return mac
    node = uuid.getnode()
    return ":".join(f"{(node >> shift) & 0xff:02x}" for shift in range(40, -8, -8))


def machine_facts(broker_host: str | None = None) -> dict:
    """hostname, ip, mac, os and cpu count, with the IP that faces the broker."""
    towards = broker_host if broker_host and broker_host not in ("localhost",) else "192.0.2.1"
    try:
        towards = socket.gethostbyname(towards)
    except OSError:
        towards = "192.0.2.1"
    ip = primary_ip(towards)
    return {
        "hostname": hostname(),
        "ip": ip,
        "mac": mac_address(interface_for_ip(ip)),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_count": os.cpu_count() or 1,
    }
