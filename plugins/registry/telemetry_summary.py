"""The few readings of a node's telemetry that the registry keeps and `pidaemon status` shows."""

from __future__ import annotations

from typing import Any


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summarize_telemetry(payload: dict[str, Any]) -> dict[str, Any]:
    """From a telemetry payload (`{"node", "time", "readings": {...}}`), what a table of nodes needs.

    Readings that are absent stay absent.
    """
    readings = payload.get("readings")
    if not isinstance(readings, dict):
        readings = {}
    summary: dict[str, Any] = {}
    if _number(payload.get("time")):
        summary["time"] = payload["time"]
    if _number(readings.get("cpu_percent")):
        summary["cpu_percent"] = readings["cpu_percent"]
    memory = readings.get("memory")
    if isinstance(memory, dict) and _number(memory.get("percent")):
        summary["memory_percent"] = memory["percent"]
    if _number(readings.get("cpu_temperature")):
        summary["cpu_temperature"] = readings["cpu_temperature"]
    load = readings.get("load_average")
    if isinstance(load, list) and load and _number(load[0]):
        summary["load_1m"] = load[0]
    throttling = readings.get("throttling")
    if isinstance(throttling, dict) and isinstance(throttling.get("raw"), str):
        summary["throttled"] = throttling["raw"]
    store = readings.get("telemetry_store")
    if isinstance(store, dict) and isinstance(store.get("forwarder"), dict):
        forwarder = store["forwarder"]
        summary["forwarder"] = {k: forwarder[k] for k in ("buffered", "dropped", "delivered", "failures")
                                if _number(forwarder.get(k))}
    return summary
