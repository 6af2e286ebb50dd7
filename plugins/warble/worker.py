"""Runs Warble jobs on a worker: sandboxed, several at once, results back to the server.

Jobs arrive on `<prefix>/nodes/<id>/cmd/warble` as `{"id", "user", "source",
"attempt"}`.  The worker answers on `<prefix>/nodes/<id>/reply/warble`, first
`{"id", "node", "attempt", "state": "running"}`, then `{"id", "node",
"attempt", "state": "done", "result": {...}}` (status, output, error with
line/column, steps, elapsed).

Each job runs through the isolating runner (`pidaemon.warble.Runner`) in a
thread, so the event loop never waits for a program; a program that embeds
the daemon may lend one runner to many workers (`Daemon(lend=[runner])`, as
the simulator does).  The program's built-ins
come from every plugin's `pidaemon_warble_builtins`; this plugin contributes
LIGHTS and PLAYSOUND, which become MQTT commands (`<prefix>/lights/set`,
`<prefix>/sound/play`) for the lamp and the speaker.  SAVE and LOAD go to the
server's per-user store over MQTT (`nodes/<id>/reply/warble_store` in
docs/protocol.md), with the job and its attempt: the server refuses them from
an attempt that no longer holds the job, and keeps a run's SAVEs pending
until its result commits them.

Fencing on this side: a run stops acting on the world (LIGHTS, PLAYSOUND and
plugin effects end the program with an error instead) once it may have lost
its job: when the server revokes it (`<prefix>/nodes/<id>/cmd/warble_revoke`,
`{"id", "attempt"}`), when the worker loses the broker, or when this daemon
was frozen (its event loop did not run for `stall_limit` seconds: stopped,
swapped out), since the server re-queues the jobs of a worker that stops
answering.  A revoked run reports no result.  docs/protocol.md says what is
and is not fenced.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping

from pidaemon import hookimpl
from pidaemon.bus import Message, PayloadError, Subscription
from pidaemon.schema import Field, Integer, Number, Problem, settings
from pidaemon.warble import Limits, Runner, lights_builtin, playsound_builtin
from pidaemon.warble.errors import QuotaExceeded, WarbleError
from pidaemon.warble.values import decode_value, encode_value

from . import hookspecs
from .hookspecs import WarbleHooks

MAX_SOURCE_LENGTH = 10_000  # bytes accepted from the job topic before the runner's own length check
TICK = 0.25                 # seconds between two checks that the event loop is running


@dataclass(eq=False)
class JobRun:
    """One attempt at one job on this worker."""

    id: str
    user: str
    source: str
    attempt: int
    revoked: bool = False   # the server took the job (or a later attempt of it arrived here)
    revoked_logged: bool = field(default=False, repr=False)
    doubted: str | None = None  # why this run may have lost the job without being told (a stall, the broker lost)
    task: asyncio.Task | None = field(default=None, repr=False)

    def lost(self) -> str | None:
        """Why this run must not act any more, or None."""
        if self.revoked:
            return f"job {self.id} was given to another worker (attempt {self.attempt} was revoked)"
        return self.doubted


class RunLost(WarbleError):
    """An effect or store request of a run that no longer holds its job."""


class WarbleLimits(Field):
    """The `limits:` mapping of Warble limits (pidaemon.warble.Limits); each wrong key is its own problem."""

    expected = "a mapping of Warble limits"

    def check(self, value, path, problems):
        if not isinstance(value, Mapping):
            return self.fail(value, path, problems)
        found = Limits.problems_in(value)
        problems.extend(Problem(path + (key,), message) for key, message in found.items())
        return None if found else Limits.from_mapping(value)


class RemoteStore:
    """SAVE/LOAD over MQTT to the server's store, for one job; called from the runner's thread.

    Every LOAD is a round trip to the server, so a run may make at most
    `max_reads` of them (SAVEs are bounded by the Warble limit max_store_writes).
    """

    def __init__(self, plugin: "WarbleWorker", run: JobRun, timeout: float, max_reads: int):
        self.plugin, self.run, self.timeout, self.reads_left = plugin, run, timeout, max_reads

    def get(self, user: str, name: str):
        if self.reads_left <= 0:
            raise QuotaExceeded("LOAD: too many reads in one run")
        self.reads_left -= 1
        answer = self._ask({"op": "load", "user": user, "name": name})
        return None if answer.get("value") is None else decode_value(*answer["value"])

    def set(self, user: str, name: str, value) -> None:
        self._ask({"op": "save", "user": user, "name": name, "value": list(encode_value(value))})

    def _ask(self, request: dict) -> dict:
        if self.run.revoked:  # the server would refuse it: do not ask
            raise RunLost(self.run.lost())
        request = {**request, "job": self.run.id, "attempt": self.run.attempt}
        future = asyncio.run_coroutine_threadsafe(self.plugin.store_request(request, self.timeout), self.plugin.loop)
        try:
            answer = future.result(self.timeout + 1)
        except (asyncio.TimeoutError, TimeoutError):
            future.cancel()
            raise WarbleError(f"the cluster's storage did not answer within {self.timeout:g} s") from None
        if answer.get("error"):
            if answer.get("stale"):  # the server says another attempt holds the job: this run is void
                self.run.revoked = True
                self.plugin.loop.call_soon_threadsafe(self.plugin.revoke, self.run, "the server refused its "
                                                      "SAVE/LOAD: another attempt holds the job")
                raise RunLost(answer["error"])
            if answer.get("quota"):
                raise QuotaExceeded(answer["error"])
            raise WarbleError(answer["error"])
        return answer


@settings
class WarbleWorkerSettings:
    slots: int | None = Integer(min=1, default=None, doc="jobs at once; default: the number of CPU cores")
    store_timeout: float = Number(min=0.1, default=3.0, doc="seconds to wait for SAVE/LOAD from the server")
    max_store_reads: int = Integer(min=1, default=1000, doc="LOADs per run (each asks the server)")
    jobs_per_child: int = Integer(min=1, default=100,
                                  doc="programs one sandbox process runs before it is replaced; "
                                      "1 = a fresh process for every program (several times the CPU per program)")
    stall_limit: float = Number(min=0.05, default=2.0,
                                doc="seconds without the event loop running after which running jobs stop their "
                                    "effects (the server may have given them to another worker); keep it below "
                                    "the registry's missed_pings x ping_interval")
    limits: Limits | None = WarbleLimits(default=None, doc="Warble limits (docs/warble.md), e.g. {time_limit: 10}")


class WarbleWorker:
    config_schema = WarbleWorkerSettings
    hookspecs = hookspecs

    def __init__(self, node, config: WarbleWorkerSettings):
        self.node = node
        self.config = config
        self.slots = config.slots or os.cpu_count() or 1
        self.limits: Limits = config.limits or Limits()
        self.hooks = WarbleHooks(node)
        self.runner: Runner | None = None
        self.owns_runner = False
        self.executor = ThreadPoolExecutor(self.slots, thread_name_prefix=f"warble-{node.id}")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running: dict[str, JobRun] = {}
        self._pending_store: dict[str, asyncio.Future] = {}
        self._job_of_thread = threading.local()  # the run an effect belongs to (one run per executor call)
        self._liveness = threading.Lock()  # last_tick and the runs' doubts, shared with the runner's threads
        self._last_tick = time.monotonic()
        self._busy = asyncio.Event()       # set while jobs run: the liveness ticks run then only
        self.completed = 0
        self.stats = {"revoked": 0, "effects_refused": 0, "stalls": 0}

    # ------------------------------------------------------------ lifecycle

    @hookimpl
    def pidaemon_info(self, node):
        return {"capabilities": ["warble"], "warble_slots": self.slots}

    @hookimpl
    def pidaemon_warble_builtins(self, node):
        return [lights_builtin(self.limits.light_count, self._lights),
                playsound_builtin(self.limits.sounds, self._play)]

    def _lights(self, index: int, r: int, g: int, b: int) -> None:
        self._send_effect("lights/set", {"index": index, "r": r, "g": g, "b": b})

    def _play(self, name: str) -> None:
        self._send_effect("sound/play", {"name": name})

    def _send_effect(self, topic: str, payload: dict) -> None:
        """Called in the runner's thread as the program runs: publish on the event loop, in order.

        Refused (the program stops with an error) once the run may have lost its job.
        """
        run: JobRun = self._job_of_thread.run
        lost = self._check_alive(run)
        if lost:
            self.stats["effects_refused"] += 1
            raise RunLost(f"{topic.replace('/', ' ')} refused: {lost}")
        payload = {**payload, "job": run.id, "attempt": run.attempt, "user": run.user, "node": self.node.id}
        self.loop.call_soon_threadsafe(self.node.publish, self.node.topic(*topic.split("/")), payload, 1)

    def _check_alive(self, run: JobRun) -> str | None:
        """Why `run` must not act (revoked, or this daemon stalled or lost the broker), or None.

        Runs in the runner's threads: a thread that wakes before the event
        loop after this process was stopped sees the stall itself.
        """
        with self._liveness:
            stalled = time.monotonic() - self._last_tick
            if stalled > self.config.stall_limit and run.doubted is None:
                run.doubted = f"this worker did not run for {stalled:.1f} s (the server may have re-queued the job)"
            return run.lost()

    async def _watch_liveness(self) -> None:
        """Tick while jobs run; a tick that comes late means the daemon did not run: every running job is in doubt.

        Idle, it waits for a job (a thousand simulated workers share one event loop).
        """
        while True:
            if not self.running:
                self._busy.clear()
                await self._busy.wait()
            await asyncio.sleep(TICK)
            with self._liveness:
                now = time.monotonic()
                stalled = now - self._last_tick
                self._last_tick = now
                if stalled > self.config.stall_limit:
                    self.stats["stalls"] += 1
                    self._doubt_all(f"this worker did not run for {stalled:.1f} s "
                                    f"(the server may have re-queued the job)")

    def _doubt_all(self, reason: str) -> None:
        for run in self.running.values():
            if run.doubted is None:
                run.doubted = reason
                self.node.log.warning("job %s (attempt %d): effects stop: %s", run.id, run.attempt, reason)

    @hookimpl
    def pidaemon_disconnected(self, node):
        with self._liveness:
            self._doubt_all("this worker lost the broker (the server may have re-queued the job)")

    @hookimpl
    def pidaemon_telemetry(self, node):
        return {"warble_worker": {"running": len(self.running), "completed": self.completed, **self.stats}}

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topics.command(node.id, "warble")),
                Subscription(node.topics.command(node.id, "warble_revoke")),
                Subscription(node.topics.command(node.id, "warble_store"))]

    @hookimpl
    async def pidaemon_startup(self, node):
        self.loop = asyncio.get_running_loop()
        self._last_tick = time.monotonic()
        node.supervise(self._watch_liveness, name="warble-liveness")
        shared = node.lookup(Runner, default=None)  # lent by the simulator to all its workers
        if shared is not None:
            self.runner, self.owns_runner = shared, False
            return
        self.runner = Runner(self.limits, max_jobs=self.slots, jobs_per_child=self.config.jobs_per_child)
        self.owns_runner = True
        await asyncio.to_thread(self.runner.start)  # the warm zygote: imports once, forks the sandboxes

    @hookimpl
    async def pidaemon_shutdown(self, node):
        for run in self.running.values():
            if run.task is not None:
                run.task.cancel()
        if self.runner is not None and self.owns_runner:
            await asyncio.to_thread(self.runner.close)
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ messages

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        if message.topic == node.topics.command(node.id, "warble_store"):
            answer = message.json()
            future = self._pending_store.pop(str(answer.get("correlation")), None)
            if future is not None and not future.done():
                future.set_result(answer)
            return
        if message.topic == node.topics.command(node.id, "warble_revoke"):
            self._on_revoke(message)
            return
        job = message.json()
        if not isinstance(job, dict) or not isinstance(job.get("id"), str) or not isinstance(job.get("source"), str):
            raise PayloadError(f"{message.topic}: a job is {{\"id\": str, \"user\": str, \"source\": str, "
                               f"\"attempt\": int}}")
        if len(job["source"]) > MAX_SOURCE_LENGTH:
            raise PayloadError(f"{message.topic}: job {job['id']}: source longer than {MAX_SOURCE_LENGTH}")
        attempt = job.get("attempt")
        if not _is_attempt(attempt):
            raise PayloadError(f"{message.topic}: job {job['id']}: no \"attempt\" (a whole number >= 1)")
        current = self.running.get(job["id"])
        if current is not None:
            if current.attempt >= attempt:  # the same job delivered twice (QoS 1), or an older attempt: run it once
                return
            self.revoke(current, f"attempt {attempt} of the same job arrived")
        run = JobRun(job["id"], str(job.get("user") or "anonymous"), job["source"], attempt)
        with self._liveness:
            if not self.running:  # the ticks start again: an idle time is no stall
                self._last_tick = time.monotonic()
            self.running[run.id] = run
        self._busy.set()
        run.task = node.spawn(self._run(run), name=f"warble:{run.id}")

    def _on_revoke(self, message: Message) -> None:
        revoke = message.json()
        if not isinstance(revoke, dict) or not isinstance(revoke.get("id"), str) or not _is_attempt(
                revoke.get("attempt")):
            raise PayloadError(f"{message.topic}: expected {{\"id\": str, \"attempt\": int}}")
        run = self.running.get(revoke["id"])
        if run is not None and run.attempt <= revoke["attempt"]:
            self.revoke(run, "the server took it back")

    def revoke(self, run: JobRun, why: str) -> None:
        """This run no longer holds its job: no more effects, SAVE/LOAD nor result from it."""
        if run.revoked_logged:
            return
        run.revoked = run.revoked_logged = True
        self.stats["revoked"] += 1
        self.node.log.info("job %s (attempt %d) revoked: %s; its effects, SAVEs and result are dropped",
                           run.id, run.attempt, why)

    async def _run(self, run: JobRun) -> None:
        reply = self.node.topics.reply(self.node.id, "warble")
        header = {"id": run.id, "node": self.node.id, "attempt": run.attempt}
        try:
            self.node.publish(reply, {**header, "state": "running"}, qos=1)
            builtins = self.hooks.builtins()
            result = await self.loop.run_in_executor(self.executor, self._run_in_thread, run, builtins)
            payload = None if result is None else result.to_dict()
        except Exception as exc:  # the runner itself failed: report it, keep serving
            self.node.log.error("job %s could not run: %s", run.id, exc)
            payload = {"status": "crashed", "output": [], "error": {"message": f"the worker could not run it: {exc}",
                                                                      "line": None, "column": None},
                       "steps": 0, "elapsed": 0.0}
        finally:
            if self.running.get(run.id) is run:
                del self.running[run.id]
        if run.revoked or payload is None:  # another attempt holds the job: the server would refuse this result
            return
        self.completed += 1
        self.node.publish(reply, {**header, "state": "done", "result": {**payload, "node": self.node.id}}, qos=1)

    def _run_in_thread(self, run: JobRun, builtins: list):
        if run.revoked:  # taken back while it waited for a slot
            return None
        self._job_of_thread.run = run
        try:
            store = RemoteStore(self, run, self.config.store_timeout, self.config.max_store_reads)
            return self.runner.run(run.source, user=run.user, store=store, builtins=builtins, limits=self.limits)
        finally:
            self._job_of_thread.run = None

    async def store_request(self, request: dict, timeout: float) -> dict:
        correlation = uuid.uuid4().hex
        future = self.loop.create_future()
        self._pending_store[correlation] = future
        # On this node's own topic: the server knows the asking worker by it, and answers on its cmd topic.
        self.node.publish(self.node.topics.reply(self.node.id, "warble_store"),
                          {**request, "correlation": correlation}, qos=1)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending_store.pop(correlation, None)


def _is_attempt(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
