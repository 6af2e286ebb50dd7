"""The pi leaderboard: who printed the most correct digits of pi.

The blog that introduced Warble asked "who can calculate Pi to the most digits
on the cluster?".  Every finished job's output is checked: a line that starts
with `3.14` scores the number of its decimals that match pi.  Each user keeps
their best score (in the server's SQLite file).
"""

from __future__ import annotations

import sqlite3
import time
from functools import lru_cache

import mpmath

MAX_CHECKED_DIGITS = 100_000
TOP = 20


@lru_cache(maxsize=1)
def pi_decimals() -> str:
    """The first MAX_CHECKED_DIGITS decimals of pi (computed once, about a second)."""
    with mpmath.workdps(MAX_CHECKED_DIGITS + 20):
        return mpmath.nstr(mpmath.pi, MAX_CHECKED_DIGITS + 10, strip_zeros=False)[2:2 + MAX_CHECKED_DIGITS]


def correct_pi_digits(line: str) -> int:
    """How many decimals of `line` (e.g. "3.14159") match pi; 0 if it is not an attempt at pi."""
    text = line.strip()
    if not text.startswith("3.14"):
        return 0
    decimals = text[2:]
    reference = pi_decimals()
    count = 0
    for mine, true in zip(decimals, reference):
        if mine != true:
            break
        count += 1
    return count


class Leaderboard:
    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.db.execute("CREATE TABLE IF NOT EXISTS pi_leaderboard (user TEXT PRIMARY KEY, digits INTEGER NOT NULL,"
                        " job TEXT NOT NULL, time REAL NOT NULL)")

    def consider(self, user: str, job_id: str, output: list[str]) -> bool:
        """Score a finished job's output; True if it improved the user's best."""
        best = max((correct_pi_digits(line) for line in output[:1000]), default=0)
        if best < 3:  # "3.14" alone is not a computation
            return False
        cursor = self.db.execute(
            "INSERT INTO pi_leaderboard (user, digits, job, time) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(user) DO UPDATE SET digits = excluded.digits, job = excluded.job, time = excluded.time"
            " WHERE excluded.digits > pi_leaderboard.digits", (user, best, job_id, time.time()))
        return cursor.rowcount == 1

    def snapshot(self) -> dict:
        rows = self.db.execute("SELECT user, digits, job, time FROM pi_leaderboard ORDER BY digits DESC, time"
                               " LIMIT ?", (TOP,))
        return {"pi_digits": [{"user": u, "digits": d, "job": j, "time": t} for u, d, j, t in rows]}
