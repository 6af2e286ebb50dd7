"""Tests that start whole clusters of processes (mosquitto, a server, workers), each up to a minute.

`scripts/test` does not collect this folder (pyproject.toml's `norecursedirs`), so
that the default suite stays short; `scripts/test tests/clusters` runs them, and
CI runs both (`.ci/run`).
"""
