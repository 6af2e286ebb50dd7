"""The past telemetry of the cluster's nodes, as a plugin that keeps it offers it to the others of its node.

The `telemetry_store` plugin is one; a dashboard finds it without importing
it (no plugin imports another's module):

    history = node.lookup(TelemetryHistory, default=None)
    samples = await history.samples("pi-0a1b2c", since=time.time() - 900) if history else []

A sample is the node's telemetry message as it was received
(`{"node", "time", "seq", "interval", "readings": {...}}`, see
docs/telemetry.schema.json), oldest first.  It came from the network: a reader
checks every value it uses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class TelemetryHistory(ABC):
    @abstractmethod
    async def samples(self, node_id: str, since: float = 0.0) -> list[dict[str, Any]]:
        """The node's samples with a time at or after `since` (seconds since 1970), oldest first."""
