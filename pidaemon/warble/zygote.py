"""The warm "zygote" process of the runner, and its sandbox children.

The runner starts this module once (`python -m pidaemon.warble.zygote FD
JOBS_PER_CHILD`). It imports Warble and mpmath (with gmpy2 and GMP where
installed), warms up, freezes its heap for cheap copy-on-write and then
waits on its control socket (FD, SOCK_SEQPACKET) for requests:

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
protocol.py): output lines, round trips for effects and SAVE/LOAD (it waits
for each answer) and a final "done". A child that goes on then lifts the
job's limits and, just before "done", tells the zygote on its own socket that
it is free, so the runner's next job always finds it free. A child the zygote
kills is forgotten at once: a "free" it sent just before is never read.

The zygote itself (class Zygote) sleeps in poll() until the runner, a child
or a child's end (SIGCHLD, through a wakeup pipe) needs it.
"""
from __future__ import annotations

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
from .precision import load_mpmath
from .program import compile_program, execute
from .protocol import Channel, ProtocolError, pack_value, unpack_value
from .result import Result
from .runtime import Run

EXIT_MEMORY = 3
EXIT_CRASH = 4
EXIT_ABORTED = int(signal.SIGABRT)   # abort() after SETPRECISION: GMP ran out of memory (see below)
MB = 1024 * 1024
RETIRE_GROWTH_MB = 8       # a child still this much bigger than when fresh, after a job, is replaced
FREE = b"free"             # child -> zygote: ready for the next job
EVENTS = select.POLLIN | select.POLLHUP | select.POLLERR


def forwarded(args: tuple):
    """perform() of an effect built-in inside the child: never called, the runner performs it."""
    raise RuntimeError("effect built-ins are performed by the runner")


class ChildRun(Run):
    """A run whose output, effects and storage go to the runner over the channel.

    Each output line is sent as it is printed, so a program killed in the
    middle of a long operation still returns what it printed before. An
    effect, a SAVE or a LOAD waits for the runner's answer: a value, or an
    error that the program raises where it made the call.
    """

    def __init__(self, channel: Channel, **kwargs):
        super().__init__(**kwargs)
        self.channel = channel

    def sink_line(self, line: str) -> None:
        self.channel.send({"t": "out", "l": [line]})

    def do_effect(self, builtin: Builtin, args: tuple):
        return self._request({"t": "fx", "n": builtin.name, "a": [pack_value(a, self.digits) for a in args]})

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def b_SETPRECISION(self, n):
        _abort_is_out_of_memory()
        return super().b_SETPRECISION(n)

    def _request(self, message: dict):
        """Send a request and wait for the runner's answer: its value (None if none), or its error raised."""
        self.channel.send(message)
        reply = self.channel.receive()
        if "e" in reply:
            cls = QuotaExceeded if reply.get("q") else WarbleError
            raise cls(str(reply["e"]))
        value = reply.get("v")
        return None if value is None else unpack_value(value)

    def store_get(self, name: str):
        return self._request({"t": "get", "k": name})

    def store_set(self, name: str, value) -> None:
        self._request({"t": "set", "k": name, "v": pack_value(value, self.digits)})


_libc = None               # the C library, loaded by the zygote (main) before it forks


def _load_libc():
    import ctypes   # only the zygote needs it, not the runner's process
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def _abort_is_out_of_memory() -> None:
    """From here on, abort() ends this child with EXIT_ABORTED instead of the signal SIGABRT.

    With gmpy2 installed mpmath computes with GMP, and GMP calls abort() when
    an allocation fails: under RLIMIT_AS that is the program running out of
    memory, where Python would raise MemoryError. The handler is the C
    library's _exit (no Python runs in the signal handler); `_exit(SIGABRT)`
    exits with status EXIT_ABORTED. Only after SETPRECISION (GMP is used for
    nothing else), and a child is replaced after such a job.
    """
    if _libc is None:
        return
    import ctypes
    try:
        _libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
        _libc.signal.restype = ctypes.c_void_p
        _libc.signal(signal.SIGABRT, ctypes.cast(_libc._exit, ctypes.c_void_p))
    except AttributeError:
        pass


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
    trim = getattr(_libc, "malloc_trim", None)   # glibc; elsewhere jobs just retire sooner
    if trim is not None:
        trim(0)


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


