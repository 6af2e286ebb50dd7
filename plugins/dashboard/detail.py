"""One node's panel (`GET /dashboard/nodes/{id}`): its view, info, health, plugins and recent readings.

The readings come from the telemetry store of the same node, if there is one
(`pidaemon.telemetry_history.TelemetryHistory`), as the samples it received:
from the network, so each value is checked like a live one (`readings_of`).
A long window is thinned to at most `MAX_POINTS` samples, evenly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pidaemon.hooks import describe_error
from pidaemon.telemetry_history import TelemetryHistory

from .messages import MAX_TIME, readings_of
from .model import ClusterModel
from .values import number

MAX_POINTS = 360          # samples in a sparkline
HISTORY_TIMEOUT = 5.0     # seconds the telemetry store has to answer


def empty_series() -> dict[str, list]:
    return {"time": [], "cpu": [], "temp": [], "mem": []}


def sparklines(samples: list[Any]) -> dict[str, list]:
    """`{"time": [...], "cpu": [...], "temp": [...], "mem": [...]}`, oldest first; a missing or wrong reading
    is null at its time; a sample without a valid time is left out."""
    usable = [(t, s) for s in samples if isinstance(s, dict)
              and (t := number(s.get("time"), 0, MAX_TIME, 3)) is not None]
    usable.sort(key=lambda pair: pair[0])
    if len(usable) > MAX_POINTS:
        step = len(usable) / MAX_POINTS
        usable = [usable[int(i * step)] for i in range(MAX_POINTS - 1)] + [usable[-1]]
    series = empty_series()
    for sample_time, sample in usable:
        readings = readings_of(sample)
        series["time"].append(sample_time)
        series["cpu"].append(readings.cpu)
        series["temp"].append(readings.temp)
        series["mem"].append(readings.mem)
    return series


async def node_detail(model: ClusterModel, node_id: str, history: TelemetryHistory | None, window: float,
                      log: logging.Logger | logging.LoggerAdapter) -> dict[str, Any] | None:
    """The panel of a node the model knows; None for any other."""
    entry = model.nodes.get(node_id)
    if entry is None:
        return None
    series = empty_series()
    if history is not None:
        try:
            samples = await asyncio.wait_for(history.samples(node_id, time.time() - window), HISTORY_TIMEOUT)
            series = sparklines(samples if isinstance(samples, list) else [])
        except Exception as exc:  # a store that is closing, or failing: the panel shows the rest
            log.warning("dashboard: no telemetry history for %s: %s", node_id, describe_error(exc))
    entry = model.nodes.get(node_id) or entry  # the model may have moved on while the store answered
    return {"id": node_id, "view": entry.view(), "info": dict(entry.facts.info) or None,
            "health": dict(entry.health.payload) if entry.health else None,
            "plugins": dict(entry.facts.plugins), "history": series}
