"""Runs Warble programs in child processes with hard limits.

    with Runner(Limits()) as runner:
        result = runner.run('PRINT(1)', user="ada", store=store, effects=effects)

An in-process budget cannot stop one huge C-level operation, so the runner
adds a process boundary. A warm zygote process (zygote.py), started once,
forks the sandbox children; the caller's process is never forked (it may be
an asyncio daemon with threads and sockets). A child runs each job under
RLIMIT_AS and RLIMIT_CPU and is killed at the deadline (time_limit +
kill_grace). A child runs up to `jobs_per_child` jobs one after the other,
and is replaced sooner after a job that could leave something behind
(zygote.py says which); `jobs_per_child=1` gives every job a fresh process,
at about 4.7 ms of CPU per small program instead of about 0.5 ms.

The caller's process keeps everything that touches the world: effect
built-ins are validated in the child, sent back as `(name, args)` as the
program reaches them and performed here, in order; SAVE and LOAD are
forwarded here and use the caller's store. The child waits for the answer to
each: the value `perform` or LOAD returned, or an error that the program
raises at the call. Output lines stream back too, so a killed program still
returns what it printed.

Threads: `run` is blocking and thread-safe. Up to `max_jobs` children run at
once (default 1); further calls wait for a free slot. If the zygote dies,
the next `run` starts a new one.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Iterable

from .builtin import Builtin
from .effects import RecordingEffects, lights_builtin, playsound_builtin
from .errors import ErrorInfo, QuotaExceeded, WarbleError
from .limits import Limits
from .program import Program, check_builtins
from .protocol import Channel, ProtocolError, pack_value, unpack_value
from .result import Result
from .store import MemoryStore
from .zygote import EXIT_ABORTED, EXIT_MEMORY, forwarded

log = logging.getLogger(__name__)

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# MPMATH_NOGMPY: the sandbox computes with the same mpmath backend as the caller.
ENV_KEPT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED", "VIRTUAL_ENV", "MPMATH_NOGMPY")


class RunnerError(Exception):
    """The runner itself could not work (e.g. the zygote does not start)."""


class Runner:
    def __init__(self, limits: Limits | None = None, *, max_jobs: int = 1, jobs_per_child: int = 100,
                 start_timeout: float = 60.0):
        if max_jobs < 1 or jobs_per_child < 1:
            raise ValueError("max_jobs and jobs_per_child must be at least 1")
        self.limits = limits or Limits()
        self.max_jobs = max_jobs
        self.jobs_per_child = jobs_per_child
        self.start_timeout = start_timeout
        self._lock = threading.Lock()            # the control socket and zygote (re)starts
        self._slots = threading.BoundedSemaphore(max_jobs)
        self._proc: subprocess.Popen | None = None
        self._job_ids = itertools.count(1)
        self._ctl: socket.socket | None = None
        self._closed = False

    # ---- life cycle ------------------------------------------------------------
    def __enter__(self) -> "Runner":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def zygote_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        with self._lock:
            self._closed = False
            if self._alive():
                return
            self._start_zygote()

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._ctl is not None

    def _start_zygote(self) -> None:
        self._stop_zygote()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # A minimal environment: the daemon's secrets (broker passwords...) stay out of the
        # sandbox. The child unpickles plugin built-ins by reference: it can import what we can.
        env = {k: v for k, v in os.environ.items() if k in ENV_KEPT}
        paths = [PACKAGE_ROOT] + [p or os.getcwd() for p in sys.path if isinstance(p, str)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if os.path.isdir(p)))
        try:
            proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "pidaemon.warble.zygote", str(theirs.fileno()),
                 str(self.jobs_per_child)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                env=env, start_new_session=True, close_fds=True)
        finally:
            theirs.close()
        ours.settimeout(self.start_timeout)
        try:
            hello = json.loads(ours.recv(4096) or b"{}")
        except (OSError, ValueError) as exc:
            proc.kill()
            proc.wait()
            ours.close()
            raise RunnerError(f"the Warble zygote did not start: {exc}") from None
        if "ready" not in hello:
            proc.kill()
            proc.wait()
            ours.close()
            raise RunnerError("the Warble zygote did not start")
        ours.settimeout(10.0)
        self._proc, self._ctl = proc, ours

    def _stop_zygote(self) -> None:
        ctl, proc = self._ctl, self._proc
        self._ctl = self._proc = None
        if ctl is not None:
            try:
                ctl.send(pickle.dumps(("exit",)))
            except OSError:
                pass
            ctl.close()
        if proc is not None:
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stop_zygote()

    # ---- control requests ---------------------------------------------------------
    def _request(self, request: tuple, fds: list[int] = ()) -> dict:
        """One request/reply with the zygote; caller holds the lock."""
        assert self._ctl is not None
        data = pickle.dumps(request)
        if fds:
            socket.send_fds(self._ctl, [data], list(fds))
        else:
            self._ctl.send(data)
        reply = self._ctl.recv(1 << 16)
        if not reply:
            raise ConnectionError("the zygote closed its socket")
        return json.loads(reply)

    def _send_job(self, job_id: int, job: bytes, sock: socket.socket) -> None:
        """Hand a job to the zygote (no reply: a failure shows as EOF on the job socket)."""
        with self._lock:
            if self._closed:
                raise RunnerError("the runner is closed")
            for attempt in (1, 2):
                if not self._alive():
                    self._start_zygote()
                try:
                    socket.send_fds(self._ctl, [pickle.dumps(("run", job_id, job))], [sock.fileno()])
                    return
                except OSError:
                    log.warning("Warble zygote gone; restarting it")
                    self._stop_zygote()
                    if attempt == 2:
                        raise RunnerError("the Warble zygote keeps failing") from None

    def _kill(self, job_id: int) -> None:
        with self._lock:
            if self._alive():
                try:
                    self._request(("kill", job_id))
                except (OSError, ValueError, ConnectionError):
                    # the zygote is gone; its orphaned child still ends at its CPU limit
                    self._stop_zygote()

    def _status(self, job_id: int) -> int | None:
        with self._lock:
            if not self._alive():
                return None
            try:
                return self._request(("status", job_id)).get("status")
            except (OSError, ValueError, ConnectionError):
                self._stop_zygote()
                return None

    # ---- running -------------------------------------------------------------------
    def run(self, source_or_program: str | Program, *, user: str = "anonymous", store=None,
            effects=None, builtins: Iterable[Builtin] = (), limits: Limits | None = None,
            seed: int | None = None) -> Result:
        """Run in a sandboxed child; returns a Result, never raises for what the program does.

        Raises ValueError for a misconfigured built-in and RunnerError when no
        child can be started at all.
        """
        if isinstance(source_or_program, Program):
            source = source_or_program.source
            extra_list = list(source_or_program.builtins)
            names = {b.name for b in builtins}
            extra_list = [b for b in extra_list if b.name not in names] + list(builtins)
        else:
            source = source_or_program
            extra_list = list(builtins)
        limits = limits or self.limits
        extras = check_builtins(extra_list)
        if effects is None:
            effects = RecordingEffects()
        if store is None:
            store = MemoryStore(limits.max_saved_keys, limits.max_saved_value_length)
        env = dict(extras)
        env.setdefault("LIGHTS", lights_builtin(limits.light_count, effects.lights))
        env.setdefault("PLAYSOUND", playsound_builtin(limits.sounds, effects.play))
        sent = [dataclasses.replace(b, perform=forwarded) if b.effect else b for b in extras.values()]
        job = {"source": source, "limits": limits, "user": user, "builtins": sent, "seed": seed}
        try:
            job_bytes = pickle.dumps(job)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"a built-in cannot be sent to the sandbox (use module-level functions "
                             f"or picklable objects for validate/perform): {exc}") from None
        with self._slots:
            return self._run_job(job_bytes, env, store, user, limits)

    def _run_job(self, job: bytes, env: dict, store, user: str, limits: Limits) -> Result:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        started = time.monotonic()
        job_id = next(self._job_ids)
        try:
            try:
                self._send_job(job_id, job, theirs)
            finally:
                theirs.close()
            served = _ChildJob(Channel(ours), env, store, user, limits, started)
            served.serve()
            return self._result(job_id, served, time.monotonic() - started)
        finally:
            ours.close()

    def _result(self, job_id: int, served: _ChildJob, elapsed: float) -> Result:
        """The job's Result: the child's own, or why the runner stopped it, or how the child ended."""
        if served.done is not None:
            try:
                result = Result.from_dict(served.done)
            except (KeyError, TypeError, ValueError):
                result = Result("crashed", [], ErrorInfo("the sandbox sent a bad result"))
            result.output = served.output
            result.elapsed = elapsed
            return result
        if served.stop is not None:
            self._kill(job_id)
            self._status(job_id)      # reap it
            status, message = served.stop
            return Result(status, served.output, ErrorInfo(message), 0, elapsed)
        # the child ended without a result: find out how
        return _ended(self._status(job_id), served.limits, served.output, elapsed)


class _Stop(Exception):
    """The runner ends the child: (status, message) of the job's Result."""


