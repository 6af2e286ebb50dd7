"""Discovery without the network: the datagrams (round trips, every rejection reason, fuzzed decoders),
the receiver's freshness rules and the server's counter."""

from __future__ import annotations

import hashlib
import hmac
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pidaemon_plugins.discovery.counter import AnnouncementCounter
from pidaemon_plugins.discovery.datagram import (
    HEADER,
    MAGIC,
    MAX_DATAGRAM_SIZE,
    Announcement,
    DatagramError,
    Query,
    decode,
    decode_query,
    encode,
    encode_query,
    from_txt,
    query_port_from_txt,
    to_txt,
)
from pidaemon_plugins.discovery.freshness import Freshness, Verdict

SECRET = "s3cret"
SAMPLE = Announcement(cluster="picluster", server="server-1", host="10.0.0.1", port=1883, prefix="picluster",
                      tls=False, time=1700000000.5, counter=1700000000500)
NONCE = "0123456789abcdef" * 2
V1 = {k: v for k, v in SAMPLE.to_dict().items() if k != "counter"}  # what a version 1 server sent


def raw(body: dict | bytes, version: int = 2, flags: int = 0, secret: bytes | None = None) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    packet = HEADER.pack(MAGIC, version, flags, len(data)) + data
    if secret is not None:
        packet += hmac.new(secret, packet, hashlib.sha256).digest()
    return packet


def test_round_trip_signed_and_unsigned():
    assert decode(encode(SAMPLE)) == SAMPLE
    assert decode(encode(SAMPLE, SECRET), SECRET) == SAMPLE
    assert decode(encode(SAMPLE, SECRET)) == SAMPLE  # no secret configured: the MAC is not checked
    answer = Announcement(**{**SAMPLE.to_dict(), "nonce": NONCE})
    assert decode(encode(answer, SECRET), SECRET) == answer
    assert encode(SAMPLE, SECRET)[4] == 2 and b'"counter":1700000000500' in encode(SAMPLE)
    assert b"nonce" not in encode(SAMPLE)
    assert SAMPLE.broker_url == "mqtt://10.0.0.1:1883"
    assert Announcement("c", "s", "fe80::1", 8883, "p", tls=True).broker_url == "mqtts://[fe80::1]:8883"


def test_the_old_version_1_is_refused_with_a_secret_and_accepted_by_an_insecure_node():
    for flags, trailer in ((0, None), (1, SECRET.encode())):
        old = raw(V1, version=1, flags=flags, secret=trailer)
        with pytest.raises(DatagramError, match="old protocol version 1.*upgrade the server"):
            decode(old, SECRET)
        assert decode(old) == Announcement(**{**V1, "counter": 0})


def test_query_round_trip_and_its_rejections():
    query = Query("pi-1a2b3c", NONCE)
    data = encode_query(query, SECRET)
    assert data[5] == 0x03 and decode_query(data, SECRET) == query
    with pytest.raises(DatagramError, match="bad HMAC"):
        decode_query(data, "another secret")
    with pytest.raises(DatagramError, match="only with a shared secret"):
        decode_query(data, None)
    with pytest.raises(DatagramError, match="must be signed"):
        encode_query(query, None)
    with pytest.raises(DatagramError, match="a query, not an announcement"):
        decode(data, SECRET)
    with pytest.raises(DatagramError, match="an announcement, not a query"):
        decode_query(encode(SAMPLE, SECRET), SECRET)
    with pytest.raises(DatagramError, match="unsigned"):
        decode_query(raw(query.to_dict(), flags=0x02), SECRET)
    for body, reason in (({"node": "n", "nonce": "xyz"}, "'nonce'"), ({"nonce": NONCE}, "'node'"),
                         ({"node": "n", "nonce": NONCE.upper()}, "'nonce'")):
        with pytest.raises(DatagramError, match=reason):
            decode_query(raw(body, flags=0x03, secret=SECRET.encode()), SECRET)


def test_txt_record_names_the_query_port():
    txt = to_txt(encode(SAMPLE, SECRET), 17884)
    assert txt["q"] == "17884" and query_port_from_txt({k.encode(): v.encode() for k, v in txt.items()}) == 17884
    assert query_port_from_txt(to_txt(encode(SAMPLE))) is None
    for bad in ("0", "70000", "", "²", "12a"):
        assert query_port_from_txt({"q": bad}) is None


