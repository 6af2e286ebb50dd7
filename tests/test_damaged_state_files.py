"""A damaged SQLite file in the state directory: named, with the reason; set aside only where nothing
acknowledged is lost; otherwise the plugin fails and the daemon does not claim to be ready."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest

from pidaemon.sqlite import WAL_SIZE_LIMIT, CorruptDatabase, connect, set_aside
from tests.control.helpers import daemon, registry_section

GARBAGE = b"this is not a database, it was overwritten " * 200


def damage(path, how: str) -> None:
    """`garbage`: a file that is not a database at all; `pages`: a database whose pages are broken."""
    if how == "garbage":
        path.write_bytes(GARBAGE)
        return
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x TEXT)")
    db.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    db.commit()
    db.close()
    with open(path, "r+b") as f:
        f.seek(4096)  # the table's root page: its header and cell pointers
        f.write(b"\xff" * 64)


@pytest.mark.parametrize("how", ["garbage", "pages"])
def test_connect_names_a_damaged_file_and_set_aside_moves_it(tmp_path, how):
    path = tmp_path / "state" / "jobs.sqlite3"
    path.parent.mkdir()
    damage(path, how)
    with pytest.raises(CorruptDatabase) as error:
        connect(path)
    assert str(error.value).startswith(f"{path} is not a usable SQLite database (")
    moved = set_aside(path)
    assert not path.exists() and moved.read_bytes()[:16] == (GARBAGE[:16] if how == "garbage" else b"SQLite format 3\x00")
    assert moved.name.startswith("jobs.sqlite3.corrupt-")


def test_the_write_ahead_log_stays_small(tmp_path):
    """A busy file's -wal grew to 1.86 MB after 40 jobs and filled a small state directory."""
    db = connect(tmp_path / "busy.sqlite3")
    db.execute("CREATE TABLE t (x TEXT)")
    for _ in range(400):
        db.execute("INSERT INTO t VALUES (?)", ("x" * 4000,))
    wal = tmp_path / "busy.sqlite3-wal"
    assert wal.stat().st_size <= WAL_SIZE_LIMIT + 300 * 4096  # cut back after each automatic checkpoint


def test_a_damaged_registry_is_set_aside_and_rebuilt(tmp_path, caplog):
    state = tmp_path / "server"
    state.mkdir()
    damage(tmp_path / "registry.sqlite3", "garbage")
    node = daemon("server", None, state, role="server", plugins={"registry": registry_section(tmp_path)})
    node.load_plugins()
    asyncio.run(node.hooks.configure())
    assert node.status()["failed_plugins"] == []
    moved = [p.name for p in tmp_path.iterdir() if p.name.startswith("registry.sqlite3.corrupt-")]
    assert len(moved) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"registry: {tmp_path / 'registry.sqlite3'} is not a usable SQLite database (file is not a database)"
               f"; moved it to {moved[0]} and started with an empty one" in m for m in errors), errors
