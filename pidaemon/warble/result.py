"""The outcome of a run: status, output, error, steps and time."""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ErrorInfo

STATUSES = ("ok", "error", "timeout", "step_limit", "memory_limit", "output_limit", "crashed")


@dataclass
class Result:
    status: str                         # one of STATUSES
    output: list[str] = field(default_factory=list)
    error: ErrorInfo | None = None
    steps: int = 0                      # loop iterations + built-in calls
    elapsed: float = 0.0                # seconds

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "output": list(self.output),
            "error": None if self.error is None else self.error.to_dict(),
            "steps": self.steps,
            "elapsed": round(self.elapsed, 6),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Result":
        err = d.get("error")
        return cls(
            status=str(d["status"]),
            output=[str(x) for x in d.get("output", [])],
            error=None if err is None else ErrorInfo(str(err["message"]), err.get("line"), err.get("column")),
            steps=int(d.get("steps", 0)),
            elapsed=float(d.get("elapsed", 0.0)),
        )
