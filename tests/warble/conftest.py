"""Fixtures of the Warble tests (helpers are in tests/support/warble.py)."""
from __future__ import annotations

import pytest

from pidaemon.warble import Limits, Runner
from tests.support.warble import run


@pytest.fixture(scope="module")
def runner():
    with Runner(Limits()) as r:
        yield r


@pytest.fixture(params=["Program.run", "Runner"])
def run_anywhere(request):
    """`run` in this process, then the same through a Runner (the module's `runner`)."""
    if request.param == "Program.run":
        return run
    return request.getfixturevalue("runner").run
