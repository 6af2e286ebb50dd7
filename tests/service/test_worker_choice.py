"""Choosing the worker for the next Warble job: the least loaded one under the CPU threshold."""

from __future__ import annotations

from pidaemon_plugins.warble.worker_choice import WorkerLoad, pick_worker


def test_pick_worker_prefers_the_least_loaded_and_skips_busy_ones():
    workers = [
        WorkerLoad("hot", cpu_percent=85.0, capacity=4, in_flight=0),
        WorkerLoad("full", cpu_percent=5.0, capacity=2, in_flight=2),
        WorkerLoad("busy", cpu_percent=10.0, capacity=4, in_flight=2),
        WorkerLoad("idle", cpu_percent=12.0, capacity=4, in_flight=0),
        WorkerLoad("idler", cpu_percent=3.0, capacity=4, in_flight=0),
    ]
    assert pick_worker(workers) == "idler"
    assert pick_worker(workers[:3]) == "busy"
    assert pick_worker(workers[:2]) is None
    assert pick_worker([WorkerLoad("new", None, 1, 0)]) == "new"
    assert pick_worker(workers, cpu_threshold=90) == "idler"
