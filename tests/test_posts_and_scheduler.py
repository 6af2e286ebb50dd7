"""Extracting `#pi{...}` from posts, and picking the worker for a job."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from pidaemon.warble.posts import NoWarble, extract_warble
from pidaemon_plugins.warble.worker_choice import WorkerLoad, pick_worker


@pytest.mark.parametrize("post, program", [
    ('#pi{PRINT("hello cluster")}', 'PRINT("hello cluster")'),
    ('Look at this! #pi{FOR(i=0;i<3;i++){PRINT(i)}} #raspberrypi', "FOR(i=0;i<3;i++){PRINT(i)}"),
    ("#Pi {PRINT(1)}", "PRINT(1)"),
    ('#pi{PRINT("}")}', 'PRINT("}")'),
    ("#pi{PRINT(\u201c{ not a block\u201d)}", "PRINT(\u201c{ not a block\u201d)"),
    ("#pi without braces, then #pi{x=1}", "x=1"),
])
def test_extract_warble(post, program):
    assert extract_warble(post) == program


@pytest.mark.parametrize("post, message", [
    ("just a post about pie", "no #pi{...} program in the post"),
    ("#pi{PRINT(1)", "the #pi{ program has no matching }"),
])
def test_posts_without_a_program(post, message):
    with pytest.raises(NoWarble, match=message):
        extract_warble(post)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_extraction_never_fails_otherwise(text):
    try:
        program = extract_warble(text)
    except NoWarble:
        return
    assert "#pi" in text.lower() and program in text


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
