"""docs/warble.md stays in step with the code: every built-in, limit and status."""
import dataclasses
import pathlib
import re

import pytest

from pidaemon.warble import Limits, MemoryStore, RecordingEffects
from pidaemon.warble.library import SIGNATURES
from pidaemon.warble.result import STATUSES
from tests.support.warble import run

DOC = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "warble.md").read_text(encoding="utf-8")


def builtin_rows():
    rows = {}
    for line in DOC.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.match(r"([A-Z][A-Z0-9]*)\(", cells[0])
        if m and len(cells) == 4 and cells[2].startswith("`"):
            rows[m.group(1)] = (cells[2].strip("`"), cells[3].strip("`"))
    return rows


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_every_builtin_is_documented_with_a_working_example(name):
    rows = builtin_rows()
    assert name in rows, f"{name} has no row in the built-ins table of docs/warble.md"
    example, expected = rows[name]
    result = run(example, store=MemoryStore(), effects=RecordingEffects())
    assert result.status == "ok"
    assert result.output == ([expected] if expected else [])


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Limits)])
def test_every_limit_is_documented(field):
    assert f"| `{field}` |" in DOC


@pytest.mark.parametrize("status", STATUSES)
def test_every_status_is_documented(status):
    assert f"| `{status}` |" in DOC


@pytest.mark.parametrize("example, expected", [
    ("SETPRECISION(50);PRINT(2*ACOS(0))", "3.1415926535897932384626433832795028841971693993751"),
])
def test_doc_examples(example, expected):
    assert example in DOC and expected in DOC
    assert run(example).output == [expected]