@pytest.mark.parametrize("data, secret, reason", [
    (encode(SAMPLE, "other secret"), SECRET, "bad HMAC"),
    (encode(SAMPLE), SECRET, "unsigned announcement"),
    (encode(SAMPLE, SECRET)[:-1] + bytes([encode(SAMPLE, SECRET)[-1] ^ 1]), SECRET, "bad HMAC"),
    (raw(SAMPLE.to_dict(), version=3), None, "unsupported protocol version 3"),
    (raw(SAMPLE.to_dict(), version=0), None, "unsupported protocol version 0"),
    (raw(SAMPLE.to_dict(), flags=0x80), None, "unknown flags"),
    (raw(V1, version=1, flags=0x02), None, "unknown flags"),
    (raw(V1, version=1), SECRET, "old protocol version 1"),
    (b"\x00" * (64 * 1024), None, "too large"),
    (encode(SAMPLE) + b"x" * MAX_DATAGRAM_SIZE, None, "too large"),
    (b"PIDA", None, "too short"),
    (b"GET / HTTP/1.1\r\n\r\n", None, "bad magic"),
    (encode(SAMPLE)[:-3], None, "length mismatch"),
    (raw(b"\xff\xfe{}"), None, "not UTF-8 JSON"),
    (raw(b"[1, 2]"), None, "not a JSON object"),
    (raw({**SAMPLE.to_dict(), "port": 0}), None, "'port'"),
    (raw({**SAMPLE.to_dict(), "port": True}), None, "'port'"),
    (raw({**SAMPLE.to_dict(), "host": "evil host; rm -rf"}), None, "'host'"),
    (raw({**SAMPLE.to_dict(), "prefix": "a/+/b"}), None, "'prefix'"),
    (raw({**SAMPLE.to_dict(), "cluster": ""}), None, "'cluster'"),
    (raw({k: v for k, v in SAMPLE.to_dict().items() if k != "server"}), None, "'server'"),
    (raw({**SAMPLE.to_dict(), "tls": "yes"}), None, "'tls'"),
    (raw({**SAMPLE.to_dict(), "time": float("nan")}), None, "'time'"),
    (raw({k: v for k, v in SAMPLE.to_dict().items() if k != "time"}), None, "'time' missing"),
    (raw({k: v for k, v in SAMPLE.to_dict().items() if k != "counter"}), None, "'counter' missing"),
    (raw({**SAMPLE.to_dict(), "counter": -1}), None, "'counter'"),
    (raw({**SAMPLE.to_dict(), "counter": 2**63}), None, "'counter'"),
    (raw({**SAMPLE.to_dict(), "counter": True}), None, "'counter'"),
    (raw({**SAMPLE.to_dict(), "counter": 5.0}), None, "'counter'"),
    (raw({**SAMPLE.to_dict(), "nonce": "not hex"}), None, "'nonce'"),
    (raw({**SAMPLE.to_dict(), "nonce": 12}), None, "'nonce'"),
    (raw(Query("n", NONCE).to_dict(), flags=0x03, secret=SECRET.encode()), SECRET, "a query, not an announcement"),
])
def test_invalid_datagrams_are_rejected_with_the_reason(data, secret, reason):
    with pytest.raises(DatagramError, match=reason):
        decode(data, secret)


def test_unknown_fields_from_a_newer_server_are_ignored():
    assert decode(raw({**SAMPLE.to_dict(), "future": [1, 2, 3]})) == SAMPLE


def test_the_mac_is_checked_before_the_body_is_parsed():
    forged = raw(b"not even json", flags=1) + b"\x00" * 32
    with pytest.raises(DatagramError, match="bad HMAC"):
        decode(forged, SECRET)
    with pytest.raises(DatagramError, match="bad HMAC"):
        decode_query(raw(b"not even json", flags=3) + b"\x00" * 32, SECRET)


def test_the_encoder_refuses_what_a_receiver_would_reject():
    with pytest.raises(DatagramError):
        encode(Announcement("c", "s", "bad host!", 1883, "p"))
    with pytest.raises(DatagramError):
        encode(Announcement("c", "s", "10.0.0.1", 70000, "p"))
    # The largest valid announcement still fits the size limit.
    largest = Announcement("c" * 64, "s" * 64, ".".join(["h" * 63] * 3) + "." + "h" * 61, 65535,
                           "/".join(["p" * 42] * 3)[:128].rstrip("/"), True, 4e9, 2**63 - 1, "f" * 64)
    assert len(encode(largest, SECRET)) <= MAX_DATAGRAM_SIZE
    assert decode(encode(largest, SECRET), SECRET) == largest


def test_txt_record_round_trip():
    txt = to_txt(encode(SAMPLE, SECRET))
    assert all(len(v) <= 200 for v in txt.values()) and len(txt) >= 2
    as_received = {k.encode(): v.encode() for k, v in txt.items()}  # zeroconf hands over bytes
    assert from_txt(as_received, SECRET) == SAMPLE
    with pytest.raises(DatagramError, match="bad HMAC"):
        from_txt(as_received, "wrong")
    with pytest.raises(DatagramError, match="no announcement"):
        from_txt({b"other": b"x"})
    with pytest.raises(DatagramError, match="not base64"):
        from_txt({b"d0": b"!!!"})


