"""Opening the SQLite files the daemon keeps (queue, registry, telemetry, storage), set up once.

WAL with `synchronous=NORMAL`: a transaction that returned survives a crash of
the process (not necessarily of the machine's power), and readers never wait
for the writer.  Autocommit mode (`isolation_level=None`): callers say `BEGIN`
where several statements must land together.  The write-ahead log is
checkpointed every `WAL_CHECKPOINT_PAGES` pages and cut back to
`WAL_SIZE_LIMIT` bytes after each checkpoint, so a busy file's `-wal` stays
small (on a Pi's SD card, a 2 MB state directory once filled after 40 jobs).

A file that is not a database, or fails SQLite's quick check, raises
`CorruptDatabase` naming the file and the reason.  What to do then is the
caller's: `set_aside` moves it (and its `-wal` and `-shm`) out of the way with
a timestamp, for a file that can be rebuilt (the registry rebuilds itself from
the nodes' retained messages); a file holding what was acknowledged to a user
(queued jobs, saved values) is first read back, row by row, as far as it can
be (`read_back`), and the caller says what it kept and what it lost.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WAL_CHECKPOINT_PAGES = 256        # pages (1 MiB at 4 KiB) between automatic checkpoints
WAL_SIZE_LIMIT = 1024 * 1024      # bytes the -wal file is cut back to after a checkpoint
SIDE_FILES = ("-wal", "-shm")


class CorruptDatabase(Exception):
    """An SQLite file that cannot be used as it is; the message names the file and why."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path} is not a usable SQLite database ({reason})")
        self.path = Path(path)
        self.reason = reason


def connect(path: str | Path, *, check_same_thread: bool = True, check: bool = True) -> sqlite3.Connection:
    """A connection to the SQLite file at `path` (its directory created), or to `:memory:`.

    Raises CorruptDatabase when the file is damaged (`check=False` skips the quick check).
    """
    name = str(path)
    if name != ":memory:":
        Path(name).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(name, isolation_level=None, check_same_thread=check_same_thread)
    try:
        if name != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        db.execute("PRAGMA synchronous=NORMAL")
        if check and name != ":memory:":
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise CorruptDatabase(name, f"quick check: {verdict}")
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        db.close()
        raise CorruptDatabase(name, str(exc)) from None
    except CorruptDatabase:
        db.close()
        raise
    return db


def set_aside(path: str | Path) -> Path:
    """Move a damaged database (and its -wal and -shm) to `<name>.corrupt-<UTC time>`; where it went."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", *SIDE_FILES):
        source = Path(str(path) + suffix)
        if source.exists():
            source.rename(Path(str(target) + suffix))
    return target


def connect_or_start_afresh(path: str | Path, log, what: str, consequence: str, **kwargs) -> sqlite3.Connection:
    """`connect`, for a file whose content can be rebuilt: a damaged one is set aside, with one
    log line saying which file, why, where it went and what that means, and an empty one is started."""
    try:
        return connect(path, **kwargs)
    except CorruptDatabase as exc:
        moved = set_aside(path)
        log.error("%s: %s; moved it to %s and started with an empty one (%s)", what, exc, moved.name, consequence)
        return connect(path, **kwargs)


@dataclass
class Readback:
    """What could be read back from a damaged table."""

    rows: list[tuple]                                # whole rows, in the columns asked for
    keys_only: list[Any] = field(default_factory=list)  # rows of which only the key column could be read
    incomplete: bool = False                         # a scan of the table failed: rows may be missing


def read_back(path: str | Path, table: str, columns: tuple[str, ...], key: str) -> Readback:
    """Read, row by row, what a damaged database still holds of `table` (a damaged page costs the
    rows on it, not the whole table).  Raises CorruptDatabase when nothing can be read at all."""
    try:
        db = sqlite3.connect(str(path))
    except sqlite3.DatabaseError as exc:
        raise CorruptDatabase(path, str(exc)) from None
    try:
        rowids: set[int] = set()
        failure: str | None = None
        for order in ("ASC", "DESC"):  # from both ends: a broken page in the middle stops one scan only
            try:
                for (rowid,) in db.execute(f"SELECT rowid FROM {table} ORDER BY rowid {order}"):
                    rowids.add(rowid)
            except sqlite3.DatabaseError as exc:
                failure = failure or str(exc)
        incomplete = failure is not None
        if not rowids and incomplete:
            raise CorruptDatabase(path, f"{failure}: not one row of {table} can be read")
        back = Readback([], [], incomplete)
        wanted = ", ".join(columns)
        for rowid in sorted(rowids):
            try:
                row = db.execute(f"SELECT {wanted} FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
            except sqlite3.DatabaseError:
                try:
                    row = None
                    back.keys_only.append(db.execute(f"SELECT {key} FROM {table} WHERE rowid = ?",
                                                     (rowid,)).fetchone()[0])
                except sqlite3.DatabaseError:
                    back.incomplete = True
            if row is not None:
                back.rows.append(row)
        return back
    except sqlite3.DatabaseError as exc:  # "file is not a database": no table to read at all
        raise CorruptDatabase(path, str(exc)) from None
    finally:
        db.close()
