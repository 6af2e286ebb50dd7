"""Open connections, counted in all and per client address: the cap that slow clients meet."""

from __future__ import annotations

from collections import Counter


class ConnectionTable:
    """Which connections are open, by client address; `admit` says why one more may not be."""

    def __init__(self, max_connections: int, max_per_client: int):
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.by_address: Counter[str] = Counter()
        self.open = 0
        self.admitted = 0  # since the start

    def admit(self, address: str) -> str | None:
        """Count a new connection from `address`; or, over a cap, the refusal's message (nothing counted)."""
        if self.open >= self.max_connections:
            return f"busy: {self.max_connections} connections are open; try again in a moment"
        if self.by_address[address] >= self.max_per_client:
            return f"{self.max_per_client} connections from {address} are open already; try again in a moment"
        self.by_address[address] += 1
        self.open += 1
        self.admitted += 1
        return None

    def release(self, address: str) -> None:
        self.open -= 1
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]
