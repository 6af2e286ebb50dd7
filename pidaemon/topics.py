"""The topic layout: the public MQTT interface, written down in docs/protocol.md.

Every topic starts with the configured prefix (default `picluster`).
"""

from __future__ import annotations

from dataclasses import dataclass

# A health ping may ask nodes to spread their answers over up to this many seconds
# (`"spread"` in docs/protocol.md); nodes treat a longer spread as this one.
MAX_PING_SPREAD = 30.0


@dataclass(frozen=True)
class Topics:
    prefix: str = "picluster"

    def join(self, *levels: str) -> str:
        return "/".join((self.prefix, *levels))

    def status(self, node_id: str) -> str:
        """Retained `online` / `offline` (also the last will)."""
        return self.join("nodes", node_id, "status")

    def info(self, node_id: str) -> str:
        """Retained JSON: role, hostname, ip, mac, version, plugins, capabilities."""
        return self.join("nodes", node_id, "info")

    def telemetry(self, node_id: str) -> str:
        return self.join("nodes", node_id, "telemetry")

    def command(self, node_id: str, name: str) -> str:
        """Commands addressed to one node (QoS 1, never retained)."""
        return self.join("nodes", node_id, "cmd", name)

    def reply(self, node_id: str, name: str) -> str:
        return self.join("nodes", node_id, "reply", name)

    def broadcast(self, name: str) -> str:
        """Commands to every node."""
        return self.join("broadcast", name)
