"""The bus's pure parts: backoff with full jitter, payload encoding, topic matching, payload errors."""

from __future__ import annotations

import random
import statistics

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pidaemon.bus import (
    Message,
    PayloadError,
    encode_payload,
    full_jitter_delay,
    topic_matches,
)


def test_full_jitter_stays_within_the_growing_capped_window():
    rng = random.Random(1)
    for attempt in range(40):
        window = min(60.0, 0.5 * 2 ** attempt)
        samples = [full_jitter_delay(attempt, 0.5, 60.0, rng) for _ in range(200)]
        assert all(0 <= s <= window for s in samples)
        assert max(samples) > 0.8 * window  # uses the whole window, not a fixed delay


def test_a_thousand_nodes_do_not_reconnect_in_lockstep():
    """After a broker restart each node draws its own delay: they spread over the window."""
    delays = [full_jitter_delay(7, 0.5, 60.0, random.Random(node)) for node in range(1000)]
    assert len({round(d, 3) for d in delays}) > 900
    assert 24 < statistics.mean(delays) < 40  # uniform on [0, 60]: mean 30
    in_first_second = sum(d < 1.0 for d in delays)
    assert in_first_second < 60  # about 1000/60 expected, never all at once


def test_huge_attempt_numbers_do_not_overflow():
    assert 0 <= full_jitter_delay(10_000, 0.5, 60.0, random.Random(0)) <= 60.0


@pytest.mark.parametrize("payload, encoded", [
    (b"\x00raw", b"\x00raw"),
    ("online", b"online"),
    ({"seq": 1, "node": "n"}, b'{"seq":1,"node":"n"}'),
    ([1, 2.5, None], b"[1,2.5,null]"),
])
def test_encode_payload(payload, encoded):
    assert encode_payload(payload) == encoded


@pytest.mark.parametrize("topic_filter, topic, matches", [
    ("picluster/nodes/+/status", "picluster/nodes/pi-1/status", True),
    ("picluster/nodes/+/status", "picluster/nodes/pi-1/info", False),
    ("picluster/#", "picluster/a/b/c", True),
    ("$share/workers/picluster/jobs/#", "picluster/jobs/1", True),
    ("$share/workers/picluster/jobs/#", "other/jobs/1", False),
])
def test_topic_matches(topic_filter, topic, matches):
    assert topic_matches(topic_filter, topic) is matches


LEVELS = st.sampled_from(["a", "b", "pi-1", "", "$SYS", "+", "#"])


@given(st.lists(LEVELS, min_size=1, max_size=5), st.lists(LEVELS, min_size=1, max_size=5))
@settings(max_examples=3000, deadline=None)
def test_topic_matches_agrees_with_paho(filter_levels, topic_levels):
    """The fast matcher against paho's reference, on valid filters and topics."""
    topic_filter, topic = "/".join(filter_levels), "/".join(topic_levels)
    if "#" in filter_levels[:-1] or any(level in ("+", "#") for level in topic_levels):
        return                 # not a valid filter (# only last) or not a valid topic (no wildcards)
    assert topic_matches(topic_filter, topic) is mqtt.topic_matches_sub(topic_filter, topic)


def test_payload_errors_name_the_topic_and_the_place():
    with pytest.raises(PayloadError, match=r"^a/b: payload is not JSON: Expecting ',' delimiter at line 1 column 9$"):
        Message("a/b", b'{"x": 1 "y": 2}').json()
    with pytest.raises(PayloadError, match=r"^a/b: payload is not UTF-8 text \(byte 1\)$"):
        Message("a/b", b"x\xff").text()
    with pytest.raises(PayloadError, match=r"^a/b: payload is not UTF-8 text \(byte 1\)$"):
        Message("a/b", b"x\xff").json()   # the same reason, not "JSON this node will not read"
    assert Message("a/b", b'{"x": 1}').json() == {"x": 1}
    assert Message("a/b", b'{"x": 1}').json_object(max_bytes=8) == {"x": 1}
    with pytest.raises(PayloadError, match=r"^a/b: expected a JSON object, got list$"):
        Message("a/b", b"[1]").json_object()
    with pytest.raises(PayloadError, match=r"^a/b: payload of 9 bytes, more than 8$"):
        Message("a/b", b'{"x": 10}').json_object(max_bytes=8)
    assert Message("a/b", b"", user_properties=(("user", "ada"),)).user_property("user") == "ada"


@pytest.mark.parametrize("payload", [b"[" * 100_000 + b"]" * 100_000, b"1" * 5_000])
def test_json_that_python_refuses_to_read_is_a_payload_error(payload):
    """Nested 100,000 levels (RecursionError) or an integer of 5,000 digits (ValueError): not a crash."""
    with pytest.raises(PayloadError, match="picluster/x: payload is JSON this node will not read"):
        Message(topic="picluster/x", payload=payload).json()
