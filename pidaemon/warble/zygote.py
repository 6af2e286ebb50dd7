"""The warm "zygote" process of the runner, and its sandbox children.

The runner starts this module once (`python -m pidaemon.warble.zygote FD
JOBS_PER_CHILD`). It imports Warble, warms it up, freezes its heap
for cheap copy-on-write and then waits on its control socket (FD,
SOCK_SEQPACKET) for requests:

    ("run", job_id, job_bytes) + a stream socket    give the job to a child (no reply)
    ("kill", job_id)      -> {"ok": true}            SIGKILL the job's child if it still runs it
    ("status", job_id)    -> {"status": n | null}    the wait status of the child that died on it
    ("exit",)                                        stop (also on EOF)

"run" has no reply so that a job costs the runner a single wake-up: if the
zygote cannot start a child, it closes the job socket and the runner sees
EOF. The zygote never runs user code (nor unpickles a job: only a child does).

Children are forked in advance and warmed up, so neither fork nor
copy-on-write faults sit on a job's path. A child runs up to JOBS_PER_CHILD
jobs, one at a time, then exits: a fresh child costs about 4.7 ms of CPU
(fork, warm-up, page faults) against about 0.5 ms for a small program in a
warm one, so reusing children is what lets a Pi run hundreds a second. A child is replaced at once after a job
that did not end with a result (killed, crashed), after one that ran out of
memory, after one that used SETPRECISION (mpmath keeps process-wide caches
of constants, and a later job could time them), and when, after collecting
its garbage and trimming its heap, it is still RETIRE_GROWTH_MB bigger than
when it was fresh. Nothing else of a run stays reachable: precision, random
numbers, variables and budgets belong to the run. JOBS_PER_CHILD = 1 gives
every job a fresh process.

A child closes the control socket at once. When a job arrives it sets its
limits for that job (RLIMIT_AS: its size when fresh + memory_mb, so a reused
child never gives more than a fresh one; RLIMIT_CPU: the CPU it has used +
time_limit; no file writes, no core, no forks, few descriptors), compiles
and runs the program and talks only to the runner, over the job socket (see
protocol.py): output lines, effects, SAVE/LOAD round trips and a final
"done". A child that goes on then lifts the job's limits and, just before
"done", tells the zygote on its own socket that it is free, so the runner's
next job always finds it free. A child the zygote kills is forgotten at once: a "free" it sent just
before is never read.
"""
from __future__ import annotations

import ctypes
import gc
import json
import math
import os
import pickle
import resource
import select
import signal
import socket
import sys
import time
from collections import OrderedDict

from .builtin import Builtin
from .errors import MemoryLimitExceeded, QuotaExceeded, WarbleError
from .limits import Limits
from .program import compile_program, execute
from .protocol import Channel, ProtocolError, decode_value, encode_value
from .result import Result
from .runtime import Run

EXIT_MEMORY = 3
EXIT_CRASH = 4
MB = 1024 * 1024
RETIRE_GROWTH_MB = 8       # a child still this much bigger than when fresh, after a job, is replaced
FREE = b"free"             # child -> zygote: ready for the next job


def forwarded(args: tuple):
    """perform() of an effect built-in inside the child: never called, the runner performs it."""
    raise RuntimeError("effect built-ins are performed by the runner")


class ChildRun(Run):
    """A run whose output, effects and storage go to the runner over the channel.

    Each output line is sent as it is printed, so a program killed in the
    middle of a long operation still returns what it printed before.
    """

    def __init__(self, channel: Channel, **kwargs):
        super().__init__(**kwargs)
        self.channel = channel

    def sink_line(self, line: str) -> None:
        self.channel.send({"t": "out", "l": [line]})

    def do_effect(self, builtin: Builtin, args: tuple):
        self.channel.send({"t": "fx", "n": builtin.name, "a": [encode_value(a, self.digits) for a in args]})

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def _request(self, message: dict) -> dict:
        self.channel.send(message)
        reply = self.channel.receive()
        if "e" in reply:
            cls = QuotaExceeded if reply.get("q") else WarbleError
            raise cls(str(reply["e"]))
        return reply

    def store_get(self, name: str):
        reply = self._request({"t": "get", "k": name})
        value = reply.get("v")
        return None if value is None else decode_value(value)

    def store_set(self, name: str, value) -> None:
        self._request({"t": "set", "k": name, "v": encode_value(value, self.digits)})


try:
    _malloc_trim = ctypes.CDLL(None).malloc_trim   # glibc; elsewhere jobs just retire sooner
except (OSError, AttributeError):
    _malloc_trim = None


def _vm_size() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 512 * MB


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _set_limit(which: int, soft: int, hard: int | None) -> None:
    """Set the soft limit; the hard one too when given (it can never be raised again)."""
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        soft = min(soft, current_hard)
        hard = None if hard is None else min(hard, current_hard)
    resource.setrlimit(which, (soft, current_hard if hard is None else hard))


