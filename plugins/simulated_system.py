"""Readings of a simulated Pi, for the nodes of `pidaemon sim`: CPU, memory and temperature, marked simulated.

The simulated nodes of a desk cluster share one machine, so the `system`
plugin would report that machine's readings for every one of them.  This
plugin reports, for each node its own, readings that move the way a Raspberry
Pi 3B+'s do (1 GB of memory, a CPU between idle and busy, a temperature that
follows the CPU), and says so: `"simulated": true` beside them in the
telemetry, so that no dashboard mistakes them for a real machine.
"""

from __future__ import annotations

import random

from pidaemon import hookimpl
from pidaemon.schema import Integer, Number, settings

MEMORY_TOTAL = 1024 ** 3


@settings
class SimulatedSystemSettings:
    cpu_average: float = Number(min=0, max=100, default=10, doc="the CPU percent the readings wander around")
    seed: int | None = Integer(default=None, doc="random seed; default: from the node id (each node differs)")


class SimulatedSystem:
    config_schema = SimulatedSystemSettings

    def __init__(self, node, config: SimulatedSystemSettings):
        self.config = config
        self.random = random.Random(node.id if config.seed is None else config.seed)
        self.cpu = config.cpu_average
        self.memory = 30.0

    @hookimpl
    def pidaemon_info(self):
        return {"memory_total": MEMORY_TOTAL, "simulated": True}

    @hookimpl
    def pidaemon_telemetry(self):
        # A random walk pulled back towards the average: readings that drift, not noise.
        self.cpu = _clamp(self.cpu + self.random.gauss(0, 4) + (self.config.cpu_average - self.cpu) * 0.2, 0, 100)
        self.memory = _clamp(self.memory + self.random.gauss(0, 1) + (30 - self.memory) * 0.1, 5, 95)
        return {
            "simulated": True,
            "cpu_percent": round(self.cpu, 1),
            "memory": {"total": MEMORY_TOTAL, "available": int(MEMORY_TOTAL * (1 - self.memory / 100)),
                       "percent": round(self.memory, 1)},
            "cpu_temperature": round(42 + self.cpu * 0.25 + self.random.uniform(-0.5, 0.5), 1),
        }


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))
