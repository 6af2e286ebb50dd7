"""What the registry knows of one node: its state, since when, what it is and its latest readings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .fields import MAX_TIME, Invalid, integer, name, names, number
from .messages import INFO_RULES, NodeInfo, check_info_field
from .telemetry_summary import check_summary

STATES = ("online", "unhealthy", "offline", "unknown")
INFO_FIELDS = tuple(fact for fact, _ in INFO_RULES)
MAX_MISSES = 10 ** 9


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
    telemetry: dict[str, Any] | None = None   # see telemetry_summary: every value checked
    # Not published nor stored: health bookkeeping.
    answered_seq: int = field(default=0, repr=False)
    expect_from_seq: int = field(default=0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["answered_seq"], data["expect_from_seq"]
        return data

    def apply_info(self, info: NodeInfo) -> None:
        """The facts of the node's latest `info` replace the previous ones."""
        for fact in INFO_FIELDS:
            setattr(self, fact, getattr(info, fact))
        self.capabilities = list(info.capabilities)
        self.failed_plugins = list(info.failed_plugins)

    @classmethod
    def from_stored(cls, data: Any) -> "NodeRecord":
        """A record as `to_dict` wrote it, checked like the messages it came from (an older
        version of the registry stored whatever nodes said).  Raises Invalid; unknown keys are ignored."""
        if not isinstance(data, dict):
            raise Invalid("record", data, "a JSON object")
        state = data.get("state", "unknown")
        if state not in STATES:
            raise Invalid("state", state, " or ".join(STATES))
        last_seen, telemetry = data.get("last_seen"), data.get("telemetry")
        return cls(
            id=name("id", data.get("id")),
            state=state,
            since=number("since", data.get("since", 0.0), 0.0, MAX_TIME),
            last_seen=None if last_seen is None else number("last_seen", last_seen, 0.0, MAX_TIME),
            **{fact: check_info_field(fact, data.get(fact)) for fact in INFO_FIELDS},
            capabilities=names("capabilities", data.get("capabilities", [])),
            failed_plugins=names("failed_plugins", data.get("failed_plugins", [])),
            misses=integer("misses", data.get("misses", 0), 0, MAX_MISSES),
            telemetry=None if telemetry is None else check_summary(telemetry),
        )