def _limit_resources(limits: Limits, base_size: int, last_job: bool) -> None:
    """This job's limits: memory counted from the fresh child's size, CPU from what it has used.

    A child that will run more jobs keeps its hard limits for memory and CPU
    where they were, so that the next job can have its own allowance; on its
    last job they become final.
    """
    memory = base_size + limits.memory_mb * MB
    _set_limit(resource.RLIMIT_AS, memory, memory if last_job else None)
    cpu = int(math.ceil(_cpu_seconds() + limits.time_limit)) + 1
    _set_limit(resource.RLIMIT_CPU, cpu, cpu + 1 if last_job else None)
    for name, value in (("RLIMIT_CORE", 0), ("RLIMIT_FSIZE", 0), ("RLIMIT_NPROC", 0), ("RLIMIT_NOFILE", 16)):
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError, AttributeError):
            pass


def _trim_heap() -> None:
    """Give the memory a job freed back to the system (glibc keeps it mapped otherwise)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _lift_job_limits() -> None:
    """Between jobs no program runs: memory and CPU go back to the hard limits until the next job."""
    for which in (resource.RLIMIT_AS, resource.RLIMIT_CPU):
        _, hard = resource.getrlimit(which)
        resource.setrlimit(which, (hard, hard))


def child_main(sock: socket.socket, devnull: int, jobs_per_child: int) -> None:
    """A sandbox child: warm up, then run up to `jobs_per_child` jobs, one at a time. Never returns."""
    code = EXIT_CRASH
    try:
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        gc.disable()
        _warm_up()
        start_size = _vm_size()
        for served in range(1, jobs_per_child + 1):
            data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 22, 1)
            if not data or len(fds) != 1:
                code = 0                  # the zygote retired this child, or is gone
                break
            last_job = served == jobs_per_child
            with socket.socket(fileno=fds[0]) as job_sock:
                channel = Channel(job_sock)
                try:
                    result, used_precision = run_job(channel, pickle.loads(data), start_size, last_job)
                except MemoryError:
                    code = EXIT_MEMORY
                    err = MemoryLimitExceeded("out of memory")
                    channel.send({"t": "done", "r": Result("memory_limit", [], err.info()).to_dict()})
                    break
                go_on = not last_job and result["status"] != "memory_limit" and not used_precision
                if go_on:
                    _lift_job_limits()    # the job is over: tidying up and waiting must not fail under its limits
                    gc.collect()          # only what this child made: the zygote's heap is frozen
                    _trim_heap()
                    go_on = _vm_size() - start_size < RETIRE_GROWTH_MB * MB
                if go_on:
                    try:
                        sock.send(FREE)   # before "done": the runner's next job will find us free
                    except OSError:       # the zygote is gone: still deliver this result, then end
                        go_on = False
                try:
                    channel.send({"t": "done", "r": result})
                except OSError:           # the runner gave up on this job; the next one is fine
                    if not go_on:
                        raise
            if not go_on:
                code = 0
                break
    finally:
        os._exit(code)


def run_job(channel: Channel, job: dict, base_size: int, last_job: bool) -> tuple[dict, bool]:
    """Compile and run one job under its limits: (the result as a dict, whether it used SETPRECISION)."""
    limits: Limits = job["limits"]
    _limit_resources(limits, base_size, last_job)
    builtins: list[Builtin] = job["builtins"]
    try:
        program = compile_program(job["source"], limits=limits, builtins=builtins)
    except WarbleError as exc:
        return Result("error", [], exc.info(), 0, 0.0).to_dict(), False
    rt = ChildRun(channel, limits=limits, user=job["user"], store=None, effects=None,
                  extras=program.environment_builtins(_NoEffects, limits), seed=job.get("seed"),
                  decimal_texts=program.compiled.decimal_texts)
    return execute(program, rt).to_dict(), rt.ctx is not None


class _NoEffects:
    """Placeholder callbacks for the default effect built-ins in the child."""

    @staticmethod
    def lights(*args):
        raise RuntimeError("performed by the runner")

    play = lights


def _warm_up() -> None:
    """Compile and run a little of everything so that children start hot."""
    program = compile_program('x=1.5;s="a"+x;FOR(i=0;i<3;i++){x=x*i+SQRT(4)};IF(x>1){PRINT(s,x^2)}')
    program.run()
    a, b = socket.socketpair()
    Channel(a).send({"t": "out", "l": ["x"]})
    Channel(b).receive()
    a.close()
    b.close()
    Result("ok").to_dict()


class _Child:
    """The zygote's view of one child: its socket, and the job it runs (None when free)."""

    __slots__ = ("pid", "sock", "job")

    def __init__(self, pid: int, sock: socket.socket):
        self.pid, self.sock, self.job = pid, sock, None