def _remember(memory: OrderedDict, key, value, most: int = 1000) -> None:
    """Keep key -> value, forgetting the oldest beyond `most`."""
    memory[key] = value
    while len(memory) > most:
        memory.popitem(last=False)


def _on_sigchld(signum, frame) -> None:
    """Nothing to do here: the byte Python writes to the wakeup pipe wakes the zygote's poll()."""


class Zygote:
    """Forks the children, hands them jobs and answers the runner's requests.

    It sleeps in poll() until one of these is readable: the control socket
    (a request), a child's socket ("free", or EOF when it ends) and a wakeup
    pipe that SIGCHLD writes to (a child to reap). poll(), not select():
    descriptors may be past 1023.
    """

    def __init__(self, ctl: socket.socket, jobs_per_child: int):
        self.ctl = ctl
        self.jobs_per_child = jobs_per_child
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.children: dict[int, _Child] = {}                 # socket fd -> child we still talk to
        self.idle: list[_Child] = []                          # free children, the most recent last
        self.busy: dict[object, _Child] = {}                  # job id -> the child running it
        self.ended: OrderedDict[object, int] = OrderedDict()  # job id -> pid of the child that ended on it
        self.live: set[int] = set()                           # pids not yet reaped
        self.statuses: OrderedDict[int, int] = OrderedDict()  # pid -> wait status, for "status"
        self.wakeup, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, _on_sigchld)
        signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
        self.poller = select.poll()
        self.poller.register(ctl, EVENTS)
        self.poller.register(self.wakeup, select.POLLIN)
        self.child_end = select.poll()                        # the wakeup pipe alone
        self.child_end.register(self.wakeup, select.POLLIN)
        self.handlers = {"run": self.on_run, "kill": self.on_kill, "status": self.on_status}

    def serve(self) -> None:
        """Serve until "exit" or the end of the control socket, then kill the children."""
        try:
            while True:
                if not self.idle:
                    self.idle.append(self.fork_child())     # one child always ready and warm
                ready = [fd for fd, _ in self.poller.poll()]
                if self.wakeup in ready:
                    self.reap()
                # children first: a child's "free" was sent before the result that led to the next "run"
                for fd in ready:
                    if fd in self.children:
                        self.on_child_message(self.children[fd])
                if self.ctl.fileno() in ready and not self.on_request():
                    return
        finally:
            for pid in self.live:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # ---- requests ------------------------------------------------------------------
    def on_request(self) -> bool:
        """Read and answer one request; False when the zygote is to stop."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.ctl, 1 << 22, 4)
        except OSError:
            return False
        if not data:
            return False
        try:
            try:
                request = pickle.loads(data)
                op = request[0]
            except Exception:  # noqa: BLE001
                self.reply({"error": "bad request"})
                return True
            if op == "exit":
                return False
            handler = self.handlers.get(op)
            if handler is None:
                self.reply({"error": f"unknown request {op!r}"})
            else:
                handler(request, fds)
            return True
        finally:
            for fd in fds:            # a child that took a job socket has its own copy
                os.close(fd)

    def reply(self, obj: dict) -> None:
        self.ctl.send(json.dumps(obj).encode())

    def on_run(self, request: tuple, fds: list[int]) -> None:
        """("run", job_id, job_bytes) + the job socket: no reply; closing the socket tells a failure."""
        if fds:
            try:
                self.hand_over(request[1], request[2], fds[0])
            except OSError:
                pass

    def on_kill(self, request: tuple, fds: list[int]) -> None:
        child = self.busy.get(request[1])
        if child is not None:   # still on this job: a job it finished ("free") is never killed
            self.kill(child)
        self.reply({"ok": True})

    def on_status(self, request: tuple, fds: list[int]) -> None:
        child = self.busy.get(request[1])
        if child is not None:   # it closed the job socket but its end is not read yet
            self.drop(child)
        pid = self.ended.pop(request[1], None)
        self.reply({"status": None if pid is None else self.wait_for_end(pid)})

    # ---- children ------------------------------------------------------------------
    def fork_child(self) -> _Child:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                self.let_go()
                child_main(theirs, self.devnull, self.jobs_per_child)
            finally:
                os._exit(EXIT_CRASH)
        theirs.close()
        self.live.add(pid)
        child = _Child(pid, ours)
        self.children[ours.fileno()] = child
        self.poller.register(ours, EVENTS)
        return child

    def let_go(self) -> None:
        """In a new child: keep nothing of the zygote's (signals, wakeup pipe, sockets)."""
        os.close(signal.set_wakeup_fd(-1))       # the wakeup pipe's write end
        os.close(self.wakeup)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        self.ctl.close()
        for sibling in self.children.values():   # or a sibling would never see its socket close
            sibling.sock.close()

    def hand_over(self, job_id: object, job: bytes, fd: int) -> None:
        """Give the job and its socket to a free child (or a new one); OSError if two children fail."""
        for _attempt in (1, 2):
            child = self.idle.pop() if self.idle else self.fork_child()
            try:
                socket.send_fds(child.sock, [job], [fd])
            except OSError:
                self.kill(child)
                continue
            child.job = job_id
            self.busy[job_id] = child
            return
        raise OSError("no child could take the job")

    def on_child_message(self, child: _Child) -> None:
        try:
            data = child.sock.recv(16)
        except OSError:
            data = b""
        if not data:
            self.drop(child)          # it ended
        elif data == FREE and child.job is not None:
            self.busy.pop(child.job, None)
            child.job = None
            self.idle.append(child)   # "free" comes before "done": the pool stays at the runner's max_jobs + 1

    def kill(self, child: _Child) -> None:
        """SIGKILL a child and forget it at once: a "free" it sent just before is never read."""
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.drop(child)

    def drop(self, child: _Child) -> None:
        """Stop talking to a child: it ended, is being killed, or (closing its socket) retires.

        Whatever it sends afterwards, a "free" included, is never read; the job
        it held is remembered for a "status" request until its pid is reaped.
        """
        fd = child.sock.fileno()
        if self.children.pop(fd, None) is not None:
            self.poller.unregister(fd)
        child.sock.close()
        if child in self.idle:
            self.idle.remove(child)
        if child.job is not None:
            self.busy.pop(child.job, None)
            _remember(self.ended, child.job, child.pid)
            child.job = None

    # ---- ends of children ------------------------------------------------------------
    def reap(self) -> None:
        """Empty the wakeup pipe, then collect the wait status of every child that ended."""
        try:
            while os.read(self.wakeup, 512):
                pass
        except BlockingIOError:
            pass
        while self.live:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.live.clear()
                return
            if pid == 0:
                return
            self.live.discard(pid)
            _remember(self.statuses, pid, status)

    def wait_for_end(self, pid: int) -> int | None:
        """The wait status of a child that is ending (SIGKILL after 2 s if it does not)."""
        deadline = time.monotonic() + 2.0
        self.reap()
        while pid in self.live:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                self.live.discard(pid)
                return status
            self.child_end.poll(left * 1000)     # until SIGCHLD
            self.reap()
        return self.statuses.pop(pid, None)


def main(argv: list[str] | None = None) -> None:
    global _libc
    argv = sys.argv[1:] if argv is None else argv
    ctl = socket.socket(fileno=int(argv[0]))
    jobs_per_child = int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _libc = _load_libc()
    # Everything a child may need is loaded before the first fork: the children share it,
    # and a job never pays for an import under its memory limit. Warble itself loads mpmath
    # (and through it gmpy2, GMP, MPFR) only on a first SETPRECISION.
    load_mpmath()
    _warm_up()
    gc.collect()
    gc.freeze()
    ctl.send(json.dumps({"ready": os.getpid()}).encode())
    try:
        Zygote(ctl, jobs_per_child).serve()
    except ProtocolError:
        pass


if __name__ == "__main__":
    main()
    # Nothing to flush or close (the children are killed): skip the interpreter's teardown,
    # which would cost the runner's close() about 10 ms of waiting for this process to end.
    os._exit(0)
