"""The Warble service on the server: intake, the persistent queue, dispatch, results, storage.

Topics (see docs/protocol.md, "Warble"):
- `<prefix>/warble/submit`: anyone submits `{"id"?, "user", "source"}` or a
  plain-text post (`#pi{PRINT(1)}`; the user then comes from the MQTT v5 user
  property `user`, else `anonymous`).
- `<prefix>/warble/results/<id>`: first `{"id", "status": "queued"}` (the
  acknowledgement, sent once the job is in the SQLite queue), then the result.
  With an MQTT v5 response topic (or `"reply_to"` in the JSON), the same
  messages also go there, with the request's correlation data.
- Jobs go to `<prefix>/nodes/<worker>/cmd/warble`; workers answer on
  `<prefix>/nodes/<worker>/reply/warble` (plugin `warble_worker`).
- `<prefix>/warble/store`: the workers' SAVE/LOAD requests, against a SQLite
  store on the server with per-user quotas.
- `<prefix>/warble/leaderboard` (retained): the most digits of pi printed.

Needs the `registry` plugin on the same node (found with `node.lookup`): it
says which workers are healthy and how loaded they are, and its `NODE_STATE`
event tells when one leaves.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

from pidaemon import hookimpl
from pidaemon.bus import Message, PayloadError, Subscription
from pidaemon.schema import Integer, Number, String, settings
from pidaemon.warble import Limits, SqliteStore, UnknownFunction, WarbleError, compile_program
from pidaemon.warble.errors import QuotaExceeded
from pidaemon.warble.posts import NoWarble, program_of
from pidaemon.warble.values import decode_value, encode_value
from pidaemon_plugins.registry import NODE_STATE, NodeRecord, RegistryPlugin

from . import hookspecs
from .hookspecs import WarbleHooks
from .jobqueue import Job, JobQueue, QueueLimits, QueueRefused
from .leaderboard import Leaderboard, pi_decimals
from .worker_choice import WorkerLoad, pick_worker


HOUSEKEEPING_INTERVAL = 0.5  # seconds between lease and deadline checks
CLEANUP_INTERVAL = 600.0     # seconds between two deletions of old finished jobs


@settings
class WarbleServerSettings:
    db: str | None = String(default=None, doc="the job queue's SQLite file; default <state_dir>/warble-jobs.sqlite3")
    store_db: str | None = String(default=None, doc="SAVE/LOAD values; default <state_dir>/warble-store.sqlite3")
    cpu_threshold: float = Number(min=0, default=30, doc="a worker above this CPU percent gets no new job")
    slots_per_worker: int | None = Integer(min=1, default=None, doc="jobs per worker at once; default its core count")
    job_time_limit: float = Number(min=0.1, default=30, doc="the workers' Warble time limit, in seconds")
    lease_margin: float = Number(min=0.1, default=15,
                                 doc="seconds beyond the time limit before a silent worker's job is re-queued")
    max_attempts: int = Integer(min=1, default=3)
    queue_deadline: float = Number(min=1, default=600, doc="seconds a job may wait before it expires")
    per_user_queued: int = Integer(min=1, default=200, doc="a user's share of the queue")
    per_user_rate: float = Number(min=0.01, default=5, doc="submissions per second per user")
    per_user_burst: int = Integer(min=1, default=50)
    max_source_length: int = Integer(min=1, default=280, doc="characters of a program")
    max_submission_length: int = Integer(min=1, default=4096,
                                         doc="characters of a submission (a post around its #pi{...}) read at all")
    max_rejected_kept: int = Integer(min=10, default=10_000,
                                     doc="records of refused submissions kept, the newest; a flood of bad "
                                         "submissions cannot fill the disk")
    keep_results: float = Number(min=60, default=30 * 86400,
                                 doc="seconds finished jobs stay in the queue file (history, GET /warbles/<id>)")
    max_saved_keys: int = Integer(min=1, default=100, doc="SAVE names per user")
    max_saved_value_length: int = Integer(min=1, default=4096)


class WarbleServer:
    config_schema = WarbleServerSettings
    hookspecs = hookspecs

    def __init__(self, node, config: WarbleServerSettings):
        self.node = node
        self.config = config
        state = node.state_dir
        self.db_path = Path(config.db) if config.db else state / "warble-jobs.sqlite3"
        self.store_path = Path(config.store_db) if config.store_db else state / "warble-store.sqlite3"
        self.limits = Limits(max_program_length=config.max_source_length)
        self.lease = config.job_time_limit + self.limits.kill_grace + config.lease_margin
        self.queue: JobQueue | None = None
        self.store: SqliteStore | None = None
        self.leaderboard: Leaderboard | None = None
        self.registry: RegistryPlugin | None = None
        self._wake = asyncio.Event()
        self._next_cleanup = 0.0
        self.stats = {"submitted": 0, "rejected": 0, "dispatched": 0, "results": 0, "duplicate_results": 0,
                      "requeued": 0, "expired": 0}

    # ------------------------------------------------------------ lifecycle

    @hookimpl
    def pidaemon_configure(self, node):
        self.registry = node.lookup(RegistryPlugin)
        config = self.config
        self.queue = JobQueue(self.db_path, QueueLimits(
            max_attempts=config.max_attempts, queue_deadline=config.queue_deadline,
            per_user_queued=config.per_user_queued, per_user_rate=config.per_user_rate,
            per_user_burst=config.per_user_burst, max_rejected_kept=config.max_rejected_kept))
        self.store = SqliteStore(str(self.store_path), config.max_saved_keys, config.max_saved_value_length)
        self.leaderboard = Leaderboard(self.queue.db)  # the queue's file and connection
        node.events.on(NODE_STATE, self._node_changed)

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topic("warble", "submit")),
                Subscription(node.topic("nodes", "+", "reply", "warble")),
                Subscription(node.topic("warble", "store")),
                Subscription(node.topic("warble", "history"))]

    @hookimpl
    async def pidaemon_startup(self, node):
        await asyncio.to_thread(pi_decimals)  # the leaderboard's reference digits, off the event loop
        node.spawn(self._dispatch_forever(), name="warble-dispatch")
        WarbleHooks(node).intake(self.submit_post)

    @hookimpl
    def pidaemon_connected(self, node):
        node.publish(node.topic("warble", "leaderboard"), self.leaderboard.snapshot(), qos=1, retain=True)
        self._wake.set()

    @hookimpl
    def pidaemon_shutdown(self, node):
        for resource in (self.queue, self.store):
            if resource is not None:
                resource.close()

    @hookimpl
    def pidaemon_telemetry(self, node):
        return {"warble_queue": {**self.queue.counts(), **self.stats}} if self.queue else {}

    # ------------------------------------------------------------ messages

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        levels = message.topic.split("/")
        if message.topic == node.topic("warble", "submit"):
            self._on_submit(message)
        elif levels[-2:] == ["reply", "warble"]:
            self._on_worker_reply(levels[-3], message.json())
        elif message.topic == node.topic("warble", "store"):
            self._on_store_request(message.json())
        elif message.topic == node.topic("warble", "history"):
            self._on_history_request(message)

    def _reply_topic(self, topic: Any) -> str | None:
        """A client's reply topic, if it is safe to publish to.

        Answers must not land on the cluster's own topics (a job topic, a status),
        so a topic under the prefix is accepted only below `<prefix>/replies/`.
        """
        if not topic:
            return None
        topic = str(topic)
        own = topic.startswith(self.node.topic("")) and not topic.startswith(self.node.topic("replies", ""))
        if own or "+" in topic or "#" in topic or "\0" in topic or len(topic) > 512:
            self.node.log.warning("warble: ignored the reply topic %r (use a topic outside %s/, or under %s)",
                                  topic[:80], self.node.topics.prefix, self.node.topic("replies", ""))
            return None
        return topic

    def _on_submit(self, message: Message) -> None:
        reply = {"reply_to": self._reply_topic(message.response_topic), "correlation": message.correlation_data}
        text = message.text()
        if text.lstrip().startswith("{") and not text.lstrip().startswith("{#"):
            try:
                request = json.loads(text)
            except json.JSONDecodeError:
                request = None  # a bare `{PRINT(1)}` program, not JSON
            if isinstance(request, dict):
                if not isinstance(request.get("source"), str):
                    raise PayloadError(f"{message.topic}: a JSON submission needs \"source\" (a string)")
                if request.get("reply_to") and not reply["reply_to"]:
                    reply["reply_to"] = self._reply_topic(request["reply_to"])
                self.submit(str(request.get("user") or "anonymous"), request["source"],
                            job_id=_optional_str(request.get("id")), post_id=_optional_str(request.get("post_id")),
                            **reply)
                return
        self.submit(message.user_property("user") or "anonymous", text, **reply)

    # ------------------------------------------------------------ intake (MQTT, HTTP, feeds)

    def submit(self, user: str, source: str, *, job_id: str | None = None, post_id: str | None = None,
               reply_to: str | None = None, correlation: bytes | None = None) -> dict[str, Any]:
        """Check and queue a program; returns the acknowledgement or the rejection (also published)."""
        problem = _check_submission(user, source, job_id, self.config.max_submission_length)
        if problem:
            # Neither the client's id nor the oversized text goes anywhere: a new id, a short record.
            return self._reject(str(user)[:MAX_NAME], source[:MAX_NAME], problem, None, None, reply_to, correlation)
        existing = self.queue.find(job_id=job_id, post_id=post_id)
        if existing is not None:
            return self._ack(existing)
        try:
            source = program_of(source)
        except NoWarble as exc:
            return self._reject(user, source, str(exc), job_id, post_id, reply_to, correlation)
        try:
            compile_program(source, limits=self.limits)
        except UnknownFunction as exc:
            if not exc.may_be_plugin_builtin:  # else the worker that runs it, with its plugins, judges
                return self._reject(user, source, exc.info().to_dict(), job_id, post_id, reply_to, correlation)
        except WarbleError as exc:
            return self._reject(user, source, exc.info().to_dict(), job_id, post_id, reply_to, correlation)
        try:
            job, created = self.queue.submit(user, source, job_id=job_id, post_id=post_id, reply_topic=reply_to,
                                             correlation=correlation)
        except QueueRefused as exc:
            return self._reject(user, source, str(exc), job_id, post_id, reply_to, correlation)
        if created:
            self.stats["submitted"] += 1
            self._wake.set()
        ack = self._ack(job)
        self._publish_result(job, ack)
        return ack

    def submit_post(self, post_id: str, user: str, text: str) -> dict[str, Any]:
        """A post from a feed: its `#pi{...}` program is queued once per post id."""
        return self.submit(user, text, post_id=post_id)

    def _ack(self, job: Job) -> dict[str, Any]:
        if job.result is not None:
            return {"id": job.id, "user": job.user, **job.result, "status": job.result.get("status", job.state)}
        return {"id": job.id, "user": job.user, "status": "queued"}

    def _reject(self, user, source, error, job_id, post_id, reply_to, correlation) -> dict[str, Any]:
        if isinstance(error, str):
            error = {"message": error, "line": None, "column": None}
        result = {"status": "rejected", "output": [], "error": error}
        job = self.queue.record_rejected(user, source, result, job_id=job_id, post_id=post_id,
                                         reply_topic=reply_to, correlation=correlation)
        self.stats["rejected"] += 1
        payload = {"id": job.id, "user": user, **result}
        self._publish_result(job, payload)
        return payload

    def get(self, job_id: str) -> dict[str, Any] | None:
        job = self.queue.get(job_id)
        return None if job is None else job.summary()

    def history(self, user: str, limit: int = 50) -> list[dict[str, Any]]:
        return [job.summary() for job in self.queue.history(user, limit)]

    # ------------------------------------------------------------ dispatch

    async def _dispatch_forever(self) -> None:
        next_housekeeping = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), HOUSEKEEPING_INTERVAL)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                if loop.time() >= next_housekeeping:
                    next_housekeeping = loop.time() + HOUSEKEEPING_INTERVAL
                    self._housekeeping()
                self._dispatch()
            except Exception as exc:  # one bad job must not stop every other job's dispatch
                self.node.log.error("warble dispatch: %s: %s", type(exc).__name__, exc)

    def _worker_loads(self) -> list[WorkerLoad]:
        in_flight = self.queue.in_flight()
        loads = []
        for node_id in self.registry.healthy_nodes("warble"):
            record = self.registry.node_record(node_id)
            capacity = self.config.slots_per_worker or record.cpu_count or 1
            cpu = (record.telemetry or {}).get("cpu_percent")
            loads.append(WorkerLoad(node_id, cpu, capacity, in_flight.get(node_id, 0)))
        return loads

    def _dispatch(self) -> None:
        if not self.node.bus or not self.node.bus.connected:
            return
        loads = {w.node: w for w in self._worker_loads()}
        while loads:
            worker = pick_worker(list(loads.values()), self.config.cpu_threshold)
            if worker is None:
                return
            job = self.queue.next_job()
            if job is None:
                return
            sent = self.node.publish(self.node.topics.command(worker, "warble"),
                                     {"id": job.id, "user": job.user, "source": job.source}, qos=1)
            if not sent:
                return
            self.queue.mark_dispatched(job.id, worker, self.lease)
            self.stats["dispatched"] += 1
            load = loads[worker]
            loads[worker] = WorkerLoad(worker, load.cpu_percent, load.capacity, load.in_flight + 1)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_cleanup:
            self._next_cleanup = now + CLEANUP_INTERVAL
            forgotten = self.queue.forget_finished(self.config.keep_results)
            if forgotten:
                self.node.log.info("forgot %d finished jobs older than %g s", forgotten, self.config.keep_results)
        for job in self.queue.expire_queued():
            self.stats["expired"] += 1
            self._publish_result(job, {"id": job.id, "user": job.user, **job.result})
        for job in self.queue.expire_leases():
            self._after_requeue(job)
        healthy = set(self.registry.healthy_nodes("warble"))
        for node_id in self.queue.in_flight():
            if node_id not in healthy:
                for job in self.queue.requeue_from(node_id):
                    self._after_requeue(job)

    def _node_changed(self, record: NodeRecord, old_state: str) -> None:
        if record.state != "online":
            for job in self.queue.requeue_from(record.id):
                self._after_requeue(job)
        self._wake.set()

    def _after_requeue(self, job: Job) -> None:
        self.stats["requeued"] += 1
        if job.result is not None:  # gave up after max_attempts
            self.node.log.warning("job %s failed: %s", job.id, job.result["error"]["message"])
            self._publish_result(job, {"id": job.id, "user": job.user, **job.result})
        else:
            self.node.log.info("job %s re-queued (attempt %d done)", job.id, job.attempts)
        self._wake.set()

    # ------------------------------------------------------------ results

    def _on_worker_reply(self, worker: str, reply: Any) -> None:
        if not isinstance(reply, dict) or not isinstance(reply.get("id"), str):
            raise PayloadError(f"warble reply from {worker}: expected {{\"id\", \"state\", ...}}")
        job_id, state = reply["id"], reply.get("state")
        if state == "running":
            self.queue.mark_running(job_id, worker, self.lease)
            return
        if state != "done" or not isinstance(reply.get("result"), dict):
            raise PayloadError(f"warble reply from {worker} for {job_id}: unknown state {state!r}")
        result = reply["result"]
        if not self.queue.complete(job_id, result, failed=result.get("status") == "crashed", node=worker):
            self.stats["duplicate_results"] += 1  # at-least-once delivery: stored once, announced once
            return
        self.stats["results"] += 1
        job = self.queue.get(job_id)
        self._publish_result(job, {"id": job_id, "user": job.user, **result})
        if self.leaderboard.consider(job.user, job_id, result.get("output") or []):
            self.node.publish(self.node.topic("warble", "leaderboard"), self.leaderboard.snapshot(),
                              qos=1, retain=True)
        self._wake.set()

    def _publish_result(self, job: Job, payload: dict[str, Any]) -> None:
        self.node.publish(self.node.topic("warble", "results", job.id), payload, qos=1)
        if job.reply_topic:
            extra = {"correlation_data": job.correlation} if job.correlation is not None else {}
            self.node.publish(job.reply_topic, payload, qos=1, **extra)

    # ------------------------------------------------------------ SAVE / LOAD for the workers

    def _on_store_request(self, request: Any) -> None:
        if not isinstance(request, dict) or request.get("op") not in ("save", "load"):
            raise PayloadError("warble store request: expected {\"op\": \"save\"|\"load\", ...}")
        reply_to = str(request.get("reply_to") or "")
        levels = reply_to.split("/")
        worker = levels[-3] if levels[-2:] == ["reply", "warble_store"] else None
        if worker is None or reply_to != self.node.topics.reply(worker, "warble_store"):
            raise PayloadError(f"warble store request: reply_to must be a worker's reply topic, got {reply_to!r}")
        user = str(request.get("user"))
        # Only a worker running a job of this user may read or write the user's values.
        if not self.queue.running_for(worker, user):
            raise PayloadError(f"warble store request from {worker}: no job of user {user!r} runs there")
        answer: dict[str, Any] = {"correlation": request.get("correlation")}
        try:
            name = str(request["name"])
            if request["op"] == "load":
                value = self.store.get(user, name)
                answer["value"] = None if value is None else list(encode_value(value))
            else:
                kind, text = request["value"]
                if not isinstance(text, str) or len(text) > self.config.max_saved_value_length + 32:
                    raise QuotaExceeded(f"SAVE: a value is at most {self.config.max_saved_value_length} characters")
                self.store.set(user, name, decode_value(kind, text))
        except QuotaExceeded as exc:
            answer.update(error=exc.message, quota=True)
        except (KeyError, TypeError, ValueError, ArithmeticError, WarbleError) as exc:
            answer["error"] = f"bad store request: {exc}"
        self.node.publish(reply_to, answer, qos=1)

    def _on_history_request(self, message: Message) -> None:
        request = message.json()
        if not isinstance(request, dict) or not isinstance(request.get("user"), str):
            raise PayloadError(f"{message.topic}: expected {{\"user\": str, \"reply_to\": topic}}")
        reply_to = self._reply_topic(message.response_topic or request.get("reply_to"))
        if not reply_to:
            raise PayloadError(f"{message.topic}: no usable response topic or reply_to")
        extra = {"correlation_data": message.correlation_data} if message.correlation_data else {}
        self.node.publish(str(reply_to), {"user": request["user"], "jobs": self.history(request["user"])},
                          qos=1, **extra)


ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
MAX_NAME = 64  # characters of a user name (and of what a rejection keeps of an oversized post)


def _check_submission(user: Any, source: Any, job_id: str | None, max_length: int) -> str | None:
    """What is wrong with a submission's envelope, before any parsing; None if nothing."""
    if job_id is not None and not ID_PATTERN.fullmatch(job_id):
        return "an id is 1-64 letters, digits, '_', '-' or '.'"
    if not isinstance(user, str) or not 0 < len(user) <= MAX_NAME or any(c in user for c in "+#/\0"):
        return f"a user name is 1-{MAX_NAME} characters without '/', '+', '#'"
    if len(source) > max_length:
        return f"the submission is {len(source)} characters long; at most {max_length} are read"
    return None


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
