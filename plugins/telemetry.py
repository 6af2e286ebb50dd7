"""Publishes the node's telemetry: every plugin's `pidaemon_telemetry` readings, at an interval.

QoS 0 on `<prefix>/nodes/<id>/telemetry`, retained, so that a newcomer sees the
last readings at once and a missed sample is simply superseded by the next.
The payload is described by docs/telemetry.schema.json:

    {"node": "pi-1a2b3c", "time": 1700000000.123, "seq": 42, "interval": 5,
     "readings": {"cpu_percent": 12.5, ...}}

`seq` counts the samples since the daemon started, so that a receiver can tell
a missed sample (a gap) from a restart (a smaller number).
"""

from __future__ import annotations

import asyncio
import time

from pidaemon import hookimpl
from pidaemon.schema import Number, settings


@settings
class TelemetrySettings:
    interval: float = Number(min=0.1, default=5, doc="seconds between two publications")


class TelemetryPlugin:
    config_schema = TelemetrySettings

    def __init__(self, node, config: TelemetrySettings):
        self.node = node
        self.interval = config.interval
        self.published = 0
        self.seq = 0

    def sample(self) -> dict:
        self.seq += 1
        return {"node": self.node.id, "time": round(time.time(), 3), "seq": self.seq, "interval": self.interval,
                "readings": self.node.collect_telemetry()}

    @hookimpl
    def pidaemon_startup(self, node):
        node.supervise(self._publish_forever, "telemetry")  # restarted (and counted) if it ever crashes

    async def _publish_forever(self):
        loop = asyncio.get_running_loop()
        next_time = loop.time()
        while True:
            try:
                if self.node.publish(self.node.topics.telemetry(self.node.id), self.sample(), qos=0, retain=True):
                    self.published += 1
            except Exception as exc:  # one bad sample must not end the node's telemetry
                self.node.log.error("telemetry: cannot publish a sample: %s: %s", type(exc).__name__, exc)
            # A fixed rhythm: the time spent collecting does not stretch the interval.
            next_time = max(next_time + self.interval, loop.time())
            await asyncio.sleep(next_time - loop.time())
