"""The SAVE/LOAD stores: interface, quotas and persistence."""
import decimal

import pytest

from conftest import out
from pidaemon.warble import MemoryStore, SqliteStore
from pidaemon.warble.errors import QuotaExceeded


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore(max_keys=3, max_value_length=20)
    else:
        s = SqliteStore(str(tmp_path / "store.db"), max_keys=3, max_value_length=20)
        yield s
        s.close()


def test_get_set_round_trip(store):
    assert store.get("ada", "x") is None
    for value in (0, -5, 10**15, 1.5, "h\u00e9llo", decimal.Decimal("3.14159")):
        store.set("ada", "x", value)
        got = store.get("ada", "x")
        assert got == value and type(got) is type(value)


def test_quota_on_names_per_user(store):
    for name in "abc":
        store.set("ada", name, 1)
    store.set("ada", "a", 2)                 # overwriting is fine
    with pytest.raises(QuotaExceeded, match="at most 3 names"):
        store.set("ada", "d", 1)
    store.set("bob", "d", 1)                 # per user


def test_quota_on_value_size(store):
    store.set("ada", "x", "x" * 20)
    with pytest.raises(QuotaExceeded, match="21 characters long; the limit is 20"):
        store.set("ada", "x", "x" * 21)
    with pytest.raises(QuotaExceeded):
        store.set("ada", "x", 10**25)
    assert store.get("ada", "x") == "x" * 20


def test_sqlite_store_persists(tmp_path):
    path = str(tmp_path / "w.db")
    s = SqliteStore(path)
    assert out('SAVE("pi",1)', store=s, user="ada") == []
    s.close()
    s = SqliteStore(path)
    assert out('x=LOAD("pi");x++;SAVE("pi",x);PRINT(x)', store=s, user="ada") == ["2"]
    assert s.get("ada", "pi") == 2
    s.close()


def test_store_failure_is_a_clear_error():
    class Down:
        def get(self, user, name):
            raise ConnectionError("broker at 10.0.0.1 unreachable")

        def set(self, user, name, value):
            raise ConnectionError("broker at 10.0.0.1 unreachable")

    from conftest import run
    assert run('x=LOAD("a")', store=Down()).error.message == "LOAD: storage is not available"
    assert run('SAVE("a",1)', store=Down()).error.message == "SAVE: storage is not available"
