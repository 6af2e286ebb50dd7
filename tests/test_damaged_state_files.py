"""A damaged SQLite file in the state directory: named, with the reason; set aside only where nothing
acknowledged is lost; otherwise the plugin fails and the daemon does not claim to be ready."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest

from pidaemon.sqlite import WAL_SIZE_LIMIT, CorruptDatabase, connect, set_aside
from tests.support.control_plane import daemon, registry_section

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


def damage_index(path, index: str) -> None:
    """Break the root page of one index: the table's rows stay readable, the file fails its quick check."""
    db = sqlite3.connect(path)
    page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (index,)).fetchone()[0]
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(path, "r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(b"\xff" * 64)


def test_a_damaged_queue_is_read_back_and_its_acknowledged_jobs_run(broker, tmp_path, caplog):
    """Before: a damaged queue file disabled the Warble service; 20 acknowledged jobs never ran."""
    from pidaemon_plugins.warble.jobqueue import JobQueue

    from tests.support.waiting import wait_until
    from tests.support.warble_cluster import InProcessCluster

    queue = JobQueue(tmp_path / "jobs.sqlite3")
    for n in range(20):
        queue.submit("ada", f"PRINT({n})", job_id=f"job-{n}")
    queue.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    queue.close()
    damage_index(tmp_path / "jobs.sqlite3", "jobs_user")
    with pytest.raises(CorruptDatabase):
        connect(tmp_path / "jobs.sqlite3")

    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1) as cluster:
            service = cluster.service
            await wait_until(lambda: all(service.get(f"job-{n}")["state"] == "done" for n in range(20)), 60,
                             what="the 20 jobs run")
            return [service.get(f"job-{n}")["result"]["output"] for n in range(20)]

    outputs = asyncio.run(scenario())
    assert outputs == [[str(n)] for n in range(20)]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"warble: the job queue {tmp_path / 'jobs.sqlite3'} is damaged" in m and "read back 20 jobs (20 of "
               "them queued again to run)" in m for m in errors), errors
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("jobs.sqlite3.corrupt-")]


def test_a_queue_that_cannot_be_read_at_all_stops_a_server_that_requires_it(tmp_path):
    from pidaemon.daemon import DaemonError
    from tests.support.nodes import make_daemon
    from tests.support.warble_cluster import server_plugins

    damage(tmp_path / "jobs.sqlite3", "garbage")
    plugins = server_plugins(tmp_path)
    plugins["warble_server"]["required"] = True
    server = make_daemon("server", "mqtt://127.0.0.1:1", role="server", plugins=plugins)
    server.config["node"]["state_dir"] = str(tmp_path)

    async def scenario():
        try:
            await server.start()
        finally:
            await server.shutdown()

    with pytest.raises(DaemonError) as error:
        asyncio.run(scenario())
    message = str(error.value)
    assert f"{tmp_path / 'jobs.sqlite3'} is not a usable SQLite database (file is not a database" in message
    assert "it was left in place: restore it from a backup, or move it away to start with an empty job queue" \
        in message
    assert (tmp_path / "jobs.sqlite3").read_bytes() == GARBAGE  # not set aside: nothing acknowledged is dropped


def test_a_damaged_store_keeps_the_values_it_can_read(tmp_path):
    from pidaemon_plugins.warble.recovery import recover_store

    from pidaemon.warble import SqliteStore

    path = tmp_path / "store.sqlite3"
    store = SqliteStore(str(path))
    for n in range(30):
        store.set("ada", f"k{n}", n)
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    damage_index(path, "sqlite_autoindex_warble_values_1")
    with pytest.raises(CorruptDatabase):
        SqliteStore(str(path))
    fresh, said = recover_store(path, lambda: SqliteStore(str(path)))
    assert [fresh.get("ada", f"k{n}") for n in range(30)] == list(range(30))
    assert said.startswith("moved it to store.sqlite3.corrupt-") and said.endswith("read back 30 saved values")