class _ChildJob:
    """One job as the runner sees it: the child's messages until its result, and what they ask for.

    Output lines are kept and counted against the output limits. Effects are
    performed with the caller's built-ins, SAVE and LOAD use the caller's
    store, and each is answered (a value or an error for the program), while
    the child waits.
    """

    def __init__(self, channel: Channel, env: dict[str, Builtin], store, user: str, limits: Limits,
                 started: float):
        self.channel, self.env, self.store, self.user, self.limits = channel, env, store, user, limits
        self.deadline = started + limits.time_limit + limits.kill_grace
        self.output: list[str] = []
        self.out_chars = 0
        self.done: dict | None = None               # the child's result
        self.stop: tuple[str, str] | None = None    # (status, message) when the runner ends the child
        # poll(), not select(): that fails on descriptors past 1023, and a process that
        # hosts a thousand simulated workers has that many sockets
        self.poller = select.poll()
        self.poller.register(channel.sock, select.POLLIN | select.POLLHUP | select.POLLERR)

    def serve(self) -> None:
        """Handle messages until the child's result, its end (EOF), or a reason to stop it."""
        try:
            while self.done is None:
                message = self._next_message()
                if message is None:
                    return
                handler = self.HANDLERS.get(message.get("t"))
                if handler is None:
                    raise ProtocolError(f"unknown message {message.get('t')!r}")
                handler(self, message)
        except _Stop as stop:
            self.stop = stop.args
        except (ProtocolError, KeyError, TypeError, ValueError) as exc:
            log.warning("Warble child sent a bad message: %s", exc)
            self.stop = ("crashed", "the sandbox sent a bad message")
        except OSError:
            pass                      # the child is gone: how it ended tells the rest

    def _next_message(self) -> dict | None:
        """The next message; None once the child closed its socket."""
        while True:
            message = self.channel.pop_message()
            if message is not None:
                return message
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise _Stop("timeout", f"time limit of {self.limits.time_limit:g} s reached (stopped)")
            if self.poller.poll(left * 1000) and not self.channel.feed():
                return None

    def _answer(self, work: Callable[[], dict], failure: str) -> None:
        """Send the child work()'s reply, or its error: a WarbleError's message, else `failure`."""
        try:
            reply = work()
        except WarbleError as exc:
            reply = {"e": exc.message, "q": isinstance(exc, QuotaExceeded)}
        except Exception:  # noqa: BLE001 - a failing device or store must not take the runner down
            log.exception("Warble: %s", failure)
            reply = {"e": failure}
        self.channel.send(reply)

    def on_output(self, message: dict) -> None:
        if not isinstance(message["l"], list):
            raise ProtocolError("bad output")
        lines = [str(line) for line in message["l"]]
        self.out_chars += sum(len(line) + 1 for line in lines)
        if (self.out_chars > self.limits.max_output_chars
                or len(self.output) + len(lines) > self.limits.max_output_lines):
            raise _Stop("output_limit", "output limit reached")
        self.output.extend(lines)

    def on_effect(self, message: dict) -> None:
        name = str(message["n"])
        builtin = self.env.get(name)
        if builtin is None or not builtin.effect:
            raise ProtocolError(f"unknown effect {name!r}")
        args = tuple(unpack_value(a) for a in message["a"])

        def perform() -> dict:
            value = builtin.perform(tuple(builtin.validate(args)))
            try:
                return {"v": None if value is None else pack_value(value)}
            except ProtocolError:
                raise WarbleError(f"{name} returned a value Warble cannot use") from None

        self._answer(perform, f"{name} could not be performed")

    def on_load(self, message: dict) -> None:
        name = str(message["k"])

        def load() -> dict:
            value = self.store.get(self.user, name)
            return {"v": None if value is None else pack_value(value)}

        self._answer(load, "LOAD: storage is not available")

    def on_save(self, message: dict) -> None:
        name, value = str(message["k"]), unpack_value(message["v"])

        def save() -> dict:
            self.store.set(self.user, name, value)
            return {"ok": True}

        self._answer(save, "SAVE: storage is not available")

    def on_done(self, message: dict) -> None:
        self.done = message["r"]

    HANDLERS = {"out": on_output, "fx": on_effect, "get": on_load, "set": on_save, "done": on_done}


def _ended(status: int | None, limits: Limits, output: list[str], elapsed: float) -> Result:
    """A Result for a child that ended without reporting one."""
    if status is not None and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return Result("timeout", output, ErrorInfo("CPU time limit reached"), 0, elapsed)
        if sig == signal.SIGKILL:   # not by us: the kernel's OOM killer
            return Result("memory_limit", output, ErrorInfo("the program was killed (out of memory)"),
                          0, elapsed)
        return Result("crashed", output, ErrorInfo(f"the sandbox crashed (signal {sig})"), 0, elapsed)
    if status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) in (EXIT_MEMORY, EXIT_ABORTED):
        return Result("memory_limit", output, ErrorInfo("out of memory"), 0, elapsed)
    return Result("crashed", output, ErrorInfo("the sandbox ended without a result"), 0, elapsed)
