"""The machine's readings for the node's telemetry: CPU, memory, disks, network, temperature, throttling.

psutil does the reading.  A field the machine does not have (no thermal zone,
no `vcgencmd`, no swap counters...) is left out, never faked.  Percentages of
CPU are computed from the difference between two readings held by this plugin
instance, so that several daemons in one process (the simulator) do not reset
each other's counters, as the module-level `psutil.cpu_percent()` would.

`vcgencmd get_throttled` is a subprocess: it runs in a background task every
`throttling_interval` and the telemetry hook reads its cached answer.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

import psutil

from pidaemon import hookimpl
from pidaemon.schema import Boolean, Number, String, settings

# Bits of `vcgencmd get_throttled` (Raspberry Pi firmware documentation).
THROTTLE_BITS = {
    "under_voltage": 0,
    "frequency_capped": 1,
    "throttled": 2,
    "soft_temperature_limit": 3,
    "under_voltage_occurred": 16,
    "frequency_capped_occurred": 17,
    "throttled_occurred": 18,
    "soft_temperature_limit_occurred": 19,
}
# Thermal zone types that name the CPU, best first; otherwise the first zone is the CPU's.
CPU_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "soc_thermal", "soc-thermal", "x86_pkg_temp", "cpu")


def parse_throttled(text: str) -> dict[str, Any] | None:
    """`throttled=0x50005` -> {"raw": "0x50005", "under_voltage": True, ...}; None if unreadable."""
    text = text.strip()
    if not text.startswith("throttled="):
        return None
    try:
        value = int(text.split("=", 1)[1], 16)
    except ValueError:
        return None
    flags = {name: bool(value >> bit & 1) for name, bit in THROTTLE_BITS.items()}
    return {"raw": f"0x{value:x}", **flags}


def read_thermal_zones(root: Path) -> dict[str, float]:
    """{zone type: degrees Celsius} from a sysfs thermal tree (`temp` is in millidegrees)."""
    zones: dict[str, float] = {}
    try:
        entries = sorted(root.glob("thermal_zone*"), key=lambda p: int(p.name[12:] or 0)
                         if p.name[12:].isdigit() else 1 << 30)
    except OSError:
        return zones
    for zone in entries:
        try:
            millidegrees = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            kind = (zone / "type").read_text().strip() or zone.name
        except OSError:
            kind = zone.name
        if kind in zones:
            kind = f"{kind}.{zone.name}"
        zones[kind] = round(millidegrees / 1000.0, 2)
    return zones


def cpu_zone(zones: dict[str, float]) -> float | None:
    for kind in CPU_ZONE_TYPES:
        if kind in zones:
            return zones[kind]
    return next(iter(zones.values()), None)


def _busy_and_total(times) -> tuple[float, float]:
    total = sum(times)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


MIN_CPU_SECONDS = 0.05  # per CPU: a shorter window gives a meaningless percentage (the clock ticks at 10 ms)


def _percent(previous, current, cpus: int = 1) -> float | None:
    busy0, total0 = _busy_and_total(previous)
    busy1, total1 = _busy_and_total(current)
    if total1 - total0 < MIN_CPU_SECONDS * cpus:
        return None
    return round(max(0.0, min(100.0, (busy1 - busy0) / (total1 - total0) * 100)), 1)


def _disk(path: str) -> dict[str, Any] | None:
    try:
        usage = psutil.disk_usage(path)
    except OSError:
        return None
    return {"path": path, "total": usage.total, "used": usage.used, "free": usage.free,
            "percent": round(usage.percent, 1)}


@settings
class SystemSettings:
    thermal_root: str = String(default="/sys/class/thermal", doc="sysfs thermal tree (tests point it elsewhere)")
    vcgencmd: str | None = String(default="vcgencmd",
                                  doc="Raspberry Pi firmware tool for the throttling flags; a name looked up in "
                                      "PATH or a path; left out when it is missing")
    throttling_interval: float = Number(min=0.05, default=5, doc="seconds between two `vcgencmd get_throttled`")
    per_core: bool = Boolean(default=True, doc="also report CPU percent per core")
    state_disk: str | None = String(default=None, doc="directory whose disk use is reported; default: node.state_dir")


class SystemReadings:
    config_schema = SystemSettings

    def __init__(self, node, config: SystemSettings):
        self.node = node
        self.config = config
        self.thermal_root = Path(config.thermal_root)
        self.vcgencmd = shutil.which(config.vcgencmd) if config.vcgencmd else None
        self.throttling: dict[str, Any] | None = None
        self.process = psutil.Process()
        self._cpu = psutil.cpu_times()
        self._cores = psutil.cpu_times(percpu=True)
        self._process_cpu = self._process_seconds()
        self._process_clock = time.monotonic()

    # ------------------------------------------------------------ hooks

    @hookimpl
    def pidaemon_startup(self, node):
        if self.vcgencmd:
            node.spawn(self._poll_throttling(), name="system:vcgencmd")

    @hookimpl
    def pidaemon_info(self, node):
        info = {"memory_total": psutil.virtual_memory().total}
        swap = self._swap()
        if swap:
            info["swap_total"] = swap["total"]
        return info

    @hookimpl
    def pidaemon_telemetry(self, node):
        return self.readings()

    # ------------------------------------------------------------ readings

    def readings(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # A sample taken too soon after the previous one (the first, at start-up) has no
        # CPU percentage; the next one covers both windows.
        cpu = psutil.cpu_times()
        percent = _percent(self._cpu, cpu, len(self._cores) or 1)
        if percent is not None:
            out["cpu_percent"] = percent
            self._cpu = cpu
        if self.config.per_core:
            cores = psutil.cpu_times(percpu=True)
            if len(cores) != len(self._cores):  # a CPU went on- or offline: start again
                self._cores = cores
            else:
                per_core = [_percent(a, b) for a, b in zip(self._cores, cores)]
                if all(p is not None for p in per_core):
                    out["cpu_percent_per_core"] = per_core
                    self._cores = cores
        try:
            out["load_average"] = [round(x, 2) for x in os.getloadavg()]
        except (OSError, AttributeError):
            pass
        memory = psutil.virtual_memory()
        out["memory"] = {"total": memory.total, "available": memory.available, "percent": round(memory.percent, 1)}
        swap = self._swap()
        if swap is not None:
            out["swap"] = swap
        root = _disk("/")
        if root:
            out["disk_root"] = root
        state = _disk(self.config.state_disk or str(self.node.state_dir))
        if state:
            out["disk_state"] = state
        network = self._network()
        if network:
            out["network"] = network
        try:
            out["uptime"] = round(time.time() - psutil.boot_time(), 1)
        except (OSError, RuntimeError):
            pass
        zones = read_thermal_zones(self.thermal_root)
        if zones:
            out["cpu_temperature"] = cpu_zone(zones)
            out["thermal_zones"] = zones
        if self.throttling is not None:
            out["throttling"] = dict(self.throttling)
        daemon = self._daemon_usage()
        if daemon:
            out["daemon"] = daemon
        return out

    def _swap(self) -> dict[str, Any] | None:
        try:
            swap = psutil.swap_memory()
        except (OSError, RuntimeError):
            return None
        return {"total": swap.total, "used": swap.used, "percent": round(swap.percent, 1)}

    def _network(self) -> dict[str, Any] | None:
        try:
            counters = psutil.net_io_counters(pernic=True)
        except (OSError, RuntimeError):
            return None
        real = [c for name, c in counters.items() if name != "lo"]
        if not real:
            return None
        return {"bytes_sent": sum(c.bytes_sent for c in real), "bytes_recv": sum(c.bytes_recv for c in real)}

    def _process_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def _daemon_usage(self) -> dict[str, Any] | None:
        try:
            with self.process.oneshot():
                seconds = self._process_seconds()
                usage: dict[str, Any] = {"rss": self.process.memory_info().rss,
                                         "threads": self.process.num_threads()}
                if hasattr(self.process, "num_fds"):
                    usage["fds"] = self.process.num_fds()
        except psutil.Error:
            return None
        now = time.monotonic()
        elapsed = now - self._process_clock
        if elapsed >= MIN_CPU_SECONDS:
            usage["cpu_percent"] = round(max(0.0, (seconds - self._process_cpu) / elapsed * 100), 1)
            self._process_cpu, self._process_clock = seconds, now
        return usage

    async def _poll_throttling(self) -> None:
        failures = 0
        while True:
            result = await self._read_throttling()
            if result is None:
                failures += 1
                if failures == 3:
                    self.node.log.warning("system: %s get_throttled keeps failing; throttling flags left out",
                                          self.vcgencmd)
            else:
                failures = 0
            self.throttling = result
            await asyncio.sleep(self.config.throttling_interval)

    async def _read_throttling(self) -> dict[str, Any] | None:
        try:
            process = await asyncio.create_subprocess_exec(
                self.vcgencmd, "get_throttled", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        except OSError:
            return None
        try:
            stdout, _ = await asyncio.wait_for(process.communicate(), 5)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            return None
        except asyncio.CancelledError:  # shutdown: leave no process behind
            process.kill()
            raise
        if process.returncode != 0:
            return None
        return parse_throttled(stdout.decode("ascii", "replace"))
