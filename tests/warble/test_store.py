"""The SAVE/LOAD stores: interface, quotas and persistence; the value codec."""
import decimal

import mpmath
import pytest

from pidaemon.warble import MemoryStore, SqliteStore, WarbleError
from pidaemon.warble import store as store_module
from pidaemon.warble.errors import QuotaExceeded
from pidaemon.warble.protocol import ProtocolError, pack_value, unpack_value
from pidaemon.warble.values import decode_value, encode_value
from tests.support.warble import out


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

    from tests.support.warble import run
    assert run('x=LOAD("a")', store=Down()).error.message == "LOAD: storage is not available"
    assert run('SAVE("a",1)', store=Down()).error.message == "SAVE: storage is not available"


# ---- the value codec shared by the stores and the runner's pipe ----------------------

@pytest.mark.parametrize("value, encoded, decoded", [
    (10**40, ("int", "1" + "0" * 40), 10**40), (-7, ("int", "-7"), -7), (True, ("int", "1"), 1),
    (1.5, ("float", "1.5"), 1.5), ("h\u00e9llo", ("str", "h\u00e9llo"), "h\u00e9llo"),
    (decimal.Decimal("3.14159"), ("dec", "3.14159"), decimal.Decimal("3.14159")),
    (mpmath.mpf(1) / 3, ("dec", "0.333333333333333"), decimal.Decimal("0.333333333333333")),
])
def test_one_codec_for_stores_and_the_pipe(value, encoded, decoded):
    assert encode_value(value) == encoded
    assert decode_value(*encoded) == unpack_value(pack_value(value)) == decoded
    assert type(decode_value(*encoded)) is type(decoded)
    assert store_module.encode_value is encode_value and store_module.decode_value is decode_value  # plugins' path


def test_the_codec_refuses_what_it_does_not_keep():
    with pytest.raises(WarbleError, match="cannot store a value of type list"):
        encode_value([1])
    with pytest.raises(ProtocolError):
        pack_value([1])
    for kind, text in (("int", "one"), ("dec", "pi"), ("float", "x"), ("bytes", "1")):
        with pytest.raises(ValueError):
            decode_value(kind, text)
        with pytest.raises(ProtocolError):
            unpack_value([kind, text])
    with pytest.raises(ProtocolError, match="bad value"):
        unpack_value(["int", 1])