# ---------------------------------------------------------------- fuzzing

def assert_valid_or_datagram_error(data: bytes, secret=None) -> None:
    try:
        result = decode(data, secret)
    except DatagramError:
        pass
    else:
        assert isinstance(result, Announcement)
        assert decode(encode(result)) == result  # whatever passes is itself a valid announcement
    if secret is None:
        return
    try:
        query = decode_query(data, secret)
    except DatagramError:
        return
    assert isinstance(query, Query) and decode_query(encode_query(query, secret), secret) == query


def signed(body: bytes, version: int = 2, flags: int = 1) -> bytes:
    """A datagram whose MAC is right: what passes the HMAC check must still be checked field by field."""
    packet = HEADER.pack(MAGIC, version, flags, len(body)) + body
    return packet + hmac.new(SECRET.encode(), packet, hashlib.sha256).digest()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2 * MAX_DATAGRAM_SIZE))
def test_fuzz_random_bytes(data):
    assert_valid_or_datagram_error(data)
    assert_valid_or_datagram_error(data, SECRET)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 255), st.integers(0, 255))
def test_fuzz_random_bodies_behind_a_valid_header(body, version, flags):
    assert_valid_or_datagram_error(HEADER.pack(MAGIC, version, flags, len(body)) + body)
    for known in (1, 2):
        assert_valid_or_datagram_error(HEADER.pack(MAGIC, known, 0, len(body)) + body)
    assert_valid_or_datagram_error(signed(body, version=version, flags=flags | 1), SECRET)
    assert_valid_or_datagram_error(signed(body, flags=3), SECRET)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4),
                           max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["cluster", "server", "host", "port", "prefix", "tls", "time", "counter",
                                        "nonce", "x"]),
                       json_values | st.sampled_from([NONCE, 2**63 - 1, 2**63, 0]), max_size=8))
def test_fuzz_json_bodies(fields):
    body = {**SAMPLE.to_dict(), **fields}
    data = json.dumps(body, allow_nan=True).encode()
    for known in (1, 2):
        assert_valid_or_datagram_error(struct.pack(">4sBBH", MAGIC, known, 0, len(data)) + data)
    assert_valid_or_datagram_error(signed(data), SECRET)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["node", "nonce", "x"]), json_values | st.just(NONCE), max_size=3))
def test_fuzz_query_bodies(fields):
    data = json.dumps({"node": "pi-1", "nonce": NONCE, **fields}, allow_nan=True).encode()
    assert_valid_or_datagram_error(signed(data, flags=3), SECRET)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 300), st.integers(0, 255), st.booleans())
def test_fuzz_single_byte_changes_of_a_signed_datagram(position, value, query):
    original = encode_query(Query("pi-1", NONCE), SECRET) if query else encode(SAMPLE, SECRET)
    opened = (lambda d: decode_query(d, SECRET)) if query else (lambda d: decode(d, SECRET))
    data = bytearray(original)
    position %= len(data)
    changed = data[position] != value
    data[position] = value
    if changed:
        with pytest.raises(DatagramError):
            opened(bytes(data))
    else:
        assert opened(bytes(data)) == opened(original)


@settings(max_examples=200, deadline=None)
@given(st.builds(Announcement,
                 cluster=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True),
                 server=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True),
                 host=st.ip_addresses(v=4).map(str) | st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z][a-z0-9]{0,10}){0,3}",
                                                                    fullmatch=True),
                 port=st.integers(1, 65535),
                 prefix=st.from_regex(r"[A-Za-z0-9_.\-]{1,10}(/[A-Za-z0-9_.\-]{1,10}){0,3}", fullmatch=True),
                 tls=st.booleans(),
                 time=st.floats(0, 4e9),
                 counter=st.integers(0, 2**63 - 1),
                 nonce=st.none() | st.from_regex(r"[0-9a-f]{32,64}", fullmatch=True)))
def test_fuzz_round_trip(announcement):
    assert decode(encode(announcement, SECRET), SECRET) == announcement


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([b"d0", b"d1", b"d2", "d0", "d1", b"x", b"q", "q"]),
                       st.none() | st.binary(max_size=300) | st.text(max_size=300), max_size=5))
def test_fuzz_txt_records(properties):
    port = query_port_from_txt(properties)
    assert port is None or 1 <= port <= 65535
    try:
        result = from_txt(properties, SECRET)
    except DatagramError:
        return
    assert isinstance(result, Announcement)


