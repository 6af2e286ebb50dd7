"""Finding the Warble program in a post: `#pi{...}`, anywhere in a post or at the start of a program."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pidaemon.warble.posts import NoWarble, extract_warble, leading_hashtag_end, program_of


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


@pytest.mark.parametrize("submission, program", [
    ("PRINT(1)", "PRINT(1)"),                       # a program as it is
    ("see #pi{PRINT(2)} here", "PRINT(2)"),         # a post: its program
])
def test_program_of_a_submission(submission, program):
    assert program_of(submission) == program


def test_a_submission_that_mentions_pi_without_a_program_is_refused():
    with pytest.raises(NoWarble):
        program_of("I like #pi but wrote no program")


@pytest.mark.parametrize("source, end", [("#pi{PRINT(1)}", 3), ("  \n#PI {x=1}", 6), ("PRINT(1)", None),
                                         ("x=1 #pi{}", None)])
def test_where_a_program_written_as_a_post_starts(source, end):
    assert leading_hashtag_end(source) == end
