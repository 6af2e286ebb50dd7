"""The warm "zygote" process of the runner, and what its children do.

The runner starts this module once (`python -m pidaemon.warble.zygote FD`).
It imports Warble, warms it up, freezes its heap for cheap copy-on-write and
then waits on its control socket (FD, SOCK_SEQPACKET) for requests:

    ("run", job_id, job_bytes) + a stream socket    start a child for the job (no reply)
    ("kill", job_id)      -> {"ok": true}            SIGKILL the job's child if it still runs
    ("status", job_id)    -> {"status": n | null}    the child's wait status
    ("exit",)                                        stop (also on EOF)

"run" has no reply so that a job costs the runner a single wake-up: if the
zygote cannot start the child, it closes the job socket and the runner sees
EOF.

To keep fork and copy-on-write faults off the critical path, the zygote
keeps one spare child forked and warmed up in advance; a job goes to the
spare, and a new spare is forked after the reply. The zygote never runs user
code (nor unpickles a job: only the child does).

A child closes the control socket at once. When its job arrives it takes
its limits (RLIMIT_AS, RLIMIT_CPU, no files, no core, no forks), compiles and
runs the program and talks only to the runner, over the job socket (see
protocol.py): output lines, effects, SAVE/LOAD round trips and a final
"done". It always ends with os._exit.
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
from .program import compile_program, execute
from .protocol import Channel, ProtocolError, decode_value, encode_value
from .result import Result
from .runtime import Run

EXIT_MEMORY = 3
EXIT_CRASH = 4
MB = 1024 * 1024


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


def _vm_size() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 512 * MB


def _limit_resources(limits: Limits, vm_size: int) -> None:
    memory = vm_size + limits.memory_mb * MB
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = int(math.ceil(limits.time_limit)) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    for name, value in (("RLIMIT_CORE", 0), ("RLIMIT_FSIZE", 0), ("RLIMIT_NPROC", 0), ("RLIMIT_NOFILE", 16)):
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError, AttributeError):
            pass


def spare_main(spare: socket.socket, devnull: int) -> None:
    """A pre-forked child: warm up, wait for one job, run it. Never returns."""
    code = EXIT_CRASH
    try:
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        gc.disable()
        _warm_up()
        vm_size = _vm_size()
        data, fds, _flags, _addr = socket.recv_fds(spare, 1 << 22, 1)
        spare.close()
        if not data or len(fds) != 1:
            code = 0
        else:
            child_main(fds[0], pickle.loads(data), vm_size)
    finally:
        os._exit(code)


def child_main(job_fd: int, job: dict, vm_size: int) -> None:
    """Run one job in this child. Never returns."""
    code = 0
    channel = None
    try:
        sock = socket.socket(fileno=job_fd)
        channel = Channel(sock)
        limits: Limits = job["limits"]
        _limit_resources(limits, vm_size)
        builtins: list[Builtin] = job["builtins"]
        try:
            program = compile_program(job["source"], limits=limits, builtins=builtins)
        except WarbleError as exc:
            result = Result("error", [], exc.info(), 0, 0.0)
        else:
            rt = ChildRun(channel, limits=limits, user=job["user"], store=None, effects=None,
                          extras=program.environment_builtins(_NoEffects, limits), seed=job.get("seed"),
                          decimal_texts=program.compiled.decimal_texts)
            result = execute(program, rt)
        channel.send({"t": "done", "r": result.to_dict()})
    except MemoryError:
        code = EXIT_MEMORY
        try:
            if channel is not None:
                err = MemoryLimitExceeded("out of memory")
                channel.send({"t": "done", "r": Result("memory_limit", [], err.info()).to_dict()})
        except BaseException:  # noqa: BLE001
            pass
    except BaseException:  # noqa: BLE001 - a broken pipe (runner gone) or a bug: just end
        code = EXIT_CRASH
    finally:
        os._exit(code)


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


def serve(ctl: socket.socket) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    statuses: "OrderedDict[int, int]" = OrderedDict()
    live: set[int] = set()
    spare: tuple[int, socket.socket] | None = None

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

    def fork_spare() -> tuple[int, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            try:
                ctl.close()
                ours.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                spare_main(theirs, devnull)
            finally:
                os._exit(EXIT_CRASH)
        theirs.close()
        live.add(pid)
        return pid, ours

    jobs: "OrderedDict[object, int]" = OrderedDict()    # job id -> child pid

    def hand_over(job: bytes, fd: int) -> int:
        nonlocal spare
        for _attempt in (1, 2):
            if spare is None:
                spare = fork_spare()
            pid, sock = spare
            spare = None
            try:
                socket.send_fds(sock, [job], [fd])
                return pid
            except OSError:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            finally:
                sock.close()
        raise OSError("no child could take the job")

    spare = fork_spare()
    control = select.poll()  # not select(): the descriptor may be past 1023
    control.register(ctl, select.POLLIN | select.POLLHUP | select.POLLERR)
    while True:
        reap()
        if spare is not None and spare[0] not in live:
            spare[1].close()
            spare = None
        if spare is None:
            spare = fork_spare()
        if not control.poll(500):
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
                    jobs[request[1]] = hand_over(request[2], fds[0])
                    while len(jobs) > 1000:
                        jobs.popitem(last=False)
                except OSError:
                    pass            # closing the socket tells the runner
                finally:
                    os.close(fds[0])
            spare = fork_spare()
        elif op == "kill":
            pid = jobs.get(request[1], -1)
            reap()
            if pid in live:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            reply({"ok": True})
        elif op == "status":
            pid = jobs.pop(request[1], -1)
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
            reply({"status": statuses.pop(pid, None)})
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _warm_up()
    gc.collect()
    gc.freeze()
    ctl.send(json.dumps({"ready": os.getpid()}).encode())
    try:
        serve(ctl)
    except ProtocolError:
        pass


if __name__ == "__main__":
    main()
