"""The cluster's SAVE/LOAD store: a run's SAVEs wait with its attempt and are applied with its result."""

from __future__ import annotations

import pytest

from pidaemon.warble.errors import QuotaExceeded
from pidaemon_plugins.warble.job_values import JobValues


@pytest.fixture
def store(tmp_path):
    values = JobValues(str(tmp_path / "store.sqlite3"), max_keys=3)
    yield values
    values.close()


def test_a_runs_saves_are_its_own_until_its_result_commits_them(store):
    store.set("ada", "n", 1)
    store.save("job", 1, "ada", "n", 2)
    assert store.load("job", 1, "ada", "n") == 2       # the run sees its own SAVE
    assert store.get("ada", "n") == 1                 # nobody else does yet
    assert store.load("other", 1, "ada", "n") == 1
    result = store.commit("job", 1, "ada", {"status": "ok", "output": ["2"]})
    assert result["output"] == ["2"] and store.get("ada", "n") == 2
    assert store.committed() == {"job": (1, result)}
    store.forget_committed("job")
    assert store.committed() == {}


def test_the_first_committed_result_counts_and_a_later_attempts_saves_are_not_applied(store):
    store.save("job", 1, "ada", "n", 1)
    first = store.commit("job", 1, "ada", {"output": ["1"]})
    store.save("job", 2, "ada", "n", 2)             # a stale second run, still saving
    again = store.commit("job", 2, "ada", {"output": ["2"]})
    assert again == first and store.get("ada", "n") == 1


def test_a_discarded_attempt_leaves_nothing(store):
    store.save("job", 1, "ada", "n", 5)
    assert store.discard("job", 1) == 1
    assert store.load("job", 1, "ada", "n") is None and store.get("ada", "n") is None


def test_pending_names_count_against_the_quota(store):
    store.set("ada", "a", 1)
    store.save("j1", 1, "ada", "b", 1)
    store.save("j2", 1, "ada", "c", 1)
    with pytest.raises(QuotaExceeded):
        store.save("j3", 1, "ada", "d", 1)
    store.save("j3", 1, "ada", "a", 2)              # a name already kept is no new name
    assert store.load("j3", 1, "ada", "a") == 2


def test_pending_saves_survive_a_restart_of_the_server(tmp_path):
    path = str(tmp_path / "store.sqlite3")
    first = JobValues(path)
    first.save("job", 1, "ada", "n", 7)
    first.close()
    again = JobValues(path)
    assert again.load("job", 1, "ada", "n") == 7
    again.commit("job", 1, "ada", {"output": ["7"]})
    assert again.get("ada", "n") == 7
    again.close()
