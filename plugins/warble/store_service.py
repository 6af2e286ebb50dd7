"""SAVE and LOAD for the programs the workers run, against the server's SQLite store, served to users in turn.

A worker asks on its own `nodes/<worker>/reply/warble_store` (which the
broker's ACL lets only that client id write) and is answered on its
`nodes/<worker>/cmd/warble_store`: the topic, not the payload, says who asks.
Only the attempt that holds its job on that worker, for that user, is served
(see "fencing" in `jobqueue.py`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from pidaemon.bus import PayloadError
from pidaemon.warble import WarbleError
from pidaemon.warble.errors import QuotaExceeded
from pidaemon.warble.values import decode_value, encode_value

from .job_values import JobValues
from .jobqueue import STORAGE_ERRORS, JobQueue, disk_full, storage_error_name

MAX_STORE_PENDING_PER_USER = 64   # SAVE/LOAD requests of one user waiting; more are answered "busy"
MAX_STORE_PENDING = 10_000        # ... of all users together


class TakeTurns:
    """Items queued per key, taken one key after the other (round robin)."""

    def __init__(self):
        self._items: dict[str, deque] = {}
        self._turns: deque[str] = deque()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def pending(self, key: str) -> int:
        return len(self._items.get(key, ()))

    def push(self, key: str, item: Any) -> None:
        items = self._items.get(key)
        if items is None:
            items = self._items[key] = deque()
            self._turns.append(key)
        items.append(item)
        self._count += 1

    def pop(self) -> tuple[str, Any] | None:
        if not self._turns:
            return None
        key = self._turns.popleft()
        items = self._items[key]
        item = items.popleft()
        self._count -= 1
        if items:
            self._turns.append(key)
        else:
            del self._items[key]
        return key, item


class StoreService:
    """The workers' SAVE/LOAD requests: checked against the job queue, queued per user, served in turn.

    `stats` is the server's own dict (its `warble_queue` telemetry): this
    service counts `store_requests`, `store_refused` and `store_busy` there.
    """

    def __init__(self, node, queue: JobQueue, store: JobValues, max_value_length: int, stats: dict[str, int]):
        self.node = node
        self.queue = queue
        self.store = store
        self.max_value_length = max_value_length
        self.stats = stats
        self.requests = TakeTurns()
        self._wake = asyncio.Event()
        self._stopped = False

    def stop(self) -> None:
        """Serve no more requests (the server is stopping and closes the store)."""
        self._stopped = True

    def on_request(self, worker: str, request: Any) -> None:
        """Check a worker's SAVE/LOAD request and queue it for its user's turn."""
        if not isinstance(request, dict) or request.get("op") not in ("save", "load"):
            raise PayloadError(f"warble store request from {worker}: expected {{\"op\": \"save\"|\"load\", ...}}")
        reply_to = self.node.topics.command(worker, "warble_store")
        self.stats["store_requests"] += 1
        user = request.get("user")
        if self._refuse(worker, reply_to, request):
            return
        if self.requests.pending(user) >= MAX_STORE_PENDING_PER_USER or len(self.requests) >= MAX_STORE_PENDING:
            self.stats["store_busy"] += 1
            self.node.publish(reply_to, {"correlation": request.get("correlation"),
                                         "error": "the cluster's storage is busy; try again"}, qos=1)
            return
        self.requests.push(user, (worker, reply_to, request))
        self._wake.set()

    async def serve_forever(self) -> None:
        """SAVE/LOAD requests, users in turn: one user's flood does not delay another user's request.

        The store's work runs in a thread, one request at a time, so that the
        event loop goes on reading requests meanwhile: a request that arrives
        takes its user's turn among those waiting, instead of waiting behind
        every request that reached the socket first.
        """
        while True:
            await self._wake.wait()
            self._wake.clear()
            while not self._stopped and (taken := self.requests.pop()) is not None:
                user, (worker, reply_to, request) = taken
                try:
                    if self._refused_at_its_turn(worker, reply_to, request):  # the job may be gone meanwhile
                        continue
                    answer = await asyncio.to_thread(self._operation, user, request)
                except Exception as exc:  # one bad request must not stop the others
                    self.node.log.error("warble store request from %s: %s: %s", worker, type(exc).__name__, exc)
                    continue
                self.node.publish(reply_to, answer, qos=1)

    def _refuse(self, worker: str, reply_to: str, request: dict) -> bool:
        """Answer and refuse (True) unless the request's job attempt holds its job on `worker`, for its user.

        A stale attempt (the job was taken from this worker and handed out
        again) is told so; anything else is also a forgery, logged.
        """
        job_id, attempt, user = request.get("job"), request.get("attempt"), request.get("user")
        held = self.queue.holds(job_id, attempt, worker) if isinstance(job_id, str) else None
        if held is not None and held.user == user:
            return False
        self.stats["store_refused"] += 1
        job = self.queue.get(job_id) if isinstance(job_id, str) else None
        stale = job is not None and job.user == user and isinstance(attempt, int) and 0 < attempt <= job.attempts
        if stale:
            message = (f"job {job_id}: this run (attempt {attempt}) no longer holds the job: "
                       f"SAVE and LOAD are refused")
        else:
            message = "refused: no job of this user runs there with that attempt"
        self.node.publish(reply_to, {"correlation": request.get("correlation"), "error": message,
                                     "stale": stale}, qos=1)
        if stale:
            self.node.log.info("warble store request from %s: %s", worker, message)
            return True
        raise PayloadError(f"warble store request from {worker}: job {job_id!r} attempt {attempt!r} does not "
                           f"hold a job of user {user!r} there")

    def _refused_at_its_turn(self, worker: str, reply_to: str, request: dict) -> bool:
        """`_refuse`, at the request's turn: a forgery found now is logged, no message handler being there."""
        try:
            return self._refuse(worker, reply_to, request)
        except PayloadError as exc:
            self.node.log.warning("%s", exc)
            return True

    def _operation(self, user: str, request: dict) -> dict[str, Any]:
        """One SAVE or LOAD against the store (in a thread): the answer to publish."""
        answer: dict[str, Any] = {"correlation": request.get("correlation")}
        try:
            name = str(request["name"])
            job, attempt = request["job"], request["attempt"]  # checked: this attempt holds the job
            if request["op"] == "load":
                value = self.store.load(job, attempt, user, name)
                answer["value"] = None if value is None else list(encode_value(value))
            else:
                kind, text = request["value"]
                if not isinstance(text, str) or len(text) > self.max_value_length + 32:
                    raise QuotaExceeded(f"SAVE: a value is at most {self.max_value_length} characters")
                self.store.save(job, attempt, user, name, decode_value(kind, text))
        except QuotaExceeded as exc:
            answer.update(error=exc.message, quota=True)
        except STORAGE_ERRORS as exc:
            answer["error"] = ("the cluster's storage is full" if disk_full(exc)
                               else f"the cluster's storage failed ({storage_error_name(exc)})")
            if not self._stopped:  # (closed under it: the server is stopping)
                self.node.log.warning("warble store: %s: %s", storage_error_name(exc), exc)
        except (KeyError, TypeError, ValueError, ArithmeticError, WarbleError) as exc:
            answer["error"] = f"bad store request: {exc}"
        return answer