# ---------------------------------------------------------------- freshness: what a node accepts from a server

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def announced(counter: int, time: float, server: str = "server-1", **kw) -> Announcement:
    return Announcement(**{**SAMPLE.to_dict(), "server": server, "counter": counter, "time": time, **kw})


def test_a_server_is_taken_only_once_it_answered_a_query_whatever_the_clocks():
    clock = Clock()
    freshness = Freshness(window=30, clock=clock)
    # A node without a real-time clock: its own time is irrelevant, the server's is not known yet.
    assert freshness.judge(announced(100, 1.7e9)) is Verdict.UNKNOWN
    answer = announced(101, 1.7e9 + 1, nonce=NONCE)
    assert freshness.judge(answer, answers_our_query=True) is Verdict.ANSWER
    freshness.accept(answer, Verdict.ANSWER)
    clock.now += 10  # ten seconds later, on this node's monotonic clock
    assert freshness.server_time("picluster", "server-1") == pytest.approx(1.7e9 + 11)
    assert freshness.judge(announced(102, 1.7e9 + 11)) is Verdict.FRESH
    assert freshness.judge(announced(102, 1.7e9 + 11 - 29)) is Verdict.FRESH
    assert freshness.judge(announced(102, 1.7e9 + 11 + 29)) is Verdict.FRESH
    # A capture played back later: its time is old (even with a counter the node has not seen).
    assert freshness.judge(announced(10**15, 1.7e9 + 11 - 31)) is Verdict.STALE
    assert freshness.judge(announced(10**15, 1.7e9 + 11 + 31)) is Verdict.FUTURE
    # Other servers are judged on their own.
    assert freshness.judge(announced(1, 1.7e9 + 11, server="server-2")) is Verdict.UNKNOWN
    with pytest.raises(ValueError):
        freshness.accept(announced(102, 1.7e9), Verdict.UNKNOWN)


def test_a_counter_that_does_not_grow_is_a_replay_even_inside_the_window():
    clock = Clock()
    freshness = Freshness(window=30, clock=clock)
    freshness.accept(announced(500, 1.7e9, nonce=NONCE), Verdict.ANSWER)
    latest = announced(501, 1.7e9 + 2)
    assert freshness.judge(latest) is Verdict.FRESH
    freshness.accept(latest, Verdict.FRESH)
    clock.now += 3
    assert freshness.judge(latest) is Verdict.DUPLICATE  # the same datagram again: ignored
    assert freshness.judge(announced(499, 1.7e9 + 2)) is Verdict.REPLAY
    assert "counter 499 of server server-1 is below 501" in freshness.describe(announced(499, 1.7e9), Verdict.REPLAY)
    # The answer to this node's own query is fresh by its nonce, even from a server whose counter went back.
    regressed = announced(7, 1.6e9, nonce="f" * 32)
    assert freshness.judge(regressed, answers_our_query=True) is Verdict.ANSWER
    freshness.accept(regressed, Verdict.ANSWER)
    assert freshness.judge(announced(8, 1.6e9 + 1)) is Verdict.FRESH
    assert freshness.judge(latest) is Verdict.FUTURE  # by the server's clock now, it comes from the future


# ---------------------------------------------------------------- the server's counter

def test_the_counter_grows_across_restarts_even_when_the_clock_goes_back(tmp_path):
    path = tmp_path / "announce-counter"
    first = AnnouncementCounter(path, clock=lambda: 1.7e9, block=10)
    values = [first.next() for _ in range(25)]
    assert values == sorted(set(values)) and values[0] > 1.7e12
    # Restarted with a clock ten years behind (a Pi without a real-time clock): still above.
    second = AnnouncementCounter(path, clock=lambda: 1.4e9, block=10)
    assert second.next() > values[-1]
    # The clock ahead of what was saved: the clock wins.
    third = AnnouncementCounter(path, clock=lambda: 1.8e9, block=10)
    assert third.next() > 1.8e12
    assert int(path.read_text()) >= third.value


def test_a_counter_file_that_cannot_be_used_falls_back_to_the_clock(tmp_path, caplog):
    garbage = tmp_path / "garbage"
    garbage.write_text("not a number\n")
    assert AnnouncementCounter(garbage, clock=lambda: 1.7e9).next() == 1.7e12 + 1
    unwritable = AnnouncementCounter(tmp_path / "missing-dir" / "counter", clock=lambda: 1.7e9, block=2)
    assert [unwritable.next() for _ in range(5)] == [1.7e12 + i for i in range(1, 6)]
    messages = [r.getMessage() for r in caplog.records]
    assert any("not a number" in m for m in messages)
    assert sum("cannot save the counter" in m for m in messages) == 1
