"""The announcement datagram: round trips, every rejection reason, and a fuzzed decoder."""

from __future__ import annotations

import hashlib
import hmac
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pidaemon_plugins.discovery.datagram import (HEADER, MAGIC, MAX_DATAGRAM_SIZE, Announcement, DatagramError, decode,
                                         encode, from_txt, to_txt)

SECRET = "s3cret"
SAMPLE = Announcement(cluster="picluster", server="server-1", host="10.0.0.1", port=1883, prefix="picluster",
                      tls=False, time=1700000000.5)


def raw(body: dict | bytes, version: int = 1, flags: int = 0, secret: bytes | None = None) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    packet = HEADER.pack(MAGIC, version, flags, len(data)) + data
    if secret is not None:
        packet += hmac.new(secret, packet, hashlib.sha256).digest()
    return packet


def test_round_trip_signed_and_unsigned():
    assert decode(encode(SAMPLE)) == SAMPLE
    assert decode(encode(SAMPLE, SECRET), SECRET) == SAMPLE
    assert decode(encode(SAMPLE, SECRET)) == SAMPLE  # no secret configured: the MAC is not checked
    assert SAMPLE.broker_url == "mqtt://10.0.0.1:1883"
    assert Announcement("c", "s", "fe80::1", 8883, "p", tls=True).broker_url == "mqtts://[fe80::1]:8883"


@pytest.mark.parametrize("data, secret, reason", [
    (encode(SAMPLE, "other secret"), SECRET, "bad HMAC"),
    (encode(SAMPLE), SECRET, "unsigned announcement"),
    (encode(SAMPLE, SECRET)[:-1] + bytes([encode(SAMPLE, SECRET)[-1] ^ 1]), SECRET, "bad HMAC"),
    (raw(SAMPLE.to_dict(), version=2), None, "unsupported protocol version 2"),
    (raw(SAMPLE.to_dict(), version=0), None, "unsupported protocol version 0"),
    (raw(SAMPLE.to_dict(), flags=0x80), None, "unknown flags"),
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


def test_the_encoder_refuses_what_a_receiver_would_reject():
    with pytest.raises(DatagramError):
        encode(Announcement("c", "s", "bad host!", 1883, "p"))
    with pytest.raises(DatagramError):
        encode(Announcement("c", "s", "10.0.0.1", 70000, "p"))
    # The largest valid announcement still fits the size limit.
    largest = Announcement("c" * 64, "s" * 64, ".".join(["h" * 63] * 3) + "." + "h" * 61, 65535,
                           "/".join(["p" * 42] * 3)[:128].rstrip("/"), True, 4e9)
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
        return
    assert isinstance(result, Announcement)
    assert decode(encode(result)) == result  # whatever passes is itself a valid announcement


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2 * MAX_DATAGRAM_SIZE))
def test_fuzz_random_bytes(data):
    assert_valid_or_datagram_error(data)
    assert_valid_or_datagram_error(data, SECRET)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 255), st.integers(0, 255))
def test_fuzz_random_bodies_behind_a_valid_header(body, version, flags):
    assert_valid_or_datagram_error(HEADER.pack(MAGIC, version, flags, len(body)) + body)
    assert_valid_or_datagram_error(HEADER.pack(MAGIC, 1, 0, len(body)) + body)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4),
                           max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["cluster", "server", "host", "port", "prefix", "tls", "time", "x"]),
                       json_values, max_size=8))
def test_fuzz_json_bodies(fields):
    body = {**SAMPLE.to_dict(), **fields}
    data = json.dumps(body, allow_nan=True).encode()
    assert_valid_or_datagram_error(struct.pack(">4sBBH", MAGIC, 1, 0, len(data)) + data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 200), st.integers(0, 255))
def test_fuzz_single_byte_changes_of_a_signed_datagram(position, value):
    data = bytearray(encode(SAMPLE, SECRET))
    position %= len(data)
    changed = data[position] != value
    data[position] = value
    if changed:
        with pytest.raises(DatagramError):
            decode(bytes(data), SECRET)
    else:
        assert decode(bytes(data), SECRET) == SAMPLE


@settings(max_examples=200, deadline=None)
@given(st.builds(Announcement,
                 cluster=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True),
                 server=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True),
                 host=st.ip_addresses(v=4).map(str) | st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z][a-z0-9]{0,10}){0,3}",
                                                                    fullmatch=True),
                 port=st.integers(1, 65535),
                 prefix=st.from_regex(r"[A-Za-z0-9_.\-]{1,10}(/[A-Za-z0-9_.\-]{1,10}){0,3}", fullmatch=True),
                 tls=st.booleans(),
                 time=st.floats(0, 4e9)))
def test_fuzz_round_trip(announcement):
    assert decode(encode(announcement, SECRET), SECRET) == announcement


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([b"d0", b"d1", b"d2", "d0", "d1", b"x"]),
                       st.none() | st.binary(max_size=300) | st.text(max_size=300), max_size=5))
def test_fuzz_txt_records(properties):
    try:
        result = from_txt(properties, SECRET)
    except DatagramError:
        return
    assert isinstance(result, Announcement)
