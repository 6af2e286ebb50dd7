"""What the registry knows of one node: its state, since when, what it is and its latest readings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATES = ("online", "unhealthy", "offline", "unknown")
INFO_FIELDS = ("role", "hostname", "ip", "mac", "os", "machine", "version", "cpu_count", "memory_total")


@dataclass
class NodeRecord:
    id: str
    state: str = "unknown"
    since: float = 0.0
    last_seen: float | None = None
    role: str | None = None
    hostname: str | None = None
    ip: str | None = None
    mac: str | None = None
    os: str | None = None
    machine: str | None = None
    version: str | None = None
    cpu_count: int | None = None
    memory_total: int | None = None
    capabilities: list[str] = field(default_factory=list)
    failed_plugins: list[str] = field(default_factory=list)
    misses: int = 0
    telemetry: dict[str, Any] | None = None
    # Not published nor stored: health bookkeeping.
    answered_seq: int = field(default=0, repr=False)
    expect_from_seq: int = field(default=0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["answered_seq"], data["expect_from_seq"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NodeRecord":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__
                 and k not in ("answered_seq", "expect_from_seq")}
        return cls(**known)
