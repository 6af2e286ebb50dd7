"""Publishes the node's telemetry: every plugin's `pidaemon_telemetry` readings, at an interval.

QoS 0 on `<prefix>/nodes/<id>/telemetry`, retained, so that a newcomer sees the
last readings at once and a missed sample is simply superseded by the next.
"""

from __future__ import annotations

import asyncio
import time

from pidaemon import hookimpl
from pidaemon.schema import Number, Section


class TelemetryPlugin:
    config_schema = Section({
        "interval": Number(min=0.1, default=5, doc="seconds between two publications"),
    })

    def __init__(self, node, config):
        self.node = node
        self.interval = config["interval"]
        self.published = 0

    def sample(self) -> dict:
        return {"node": self.node.id, "time": round(time.time(), 3), "readings": self.node.collect_telemetry()}

    @hookimpl
    def pidaemon_startup(self, node):
        node.spawn(self._publish_forever(), name="telemetry")

    async def _publish_forever(self):
        while True:
            if self.node.publish(self.node.topics.telemetry(self.node.id), self.sample(), qos=0, retain=True):
                self.published += 1
            await asyncio.sleep(self.interval)
