"""Opening the SQLite files the daemon keeps (queue, registry, telemetry, storage), set up once.

WAL with `synchronous=NORMAL`: a transaction that returned survives a crash of
the process (not necessarily of the machine's power), and readers never wait
for the writer.  Autocommit mode (`isolation_level=None`): callers say `BEGIN`
where several statements must land together.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect(path: str | Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection to the SQLite file at `path` (its directory created), or to `:memory:`."""
    name = str(path)
    if name != ":memory:":
        Path(name).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(name, isolation_level=None, check_same_thread=check_same_thread)
    if name != ":memory:":
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db
