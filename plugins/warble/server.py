"""The `warble_server` plugin: the Warble service on the server, wiring intake, dispatch and results.

Topics (see docs/protocol.md, "Warble"):
- `<prefix>/warble/submit`: anyone submits `{"id"?, "user", "source"}` or a
  plain-text post (`#pi{PRINT(1)}`; the user then comes from the MQTT v5 user
  property `user`, else `anonymous`; the v5 user property `client_id` names
  the submission's origin, for the per-origin limits).
- `<prefix>/warble/results/<id>`: first `{"id", "status": "queued"}` (the
  acknowledgement, sent once the job is in the SQLite queue), then the result;
  or at once `{"status": "rejected", "error": {"message", "reason"}}`.  Every
  submission is answered.  Re-submitting a known id answers with the job's
  current state (`queued`, `dispatched`, `running` or its result), at most once per
  `repeat_answer_interval` per id.  With an MQTT v5 response topic (or
  `"reply_to"` in the JSON) that `reply_topics` allows, the same messages also
  go there, with the request's correlation data.
- Jobs go to `<prefix>/nodes/<worker>/cmd/warble` with their attempt number;
  workers answer on `<prefix>/nodes/<worker>/reply/warble` with it (plugin
  `warble_worker`).  A job taken from a worker (silent, unhealthy, lease
  expired) is revoked on `<prefix>/nodes/<worker>/cmd/warble_revoke`, and the
  old attempt's replies, SAVEs and LOADs are refused from then on.
- `<prefix>/nodes/<worker>/reply/warble_store`: the workers' SAVE/LOAD
  requests, against a SQLite store on the server with per-user quotas, served
  to users in turn (`store_service.py`).
- `<prefix>/warble/leaderboard` (retained): the most digits of pi printed.

Other plugins of the node (the dashboard) follow the jobs through the node
event `WARBLE_JOB` ("warble:job"), emitted when a job is queued, runs on a
worker, goes back to the queue, and ends (done, failed, expired).

Needs the `registry` plugin on the same node (found with `node.lookup`): it
says which workers are healthy and how loaded they are, and its `NODE_STATE`
event tells when one leaves.

The parts it wires: the queue (`jobqueue.py`), the submission's envelope
(`submission.py`), the reply-topic policy (`reply_topics.py`), the bound on
repeated answers (`repeat_answers.py`), the choice of a worker
(`worker_choice.py`), the SAVE/LOAD service (`store_service.py`), the
leaderboard (`leaderboard.py`), damaged state files (`recovery.py`) and
rate-limited log lines (`pidaemon.logs.LimitedLog`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from pidaemon import hookimpl
from pidaemon.bus import Message, PayloadError, Subscription
from pidaemon.logs import LimitedLog
from pidaemon.schema import Checked, Integer, ListOf, Number, String, settings
from pidaemon.sqlite import CorruptDatabase
from pidaemon.warble import Limits, UnknownFunction, WarbleError, compile_program
from pidaemon.warble.posts import NoWarble, program_of
from pidaemon_plugins.registry import NODE_STATE, NodeRecord, RegistryPlugin

from . import hookspecs
from .hookspecs import WarbleHooks
from .job_values import JobValues
from .jobqueue import (ACTIVE_STATES, REJECTED, RUNNING, STORAGE_ERRORS, Job, JobQueue, QueueLimits, QueueRefused,
                       StorageFailed, storage_error_name)
from .leaderboard import Leaderboard, pi_decimals
from .recovery import QueueRecovery, recover_queue, recover_store
from .repeat_answers import RepeatAnswers
from .reply_topics import PREFIX_PLACEHOLDER, ReplyTopics, reply_topic_filter
from .store_service import StoreService, TakeTurns
from .submission import MAX_NAME, Submission, envelope_problem
from .worker_choice import WorkerLoad, pick_worker


HOUSEKEEPING_INTERVAL = 0.5  # seconds between lease and deadline checks
CLEANUP_INTERVAL = 600.0     # seconds between two deletions of old finished jobs
RUNNING_NOTICE_AFTER = 0.25  # seconds a job runs before its client is told "running" (most end sooner)
# The node event other plugins follow the jobs with (`node.events.on(WARBLE_JOB, handler)`).
WARBLE_JOB = "warble:job"


@settings
class WarbleServerSettings:
    db: str | None = String(default=None, doc="the job queue's SQLite file; default <state_dir>/warble-jobs.sqlite3")
    store_db: str | None = String(default=None, doc="SAVE/LOAD values; default <state_dir>/warble-store.sqlite3")
    cpu_threshold: float = Number(min=0, default=30, doc="a worker above this CPU percent gets no new job")
    slots_per_worker: int | None = Integer(min=1, default=None, doc="jobs per worker at once; default its core count")
    job_time_limit: float = Number(min=0.1, default=30, doc="the workers' Warble time limit, in seconds")
    lease_margin: float = Number(min=0.1, default=15,
                                 doc="seconds beyond the time limit before a silent worker's job is re-queued")
    requeue_after: float = Number(min=0, default=5,
                                  doc="seconds a worker must stay offline or unhealthy, while this server is "
                                      "connected, before its jobs go to another worker: a broker that restarts "
                                      "sends every node's last will, though none of them died")
    max_attempts: int = Integer(min=1, default=3)
    queue_deadline: float = Number(min=1, default=600, doc="seconds a job may wait before it expires")
    max_queued: int = Integer(min=1, default=10_000,
                              doc="jobs waiting in the queue, all users together; beyond, submissions are "
                                  "rejected (reason queue_full)")
    per_user_queued: int = Integer(min=1, default=200, doc="a user's share of the queue")
    per_user_rate: float = Number(min=0.01, default=5, doc="submissions per second per user")
    per_user_burst: int = Integer(min=1, default=50)
    per_origin_queued: int = Integer(min=1, default=1000,
                                     doc="an origin's share of the queue, whatever user names it gives (origin: "
                                         "the MQTT v5 user property client_id, or the HTTP client's address)")
    per_origin_rate: float = Number(min=0.01, default=20, doc="submissions per second per origin")
    per_origin_burst: int = Integer(min=1, default=200)
    max_running_per_user: int | None = Integer(
        min=1, default=None, doc="jobs of one user running at once; default half the slots of the healthy "
                                 "workers, at least 1")
    max_running_per_origin: int | None = Integer(
        min=1, default=None, doc="jobs of one origin running at once; default half the slots of the healthy "
                                 "workers, at least 1")
    reply_topics: tuple[str, ...] = ListOf(
        Checked(reply_topic_filter, expected="an MQTT topic filter ({prefix} for mqtt.prefix)"),
        default=[f"{PREFIX_PLACEHOLDER}/replies/#"],
        doc="topic filters a submitter's reply topic (MQTT v5 response topic or reply_to) must match; "
            "{prefix} is mqtt.prefix. Under the prefix, only <prefix>/replies/... is ever used")
    repeat_answer_interval: float = Number(min=0, default=1.0,
                                           doc="seconds before a re-submitted id is answered again on MQTT")
    max_repeat_answers: float = Number(min=1, default=100,
                                       doc="answers to re-submissions per second, all ids together")
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
        self.reply_topics = ReplyTopics(node.topics, config.reply_topics)
        self.queue: JobQueue | None = None
        self.store: JobValues | None = None
        self.store_service: StoreService | None = None
        self.leaderboard: Leaderboard | None = None
        self.registry: RegistryPlugin | None = None
        self._lost_jobs: list[str] = []  # ids read back alone from a damaged queue: answered once connected
        self._wake = asyncio.Event()
        self._repeats = RepeatAnswers(config.repeat_answer_interval, config.max_repeat_answers)
        self._limited_log = LimitedLog(node.log)
        self._next_cleanup = 0.0
        self._closed = False
        self._connected_since: float | None = None  # monotonic: since when this server has been connected
        self._running_notices: dict[str, asyncio.TimerHandle] = {}  # job id: its "running" answer, to come
        # Results a worker sent that the queue file could not take (a full disk): kept here, written again at
        # each housekeeping, and their jobs are not handed to another worker meanwhile.
        self._unwritten: dict[str, tuple[str, int, dict[str, Any]]] = {}  # job id: (worker, attempt, result)
        node.events.declare(WARBLE_JOB, "a Warble job was queued, runs on a worker, went back to the queue or "
                                        "ended: job (dict, Job.summary(): id, user, source, state, node, "
                                        "submitted, updated, attempts, result if ended), queued (int, jobs waiting)")
        # The `warble_queue` telemetry (with the queue's counts); the store service counts its store_* here too.
        self.stats = {"submitted": 0, "rejected": 0, "dispatched": 0, "results": 0, "duplicate_results": 0,
                      "requeued": 0, "expired": 0, "repeat_answers": 0, "repeat_answers_held": 0,
                      "reply_topics_refused": 0, "stale_replies": 0, "store_requests": 0, "store_refused": 0,
                      "store_busy": 0}

    # ------------------------------------------------------------ lifecycle

    @hookimpl
    def pidaemon_configure(self, node):
        self.registry = node.lookup(RegistryPlugin)
        config = self.config
        limits = QueueLimits(
            max_attempts=config.max_attempts, queue_deadline=config.queue_deadline, max_queued=config.max_queued,
            per_user_queued=config.per_user_queued, per_user_rate=config.per_user_rate,
            per_user_burst=config.per_user_burst, per_origin_queued=config.per_origin_queued,
            per_origin_rate=config.per_origin_rate, per_origin_burst=config.per_origin_burst,
            max_rejected_kept=config.max_rejected_kept)
        self.queue = self._open_damaged_or_not(self.db_path, "job queue", lambda: JobQueue(self.db_path, limits),
                                               recover_queue)
        self.store = self._open_damaged_or_not(
            self.store_path, "SAVE/LOAD store",
            lambda: JobValues(str(self.store_path), config.max_saved_keys, config.max_saved_value_length),
            recover_store)
        self.store_service = StoreService(node, self.queue, self.store, config.max_saved_value_length, self.stats)
        self.leaderboard = Leaderboard(self.queue.db)  # the queue's file and connection
        node.events.on(NODE_STATE, self._node_changed)

    def _open_damaged_or_not(self, path: Path, what: str, open_file, recover):
        """Open a state file; a damaged one is read back into a fresh one (`recovery.py`), saying so.

        When nothing of it can be read, the error says which file and what to do, and the plugin fails
        (the server role requires it: the daemon stops rather than claim to be ready).
        """
        try:
            return open_file()
        except CorruptDatabase as damage:
            try:
                opened, report = recover(path, open_file)
            except CorruptDatabase as unreadable:
                raise CorruptDatabase(path, f"{unreadable.reason}; it holds what users were told was kept, so it "
                                            f"was left in place: restore it from a backup, or move it away to "
                                            f"start with an empty {what}") from None
            description = report if isinstance(report, str) else report.describe()
            self.node.log.error("warble: the %s %s is damaged (%s): %s", what, path, damage.reason, description)
            if isinstance(report, QueueRecovery):
                self._lost_jobs.extend(report.failed_ids)
            return opened

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topic("warble", "submit")),
                Subscription(node.topic("nodes", "+", "reply", "warble")),
                Subscription(node.topic("nodes", "+", "reply", "warble_store")),
                Subscription(node.topic("warble", "history"))]

    @hookimpl
    async def pidaemon_startup(self, node):
        await asyncio.to_thread(pi_decimals)  # the leaderboard's reference digits, off the event loop
        node.supervise(self._dispatch_forever, name="warble-dispatch")
        node.supervise(self.store_service.serve_forever, name="warble-store")
        WarbleHooks(node).intake(self.submit_post)

    @hookimpl
    def pidaemon_disconnected(self, node):
        self._connected_since = None

    @hookimpl
    def pidaemon_connected(self, node):
        self._connected_since = time.monotonic()
        node.publish(node.topic("warble", "leaderboard"), self.leaderboard.snapshot(), qos=1, retain=True)
        for job_id in self._lost_jobs:  # read back from a damaged queue by their id alone: their owners hear
            self._publish_result(self.queue.get(job_id), self.queue.get(job_id).result)
        self._lost_jobs.clear()
        self._wake.set()

    @hookimpl
    def pidaemon_shutdown(self, node):
        self._closed = True  # messages that still arrive until the bus stops are not handled
        for notice in self._running_notices.values():
            notice.cancel()
        if self._unwritten:
            node.log.error("warble: %d results could not be written (the disk is full); their jobs run again "
                           "after the next start: %s", len(self._unwritten), ", ".join(sorted(self._unwritten)))
        if self.store_service is not None:
            self.store_service.stop()
        for resource in (self.queue, self.store):
            if resource is not None:
                resource.close()

    @hookimpl
    def pidaemon_telemetry(self, node):
        return {"warble_queue": {**self.queue.counts(), **self.stats}} if self.queue else {}

    @property
    def _store_requests(self) -> TakeTurns:
        """The SAVE/LOAD requests waiting for their user's turn (tests watch the order they are served in)."""
        return self.store_service.requests

    # ------------------------------------------------------------ messages

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        if self._closed:
            return
        levels = message.topic.split("/")
        if message.topic == node.topic("warble", "submit"):
            self._on_submit(message)
        elif levels[-2:] == ["reply", "warble"]:
            self._on_worker_reply(levels[-3], message.json())
        elif levels[-2:] == ["reply", "warble_store"]:
            self.store_service.on_request(levels[-3], message.json())
        elif message.topic == node.topic("warble", "history"):
            self._on_history_request(message)

    def _reply_target(self, topic: Any) -> tuple[str | None, str | None]:
        """`ReplyTopics.check`, a refusal counted and logged."""
        reply_to, refusal = self.reply_topics.check(topic)
        if refusal is not None:
            self.stats["reply_topics_refused"] += 1
            self._limited_log.log("reply_topic", "warble: %s", refusal)
        return reply_to, refusal

    def _on_submit(self, message: Message) -> None:
        reply = {"reply_to": message.response_topic, "correlation": message.correlation_data}
        client_id = message.user_property("client_id")
        origin = None if client_id is None else f"mqtt:{client_id}"
        try:
            text = message.text()
        except PayloadError as exc:
            self.submit(message.user_property("user") or "anonymous", "", origin=origin, refusal=str(exc), **reply)
            return
        if text.lstrip().startswith("{") and not text.lstrip().startswith("{#"):
            try:
                request = json.loads(text)
            except json.JSONDecodeError:
                request = None  # a bare `{PRINT(1)}` program, not JSON
            except (ValueError, RecursionError) as exc:  # nested too deep, an integer of too many digits
                self.submit(message.user_property("user") or "anonymous", "", origin=origin,
                            refusal=f"a JSON submission this server will not read: {type(exc).__name__}", **reply)
                return
            if isinstance(request, dict):
                if not reply["reply_to"]:
                    reply["reply_to"] = request.get("reply_to")
                source = request.get("source")
                refusal = None if isinstance(source, str) else 'a JSON submission needs "source" (a string)'
                self.submit(str(request.get("user") or "anonymous"), source if isinstance(source, str) else "",
                            job_id=_optional_str(request.get("id")), post_id=_optional_str(request.get("post_id")),
                            origin=origin, refusal=refusal, **reply)
                return
        self.submit(message.user_property("user") or "anonymous", text, origin=origin, **reply)

    # ------------------------------------------------------------ intake (MQTT, HTTP, feeds)

    def submit(self, user: str, source: str, *, job_id: str | None = None, post_id: str | None = None,
               reply_to: Any = None, correlation: bytes | None = None, origin: str | None = None,
               refusal: str | None = None) -> dict[str, Any]:
        """Check and queue a program; returns the acknowledgement or the rejection (also published).

        Every call is answered on `<prefix>/warble/results/<id>`: a known
        `job_id` with the job's current state (rate-limited per id), anything
        refused with a `rejected` answer and its reason.  `origin` says where
        the submission came from when the intake knows it (`mqtt:<client id>`,
        `http:<address>`), for the per-origin limits; `refusal` is a problem
        the intake found already (the submission is rejected with it).
        """
        reply_topic, reply_refused = self._reply_target(reply_to)
        submission = Submission(user=user, source=source, job_id=job_id, post_id=post_id, reply_to=reply_topic,
                                correlation=correlation, origin=origin, reply_refused=reply_refused)
        problem = envelope_problem(user, source, job_id, origin, self.config.max_submission_length)
        if problem:
            return self._reject(submission.without_identity(), problem, "invalid")
        if refusal:
            return self._reject(replace(submission, source=source[:MAX_NAME]), refusal, "invalid")
        try:
            existing = self.queue.find(job_id=job_id, post_id=post_id)
        except STORAGE_ERRORS as exc:
            return self._reject(submission, str(StorageFailed(exc)), "storage")
        if existing is not None:
            return self._answer_again(existing, submission)
        try:
            source = program_of(source)
        except NoWarble as exc:
            return self._reject(submission, str(exc), "program")
        submission = replace(submission, source=source)
        try:
            compile_program(source, limits=self.limits)
        except UnknownFunction as exc:
            if not exc.may_be_plugin_builtin:  # else the worker that runs it, with its plugins, judges
                return self._reject(submission, exc.info().to_dict(), "program")
        except WarbleError as exc:
            return self._reject(submission, exc.info().to_dict(), "program")
        try:
            job, created = self.queue.submit(user, source, job_id=job_id, post_id=post_id, reply_topic=reply_topic,
                                             correlation=correlation, origin=origin)
        except QueueRefused as exc:
            if isinstance(exc, StorageFailed):
                self._limited_log.log("storage", "warble: could not queue a job: %s: %s",
                                      storage_error_name(exc.error), exc.error)
            return self._reject(submission, str(exc), exc.reason)
        if not created:
            return self._answer_again(job, submission)
        self.stats["submitted"] += 1
        self._job_changed(job)
        self._wake.set()
        ack = self._answer(job, submission)
        self._publish_result(job, ack)
        return ack

    def submit_post(self, post_id: str, user: str, text: str) -> dict[str, Any]:
        """A post from a feed: its `#pi{...}` program is queued once per post id."""
        return self.submit(user, text, post_id=post_id)

    def _answer(self, job: Job, submission: Submission | None = None) -> dict[str, Any]:
        """The job's current state as an answer: `queued`, `dispatched` or `running` (with its node), or its result."""
        if job.result is not None:
            answer = {"id": job.id, "user": job.user, **job.result, "status": job.result.get("status", job.state)}
        elif job.state in ACTIVE_STATES:  # dispatched or running, on that node
            answer = {"id": job.id, "user": job.user, "status": job.state, "node": job.node}
        else:
            answer = {"id": job.id, "user": job.user, "status": "queued"}
        if submission is not None and submission.reply_refused:
            answer["reply_refused"] = submission.reply_refused
        return answer

    def _answer_again(self, job: Job, submission: Submission) -> dict[str, Any]:
        """A re-submission of a known job: its current state, published again for a client that
        re-sent its id (it may have missed the first answer), at most once per interval per id."""
        answer = self._answer(job, submission)
        if submission.job_id is None or submission.job_id != job.id:
            return answer  # a feed re-reading its timeline: nobody waits for an answer
        if self._repeats.allow(job.id, time.monotonic()):
            self.stats["repeat_answers"] += 1
            self._publish_answer(job.id, answer, submission.reply_to, submission.correlation)
        else:
            self.stats["repeat_answers_held"] += 1
        return answer

    def _reject(self, submission: Submission, error: Any, reason: str) -> dict[str, Any]:
        if isinstance(error, str):
            error = {"message": error, "line": None, "column": None}
        result = {"status": "rejected", "output": [], "error": {**error, "reason": reason}}
        try:
            job = self.queue.record_rejected(
                submission.user, submission.source, result, job_id=submission.job_id, post_id=submission.post_id,
                reply_topic=submission.reply_to, correlation=submission.correlation, origin=submission.origin)
        except STORAGE_ERRORS as exc:  # the disk is full: answer anyway, keep no record
            self._limited_log.log("storage", "warble: could not record a rejection: %s: %s",
                                  storage_error_name(exc), exc)
            job = Job(id=submission.job_id or uuid.uuid4().hex[:16], user=submission.user, source=submission.source,
                      state=REJECTED, result=result, reply_topic=submission.reply_to,
                      correlation=submission.correlation)
        self.stats["rejected"] += 1
        payload = {"id": job.id, "user": submission.user, **result}
        if submission.reply_refused:
            payload["reply_refused"] = submission.reply_refused
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
            if self._closed:
                return
            try:
                if loop.time() >= next_housekeeping:
                    next_housekeeping = loop.time() + HOUSEKEEPING_INTERVAL
                    self._housekeeping()
                self._dispatch()
            except Exception as exc:  # one bad job (or a full disk) must not stop every other job's dispatch
                self._limited_log.log("dispatch", "warble dispatch: %s: %s", type(exc).__name__, exc,
                                      level=logging.ERROR)

    def _worker_loads(self) -> list[WorkerLoad]:
        in_flight = self.queue.in_flight()
        loads = []
        for node_id in self.registry.healthy_nodes("warble"):
            record = self.registry.node_record(node_id)
            capacity = self.config.slots_per_worker or record.cpu_count or 1
            cpu = (record.telemetry or {}).get("cpu_percent")
            loads.append(WorkerLoad(node_id, cpu, capacity, in_flight.get(node_id, 0)))
        return loads

    def running_caps(self, workers: list[WorkerLoad]) -> tuple[int, int]:
        """Jobs one user, and one origin, may have running at once (default: half the slots, at least 1)."""
        half = max(1, sum(w.capacity for w in workers) // 2)
        return self.config.max_running_per_user or half, self.config.max_running_per_origin or half

    def _dispatch(self) -> None:
        if not self.node.bus or not self.node.bus.connected:
            return
        workers = self._worker_loads()
        per_user, per_origin = self.running_caps(workers)
        loads = {w.node: w for w in workers}
        while loads:
            worker = pick_worker(list(loads.values()), self.config.cpu_threshold)
            if worker is None:
                return
            job = self.queue.next_job(max_active_per_user=per_user, max_active_per_origin=per_origin)
            if job is None:
                return
            attempt = self.queue.mark_dispatched(job.id, worker, self.lease)
            if attempt is None:
                return
            sent = self.node.publish(self.node.topics.command(worker, "warble"),
                                     {"id": job.id, "user": job.user, "source": job.source, "attempt": attempt},
                                     qos=1)
            if not sent:
                self.queue.release(job.id, attempt)
                return
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
            self._job_changed(job)
        for job_id, (worker, attempt, result) in list(self._unwritten.items()):
            self._record_result(job_id, worker, attempt, result)
        self._finish_committed()
        for job in self.queue.expire_leases(keep=self._unwritten):
            self._after_requeue(job)
        for node_id in self.queue.in_flight():
            if self._gone(node_id):
                for job in self.queue.requeue_from(node_id, keep=self._unwritten):
                    self._after_requeue(job)

    def _finish_committed(self) -> None:
        """Results committed with their SAVEs but not in the job queue (the server stopped in between):
        their jobs end with them, and do not run again."""
        for job_id, (attempt, result) in self.store.committed().items():
            if job_id in self._unwritten:
                continue
            job = self.queue.get(job_id)
            if job is not None and job.state in ACTIVE_STATES and job.node is not None:
                self._record_result(job_id, job.node, job.attempts, result)
            else:
                self.store.forget_committed(job_id)

    def _gone(self, node_id: str) -> bool:
        """Whether a worker holding jobs has been away (offline, unhealthy, forgotten) for `requeue_after`
        seconds while this server was connected: then its jobs go to another worker.

        Not at once: a broker that stops cleanly sends every node's last will (`offline`) before this
        server loses its connection too, and the nodes are back a few seconds later.
        """
        record = self.registry.node_record(node_id)
        if record is not None and record.state == "online":
            return False
        grace = self.config.requeue_after
        if self._connected_since is None or time.monotonic() - self._connected_since < grace:
            return False
        return record is None or time.time() - record.since >= grace

    def _node_changed(self, record: NodeRecord, old_state: str) -> None:
        self._wake.set()  # the housekeeping decides, `requeue_after` later, what its jobs become

    def _after_requeue(self, job: Job) -> None:
        """A job was taken from its worker: tell the worker (its attempt is void), then retry or give up."""
        self.stats["requeued"] += 1
        if job.previous_node:
            self.node.publish(self.node.topics.command(job.previous_node, "warble_revoke"),
                              {"id": job.id, "attempt": job.attempts}, qos=1)
            self.store.discard(job.id, job.attempts)  # that run's SAVEs: never applied
        if job.result is not None:  # gave up after max_attempts
            self.node.log.warning("job %s failed: %s", job.id, job.result["error"]["message"])
            self._publish_result(job, {"id": job.id, "user": job.user, **job.result})
        else:
            self.node.log.info("job %s re-queued (attempt %d, on %s, revoked)", job.id, job.attempts,
                               job.previous_node)
        self._job_changed(job)
        self._wake.set()

    # ------------------------------------------------------------ results

    def _on_worker_reply(self, worker: str, reply: Any) -> None:
        if not isinstance(reply, dict) or not isinstance(reply.get("id"), str):
            raise PayloadError(f"warble reply from {worker}: expected {{\"id\", \"attempt\", \"state\", ...}}")
        job_id, state, attempt = reply["id"], reply.get("state"), reply.get("attempt")
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise PayloadError(f"warble reply from {worker} for {job_id}: no \"attempt\" (the job message's)")
        if state == "running":
            if not self.queue.mark_running(job_id, worker, self.lease, attempt=attempt):
                self.stats["stale_replies"] += 1
                return
            self._job_changed(self.queue.get(job_id))
            self._announce_running_later(job_id, worker)
            return
        if state != "done" or not isinstance(reply.get("result"), dict):
            raise PayloadError(f"warble reply from {worker} for {job_id}: unknown state {state!r}")
        self._record_result(job_id, worker, attempt, reply["result"])

    def _announce_running_later(self, job_id: str, worker: str) -> None:
        """Progress for the client that waits (it may not read the workers' topics): running, and where;
        only for a job still running `RUNNING_NOTICE_AFTER` seconds later.  Most jobs end sooner, and a
        message more per job would cost the cluster a sixth of its throughput for nobody's benefit."""
        def announce() -> None:
            self._running_notices.pop(job_id, None)
            job = self.queue.get(job_id)
            if job is not None and job.state == RUNNING and job.node == worker:
                self._publish_result(job, {"id": job_id, "user": job.user, "status": "running", "node": worker})

        previous = self._running_notices.pop(job_id, None)
        if previous is not None:
            previous.cancel()
        self._running_notices[job_id] = asyncio.get_running_loop().call_later(RUNNING_NOTICE_AFTER, announce)

    def _record_result(self, job_id: str, worker: str, attempt: int, result: dict[str, Any]) -> None:
        """Store a worker's result once and announce it; one the disk cannot take waits in memory.

        The run's SAVEs are applied with it (`job_values.py`): first in the store's file, with the result
        (the first result committed for a job is the one that counts), then in the job queue.
        """
        holder = self.queue.holds(job_id, attempt, worker)
        if holder is None and job_id not in self._unwritten:
            # At-least-once delivery (a duplicate), or an attempt that lost the job: stored once, announced once.
            self.stats["duplicate_results"] += 1
            return
        try:
            if holder is not None:
                result = self.store.commit(job_id, attempt, holder.user, result)
            stored = self.queue.complete(job_id, result, failed=result.get("status") == "crashed", node=worker,
                                         attempt=attempt)
            self.store.forget_committed(job_id)
        except STORAGE_ERRORS as exc:
            if job_id not in self._unwritten:
                self._limited_log.log("storage", "warble: cannot write the result of job %s (%s): kept until "
                                      "the disk has room; the job is not run again meanwhile", job_id,
                                      storage_error_name(exc), level=logging.ERROR)
            self._unwritten[job_id] = (worker, attempt, result)
            return
        self._unwritten.pop(job_id, None)
        notice = self._running_notices.pop(job_id, None)
        if notice is not None:
            notice.cancel()
        if not stored:
            # At-least-once delivery (a duplicate), or an attempt that lost the job: stored once, announced once.
            self.stats["duplicate_results"] += 1
            return
        self.stats["results"] += 1
        job = self.queue.get(job_id)
        self._publish_result(job, {"id": job_id, "user": job.user, **result})
        self._job_changed(job)
        if self.leaderboard.consider(job.user, job_id, result.get("output") or []):
            self.node.publish(self.node.topic("warble", "leaderboard"), self.leaderboard.snapshot(),
                              qos=1, retain=True)
        self._wake.set()

    def _job_changed(self, job: Job | None) -> None:
        """Tell the node's other plugins (`WARBLE_JOB`); a listener's failure is the event's to log."""
        if job is not None:
            self.node.events.emit(WARBLE_JOB, job=job.summary(), queued=len(self.queue.waiting))

    def _publish_result(self, job: Job, payload: dict[str, Any]) -> None:
        self._publish_answer(job.id, payload, job.reply_topic, job.correlation)

    def _publish_answer(self, job_id: str, payload: dict[str, Any], reply_to: str | None,
                        correlation: bytes | None) -> None:
        self.node.publish(self.node.topic("warble", "results", job_id), payload, qos=1)
        if reply_to and self.reply_topics.allows(reply_to):
            extra = {"correlation_data": correlation} if correlation is not None else {}
            self.node.publish(reply_to, payload, qos=1, **extra)

    # ------------------------------------------------------------ history on MQTT

    def _on_history_request(self, message: Message) -> None:
        request = message.json()
        if not isinstance(request, dict) or not isinstance(request.get("user"), str):
            raise PayloadError(f"{message.topic}: expected {{\"user\": str, \"reply_to\": topic}}")
        reply_to, refused = self._reply_target(message.response_topic or request.get("reply_to"))
        if not reply_to:
            raise PayloadError(f"{message.topic}: {refused or 'no response topic or reply_to'}")
        extra = {"correlation_data": message.correlation_data} if message.correlation_data else {}
        self.node.publish(reply_to, {"user": request["user"], "jobs": self.history(request["user"])},
                          qos=1, **extra)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