def serve(ctl: socket.socket, jobs_per_child: int) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    statuses: "OrderedDict[int, int]" = OrderedDict()   # pid -> wait status, for "status"
    live: set[int] = set()                               # pids not yet reaped
    children: dict[int, _Child] = {}                     # socket fd -> child we still talk to
    idle: list[_Child] = []                              # free children, the most recent last
    busy: dict[object, _Child] = {}                      # job id -> the child running it
    ended: "OrderedDict[object, int]" = OrderedDict()    # job id -> pid of the child that ended on it
    poller = select.poll()  # not select(): descriptors may be past 1023
    events = select.POLLIN | select.POLLHUP | select.POLLERR
    poller.register(ctl, events)

    def reap() -> None:
        while live:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                live.clear()
                return
            if pid == 0:
                return
            live.discard(pid)
            statuses[pid] = status
            while len(statuses) > 1000:
                statuses.popitem(last=False)

    def reply(obj: dict) -> None:
        ctl.send(json.dumps(obj).encode())

    def fork_child() -> _Child:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            try:
                ctl.close()
                ours.close()
                for sibling in children.values():   # or a sibling would never see its socket close
                    sibling.sock.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                child_main(theirs, devnull, jobs_per_child)
            finally:
                os._exit(EXIT_CRASH)
        theirs.close()
        live.add(pid)
        child = _Child(pid, ours)
        children[ours.fileno()] = child
        poller.register(ours, events)
        return child

    def drop(child: _Child) -> None:
        """Stop talking to a child: it ended, is being killed, or (closing its socket) retires.

        Whatever it sends afterwards, a "free" included, is never read; the job
        it held is remembered for a "status" request until its pid is reaped.
        """
        fd = child.sock.fileno()
        if children.pop(fd, None) is not None:
            poller.unregister(fd)
        child.sock.close()
        if child in idle:
            idle.remove(child)
        if child.job is not None:
            busy.pop(child.job, None)
            ended[child.job] = child.pid
            while len(ended) > 1000:
                ended.popitem(last=False)
            child.job = None

    def on_child_message(child: _Child) -> None:
        try:
            data = child.sock.recv(16)
        except OSError:
            data = b""
        if not data:
            drop(child)               # it ended
        elif data == FREE and child.job is not None:
            busy.pop(child.job, None)
            child.job = None
            idle.append(child)    # "free" comes before "done": the pool stays at the runner's max_jobs + 1

    def hand_over(job_id: object, job: bytes, fd: int) -> None:
        for _attempt in (1, 2):
            child = idle.pop() if idle else fork_child()
            try:
                socket.send_fds(child.sock, [job], [fd])
            except OSError:
                try:
                    os.kill(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                drop(child)
                continue
            child.job = job_id
            busy[job_id] = child
            return
        raise OSError("no child could take the job")

    def wait_for_end(pid: int) -> int | None:
        """The wait status of a child that is ending (SIGKILL after 2 s if it does not)."""
        deadline = time.monotonic() + 2.0
        while pid in live and time.monotonic() < deadline:
            reap()
            if pid in live:
                time.sleep(0.001)
        if pid in live:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            live.discard(pid)
            statuses[pid] = status
        return statuses.pop(pid, None)

    idle.append(fork_child())
    while True:
        reap()
        if not idle:
            idle.append(fork_child())     # one child always ready and warm
        ready = poller.poll(500)
        # children first: a child's "free" was sent before the result that led to the next "run"
        for fd, _ in ready:
            if fd in children:
                on_child_message(children[fd])
        if not any(fd == ctl.fileno() for fd, _ in ready):
            continue
        try:
            data, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 22, 4)
        except OSError:
            break
        if not data:
            break
        try:
            request = pickle.loads(data)
            op = request[0]
        except Exception:  # noqa: BLE001
            for fd in fds:
                os.close(fd)
            reply({"error": "bad request"})
            continue
        if op == "run":
            for fd in fds[1:]:
                os.close(fd)
            if fds:
                try:
                    hand_over(request[1], request[2], fds[0])
                except OSError:
                    pass            # closing the socket tells the runner
                finally:
                    os.close(fds[0])
        elif op == "kill":
            child = busy.get(request[1])
            if child is not None:   # still on this job: a job it finished ("free") is never killed
                try:
                    os.kill(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                drop(child)
            reply({"ok": True})
        elif op == "status":
            child = busy.get(request[1])
            if child is not None:   # it closed the job socket but its end is not read yet
                drop(child)
            pid = ended.pop(request[1], None)
            reply({"status": None if pid is None else wait_for_end(pid)})
        elif op == "exit":
            break
        else:
            reply({"error": f"unknown request {op!r}"})
    for pid in list(live):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ctl = socket.socket(fileno=int(argv[0]))
    jobs_per_child = int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _warm_up()
    gc.collect()
    gc.freeze()
    ctl.send(json.dumps({"ready": os.getpid()}).encode())
    try:
        serve(ctl, jobs_per_child)
    except ProtocolError:
        pass


if __name__ == "__main__":
    main()
