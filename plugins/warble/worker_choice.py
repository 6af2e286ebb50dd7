"""Choosing the worker for the next Warble job.

Candidates are healthy workers that advertise the `warble` capability (the
registry says which).  A worker above the CPU threshold (30 % by default) or
already running as many jobs as it may (its core count by default) gets no new
work; among the rest, the least loaded wins: fewest jobs in flight relative to
its capacity, then the lowest recent CPU.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerLoad:
    node: str
    cpu_percent: float | None  # from the worker's latest telemetry; None if not known yet
    capacity: int              # jobs it may run at once
    in_flight: int             # jobs the server has handed to it and not seen finish


def pick_worker(workers: list[WorkerLoad], cpu_threshold: float = 30.0) -> str | None:
    """The id of the least loaded worker that may take a job, or None if all are busy."""
    eligible = [w for w in workers
                if w.in_flight < w.capacity and (w.cpu_percent is None or w.cpu_percent < cpu_threshold)]
    if not eligible:
        return None
    best = min(eligible, key=lambda w: (w.in_flight / w.capacity, w.cpu_percent or 0.0, w.node))
    return best.node
