"""The jobs waiting in the queue, in memory, grouped by who sent them: choosing the next job without a scan.

A mirror of the queue file's `queued` rows, kept by `JobQueue` at every change
of a job to or from `queued`: for each (origin, user), its waiting jobs in the
order they came; and how many wait per user and per origin.  With thousands
of jobs waiting, asking the file "which users wait, and since when" at every
dispatch and "how many wait" at every submission cost a scan each time.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from typing import Iterable, Iterator

Group = tuple[str | None, str]  # (origin, user)


class WaitingJobs:
    def __init__(self):
        self._heaps: dict[Group, list[tuple[float, int, str]]] = {}  # (submitted, order, job id)
        self._where: dict[str, tuple[Group, int]] = {}               # job id: its group and entry order
        self._order = itertools.count()
        self._per_user: Counter[str] = Counter()
        self._per_origin: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._where

    def add(self, job_id: str, origin: str | None, user: str, submitted: float) -> None:
        if job_id in self._where:
            return
        group, order = (origin, user), next(self._order)
        heapq.heappush(self._heaps.setdefault(group, []), (submitted, order, job_id))
        self._where[job_id] = (group, order)
        self._per_user[user] += 1
        if origin:
            self._per_origin[origin] += 1

    def remove(self, job_id: str) -> None:
        """No longer waiting (handed out, expired): its heap entry goes when it reaches the top."""
        found = self._where.pop(job_id, None)
        if found is None:
            return
        (origin, user), _ = found
        self._per_user[user] -= 1
        if not self._per_user[user]:
            del self._per_user[user]
        if origin:
            self._per_origin[origin] -= 1
            if not self._per_origin[origin]:
                del self._per_origin[origin]

    def waiting(self, *, user: str | None = None, origin: str | None = None) -> int:
        return self._per_user.get(user, 0) if user is not None else self._per_origin.get(origin, 0)

    def oldest(self) -> Iterator[tuple[str | None, str, float, str]]:
        """(origin, user, when its oldest waiting job came, that job's id), for every group with one."""
        for group in list(self._heaps):
            heap = self._heaps[group]
            while heap and self._where.get(heap[0][2], (None, None))[1] != heap[0][1]:
                heapq.heappop(heap)  # an entry of a job that no longer waits (or waits again, anew)
            if not heap:
                del self._heaps[group]
                continue
            submitted, _, job_id = heap[0]
            yield group[0], group[1], submitted, job_id

    def rebuild(self, rows: Iterable[tuple[str, str | None, str, float]]) -> None:
        """From the file: (id, origin, user, submitted) of every queued job, in the order they came."""
        self.__init__()
        for job_id, origin, user, submitted in rows:
            self.add(job_id, origin, user, submitted)
