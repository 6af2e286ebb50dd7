"""Runs Warble jobs on a worker: sandboxed, several at once, results back to the server.

Jobs arrive on `<prefix>/nodes/<id>/cmd/warble` as `{"id", "user", "source"}`.
The worker answers on `<prefix>/nodes/<id>/reply/warble`, first
`{"id", "node", "state": "running"}`, then `{"id", "node", "state": "done",
"result": {...}}` (status, output, error with line/column, steps, elapsed).

Each job runs through the isolating runner (`pidaemon.warble.Runner`) in a
thread, so the event loop never waits for a program; a program that embeds
the daemon may lend one runner to many workers (`Daemon(lend=[runner])`, as
the simulator does).  The program's built-ins
come from every plugin's `pidaemon_warble_builtins`; this plugin contributes
LIGHTS and PLAYSOUND, which become MQTT commands (`<prefix>/lights/set`,
`<prefix>/sound/play`) for the lamp and the speaker.  SAVE and LOAD go to the
server's per-user store over MQTT (`warble/store` in docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pidaemon import hookimpl
from pidaemon.bus import Message, PayloadError, Subscription
from pidaemon.schema import Checked, Integer, Number, settings
from pidaemon.warble import Limits, Runner, lights_builtin, playsound_builtin
from pidaemon.warble.errors import QuotaExceeded, WarbleError
from pidaemon.warble.values import decode_value, encode_value

from . import hookspecs
from .hookspecs import WarbleHooks

MAX_SOURCE_LENGTH = 10_000  # bytes accepted from the job topic before the runner's own length check


def limits_from_config(value: Any) -> Limits:
    return Limits.from_mapping(value or {})


class RemoteStore:
    """SAVE/LOAD over MQTT to the server's store, for one job; called from the runner's thread.

    Every LOAD is a round trip to the server, so a run may make at most
    `max_reads` of them (SAVEs are bounded by the Warble limit max_store_writes).
    """

    def __init__(self, plugin: "WarbleWorker", timeout: float, max_reads: int):
        self.plugin, self.timeout, self.reads_left = plugin, timeout, max_reads

    def get(self, user: str, name: str):
        if self.reads_left <= 0:
            raise QuotaExceeded("LOAD: too many reads in one run")
        self.reads_left -= 1
        answer = self._ask({"op": "load", "user": user, "name": name})
        return None if answer.get("value") is None else decode_value(*answer["value"])

    def set(self, user: str, name: str, value) -> None:
        self._ask({"op": "save", "user": user, "name": name, "value": list(encode_value(value))})

    def _ask(self, request: dict) -> dict:
        future = asyncio.run_coroutine_threadsafe(self.plugin.store_request(request, self.timeout), self.plugin.loop)
        try:
            answer = future.result(self.timeout + 1)
        except (asyncio.TimeoutError, TimeoutError):
            future.cancel()
            raise WarbleError(f"the cluster's storage did not answer within {self.timeout:g} s") from None
        if answer.get("error"):
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
    limits: Limits | None = Checked(limits_from_config, default=None, expected="a mapping of Warble limits")


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
        self.running: dict[str, asyncio.Task] = {}
        self._pending_store: dict[str, asyncio.Future] = {}
        self._job_of_thread = threading.local()  # the job an effect belongs to (one job per executor call)
        self.completed = 0

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
        """Called in the runner's thread as the program runs: publish on the event loop, in order."""
        job = self._job_of_thread.job
        payload = {**payload, "job": job["id"], "user": job["user"], "node": self.node.id}
        self.loop.call_soon_threadsafe(self.node.publish, self.node.topic(*topic.split("/")), payload, 1)

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topics.command(node.id, "warble")),
                Subscription(node.topics.reply(node.id, "warble_store"))]

    @hookimpl
    async def pidaemon_startup(self, node):
        self.loop = asyncio.get_running_loop()
        shared = node.lookup(Runner, default=None)  # lent by the simulator to all its workers
        if shared is not None:
            self.runner, self.owns_runner = shared, False
            return
        self.runner = Runner(self.limits, max_jobs=self.slots, jobs_per_child=self.config.jobs_per_child)
        self.owns_runner = True
        await asyncio.to_thread(self.runner.start)  # the warm zygote: imports once, forks the sandboxes

    @hookimpl
    async def pidaemon_shutdown(self, node):
        for task in self.running.values():
            task.cancel()
        if self.runner is not None and self.owns_runner:
            await asyncio.to_thread(self.runner.close)
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ messages

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        if message.topic == node.topics.reply(node.id, "warble_store"):
            answer = message.json()
            future = self._pending_store.pop(str(answer.get("correlation")), None)
            if future is not None and not future.done():
                future.set_result(answer)
            return
        job = message.json()
        if not isinstance(job, dict) or not isinstance(job.get("id"), str) or not isinstance(job.get("source"), str):
            raise PayloadError(f"{message.topic}: a job is {{\"id\": str, \"user\": str, \"source\": str}}")
        if len(job["source"]) > MAX_SOURCE_LENGTH:
            raise PayloadError(f"{message.topic}: job {job['id']}: source longer than {MAX_SOURCE_LENGTH}")
        job.setdefault("user", "anonymous")
        if job["id"] in self.running:  # the same job delivered twice (QoS 1): run it once
            return
        self.running[job["id"]] = node.spawn(self._run(job), name=f"warble:{job['id']}")

    async def _run(self, job: dict) -> None:
        reply = self.node.topics.reply(self.node.id, "warble")
        try:
            self.node.publish(reply, {"id": job["id"], "node": self.node.id, "state": "running"}, qos=1)
            builtins = self.hooks.builtins()
            result = await self.loop.run_in_executor(self.executor, self._run_in_thread, job, builtins)
            payload = result.to_dict()
        except Exception as exc:  # the runner itself failed: report it, keep serving
            self.node.log.error("job %s could not run: %s", job["id"], exc)
            payload = {"status": "crashed", "output": [], "error": {"message": f"the worker could not run it: {exc}",
                                                                      "line": None, "column": None},
                       "steps": 0, "elapsed": 0.0}
        finally:
            self.running.pop(job["id"], None)
        self.completed += 1
        self.node.publish(reply, {"id": job["id"], "node": self.node.id, "state": "done",
                                  "result": {**payload, "node": self.node.id}}, qos=1)

    def _run_in_thread(self, job: dict, builtins: list):
        self._job_of_thread.job = job
        try:
            store = RemoteStore(self, self.config.store_timeout, self.config.max_store_reads)
            return self.runner.run(job["source"], user=job["user"], store=store, builtins=builtins)
        finally:
            self._job_of_thread.job = None

    async def store_request(self, request: dict, timeout: float) -> dict:
        correlation = uuid.uuid4().hex
        future = self.loop.create_future()
        self._pending_store[correlation] = future
        self.node.publish(self.node.topic("warble", "store"), {
            **request, "correlation": correlation,
            "reply_to": self.node.topics.reply(self.node.id, "warble_store")}, qos=1)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending_store.pop(correlation, None)
