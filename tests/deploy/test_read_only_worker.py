"""A worker as it runs on a network-booted Pi: read-only code and configuration, one writable state directory.

The layout of docs/deploy.md, in a temporary directory that `nobody` can walk
(pytest's own are mode 700): /opt/pidaemon/venv with the package in its
site-packages (a copy of pidaemon/ and plugins/, as pip installs them) and
/etc/pidaemon (the shipped config/worker.yaml, byte for byte, and the cluster's
secret, mode 600, owned by the daemon's user), all without a write bit, and a
state directory owned by that user.  The worker runs as `nobody` (the tests
run as root; the unit runs it as `pidaemon`) with an sd_notify socket as
systemd gives a Type=notify unit, finds the server by its signed announcement
on loopback, takes its node id from the MAC, and runs a Warble job submitted
with `pidaemon submit` in its sandbox (SETPRECISION, SAVE and LOAD).  Its
test-only settings (discovery port, mDNS off, where the state and secret are)
come from PIDAEMON_* variables, as a unit's Environment= would give them.

Afterwards the package and the configuration are byte-identical, the worker and
its sandbox ran as `nobody`, and nothing it owns appeared outside its state
directory.  Where strace is installed, a second run checks that the worker,
its sandbox and the job make no system call outside the units'
SystemCallFilter (strace --seccomp-bpf stops only on those calls).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import psutil
import pytest

from pidaemon.config import render_node_id
from pidaemon.nodeinfo import machine_facts
from tests.deploy.unit_files import EffectiveUnit
from tests.support.control_plane import free_udp_port
from tests.support.nodes import start_node_process, wait_for_log, write_config
from tests.support.warble_cluster import server_config

ROOT = Path(__file__).resolve().parents[2]
SECRET = "deploy-test-" + "5e" * 24
PROGRAM = "SETPRECISION(30);PRINT(2*ACOS(0));SAVE(\"n\",41);PRINT(LOAD(\"n\")+1)"
ISOLATING = shutil.which("setpriv") is not None and os.geteuid() == 0
WATCHDOG_USEC = 2_000_000     # WatchdogSec=2: pings every second

pytestmark = [
    pytest.mark.skipif(not ISOLATING, reason="needs root and setpriv (util-linux) to run the worker as nobody"),
    pytest.mark.timeout(120),
]


def _read_only(path: Path) -> None:
    """No write bit anywhere below `path` (directories keep r-x so that others can read)."""
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames:
            file = Path(dirpath, name)
            file.chmod(file.stat().st_mode & ~0o222)
        Path(dirpath).chmod(0o555)


def snapshot(path: Path) -> dict[str, tuple]:
    """Every entry below `path`: its kind, mode, owner and, for files, a digest of the contents."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            info = full.lstat()
            digest = hashlib.sha256(full.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else None
            entries[str(full.relative_to(path))] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode),
                                                    info.st_uid, digest)
    return entries


def owned_by(uid: int, *places: str) -> set[str]:
    """Top-level entries of the world-writable places that `uid` owns."""
    found = set()
    for place in places:
        try:
            with os.scandir(place) as entries:
                found |= {entry.path for entry in entries if entry.stat(follow_symlinks=False).st_uid == uid}
        except OSError:
            continue
    return found


@lru_cache(maxsize=None)
def syscall_set(name: str) -> frozenset[str]:
    """The system calls of a systemd set (`systemd-analyze syscall-filter @system-service`), sets expanded."""
    listing = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                             check=True).stdout
    calls: set[str] = set()
    for line in listing.splitlines()[1:]:
        item = line.strip()
        if item.startswith("@"):
            calls |= syscall_set(item)
        elif item and not item.startswith("#"):
            calls.add(item)
    return frozenset(calls)


def unit_allowed_syscalls() -> frozenset[str]:
    """What SystemCallFilter= of the worker's unit lets through: allow lists added, ~ lists taken away."""
    allowed: set[str] = set()
    for value in EffectiveUnit("worker").all("SystemCallFilter"):
        deny = value.startswith("~")
        names = set()
        for item in value.lstrip("~").split():
            names |= syscall_set(item) if item.startswith("@") else {item}
        allowed = allowed - names if deny else allowed | names
    return frozenset(allowed)


def python_for(user: pwd.struct_passwd) -> str | None:
    """An interpreter of this Python version that `user` can run, and that can start itself again.

    The test's own may live where only root can reach it (pyenv under /root): then the
    distribution's python3.X, given the test venv's third-party packages (read-only).
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
                  f"/usr/bin/python{version}", shutil.which(f"python{version}")]
    check = ("import subprocess, sys; subprocess.run([sys.executable, '-c', 'import json'], check=True); "
             "print('%d.%d' % sys.version_info[:2])")
    for candidate in dict.fromkeys(c for c in candidates if c):
        probe = subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
                                candidate, "-I", "-c", check], capture_output=True, text=True, cwd="/")
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


class Layout:
    """The read-only root of docs/deploy.md, under one temporary directory `nobody` can walk.

    /opt/pidaemon/venv: a venv with the package in its site-packages (a copy of
    pidaemon/ and plugins/, as pip installs them) and, through a .pth line, the
    test venv's third-party packages; /etc/pidaemon: the shipped worker.yaml and
    the cluster's secret; /var/lib/pidaemon: the state, owned by the user;
    /run: where the test listens as systemd would (NOTIFY_SOCKET).
    """

    def __init__(self, top: Path, user: pwd.struct_passwd, python: str):
        self.top, self.user = top, user
        self.venv = top / "opt/pidaemon/venv"
        self.etc = top / "etc/pidaemon"
        self.state = top / "var/lib/pidaemon"
        self.notify_socket = top / "run/notify"
        subprocess.run([python, "-I", "-m", "venv", "--without-pip", str(self.venv)], check=True)
        self.python = self.venv / "bin/python"
        purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        site = Path(subprocess.run([str(self.python), "-I", "-c", purelib], capture_output=True, text=True,
                                   check=True).stdout.strip())
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / "pidaemon", site / "pidaemon", ignore=ignore)
        shutil.copytree(ROOT / "plugins", site / "pidaemon_plugins", ignore=ignore)
        ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        (site / "pidaemon-test-dependencies.pth").write_text("".join(f"{path}\n" for path in sorted(ours)))
        self.site = site
        self.etc.mkdir(parents=True)
        shutil.copyfile(ROOT / "config/worker.yaml", self.etc / "worker.yaml")
        secret = self.etc / "cluster-secret"
        secret.write_text(SECRET + "\n")
        os.chown(secret, user.pw_uid, user.pw_gid)     # "owned by the user pidaemon runs as", mode 600
        secret.chmod(0o600)
        _read_only(self.top / "opt")
        _read_only(self.top / "etc")
        self.state.mkdir(parents=True)
        os.chown(self.state, user.pw_uid, user.pw_gid)
        self.state.chmod(0o750)
        self.notify_socket.parent.mkdir()
        for directory in (self.top, self.top / "var", self.top / "var/lib", self.top / "run"):
            directory.chmod(0o755)

    def worker_environment(self, discovery_port: int) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent",
            "NOTIFY_SOCKET": str(self.notify_socket), "WATCHDOG_USEC": str(WATCHDOG_USEC),
            "PIDAEMON_NODE__STATE_DIR": str(self.state),
            "PIDAEMON_NODE__LOCAL_CONFIG": str(self.state / "local.yaml"),
            "PIDAEMON_PLUGINS__DISCOVERY__SECRET_FILE": str(self.etc / "cluster-secret"),
            "PIDAEMON_PLUGINS__DISCOVERY__PORT": str(discovery_port),
            "PIDAEMON_PLUGINS__DISCOVERY__MDNS": "false",        # loopback only
            "PIDAEMON_PLUGINS__WARBLE_WORKER__SLOTS": "1",
            "PIDAEMON_PLUGINS__WARBLE_WORKER__REQUIRED": "true",  # no sandbox: stop at once, do not wait
        }

    def as_user(self) -> list[str]:
        return ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups"]


class NotifyListener:
    """The receiving end of sd_notify, as systemd has it for a Type=notify unit."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        path.chmod(0o777)             # the daemon's user sends to it
        self.messages: list[str] = []

    def wait_for(self, state: str, process: subprocess.Popen, timeout: float) -> None:
        """Until a datagram holds `state`; a bound on hangs, and the process must not end first."""
        deadline = time.monotonic() + timeout
        while not any(state in message.splitlines() for message in self.messages):
            if process.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f"no {state} from the daemon (exit status {process.poll()}): "
                                   f"{self.messages}\n{Path(process.log_path).read_text()}")
            self.sock.settimeout(0.2)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def layout():
    user = pwd.getpwnam("nobody")
    python = python_for(user)
    if python is None:
        pytest.skip(f"no python{sys.version_info.major}.{sys.version_info.minor} that nobody can run")
    top = Path(tempfile.mkdtemp(prefix="pidaemon-deploy-"))
    try:
        yield Layout(top, user, python)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def run_cluster(layout: Layout, broker, tmp_path: Path, wrapper: list[str] = ()) -> dict:
    """A server (root, as in the other tests) and the read-only worker (nobody); one job through both."""
    port = free_udp_port()
    (tmp_path / "server").mkdir()
    config = server_config("server", broker.url, tmp_path / "server")
    config["plugins"]["announce"] = {"port": port, "interval": 0.3, "targets": ["127.255.255.255"],
                                     "broker_host": "127.0.0.1", "mdns": False, "query_port": 0,
                                     "secret_file": str(layout.etc / "cluster-secret")}
    # The server reads the secret as root; the worker reads the same file as its owner.
    server = start_node_process(write_config(tmp_path / "server.yaml", config))
    notify = NotifyListener(layout.notify_socket)
    worker = start_worker(layout, port, tmp_path / "worker.log", wrapper)
    seen: dict = {"worker_log": worker.log_path}
    started = psutil.Process(worker.pid)         # the worker itself, or strace around it
    try:
        wait_for_log(server, "announcing", timeout=30)
        notify.wait_for("READY=1", worker, timeout=60)
        submitted = subprocess.run(
            [sys.executable, "-m", "pidaemon", "submit", "--broker", broker.url, "--wait", "--json",
             "--user", "ada", "--timeout", "45", PROGRAM],
            capture_output=True, text=True, timeout=90)
        seen["submit"] = submitted
        processes = [p for p in [started, *started.children(recursive=True)]
                     if p.name() != "strace" and re.search(r"-m pidaemon", " ".join(p.cmdline()))]
        seen["processes"] = {p.pid: (" ".join(p.cmdline()), p.uids(), p.gids()) for p in processes}
        notify.wait_for("WATCHDOG=1", worker, timeout=10)
    finally:
        # SIGTERM to the daemon, as systemd sends it (not to strace, which would detach)
        try:
            daemon = next((p for p in [started, *started.children()] if p.name() != "strace"), started)
            daemon.send_signal(signal.SIGTERM)
        except psutil.Error:      # it ended already: its exit status and log tell why
            pass
        try:
            seen["worker_exit"] = worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            seen["worker_exit"] = worker.wait()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        notify.close()
    seen["notify"] = list(notify.messages)
    seen["log"] = worker.log_path.read_text()
    return seen


def start_worker(layout: Layout, discovery_port: int, log_path: Path, wrapper: list[str] = ()) -> subprocess.Popen:
    """`pidaemon run` on the installed worker.yaml, as the unit's ExecStart, as the unprivileged user."""
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [*wrapper, *layout.as_user(), str(layout.python), "-m", "pidaemon", "run",
             "--config", str(layout.etc / "worker.yaml")],
            env=layout.worker_environment(discovery_port), cwd="/", stdout=log, stderr=subprocess.STDOUT)
    worker.log_path = log_path
    return worker


def check_the_job_ran_on_the_read_only_worker(seen: dict, user: pwd.struct_passwd) -> None:
    submitted = seen["submit"]
    assert submitted.returncode == 0, (submitted.stdout, submitted.stderr, seen["log"])
    answers = [json.loads(line) for line in submitted.stdout.splitlines() if line.startswith("{")]
    result = answers[-1]
    assert result["status"] == "ok", result
    assert result["output"][0].startswith("3.14159265358979323846"), result     # SETPRECISION: mpmath in the sandbox
    assert result["output"][1] == "42", result                                  # SAVE, LOAD through the server's store
    expected_id = render_node_id("pi-{mac6}", hostname="-", mac=machine_facts(None)["mac"])
    assert result["node"] == expected_id                      # node id from the MAC, as config/worker.yaml says
    # What systemd would show: READY=1 with the node as status, then watchdog pings.
    assert any(f"STATUS=node {expected_id} (worker)" in m.splitlines() for m in seen["notify"]), seen["notify"]
    assert any("WATCHDOG=1" in m.splitlines() for m in seen["notify"])
    kinds = {"worker": r"-m pidaemon run", "sandbox": r"pidaemon\.warble\.zygote"}
    for kind, pattern in kinds.items():
        matching = [ids for command, *ids in seen["processes"].values() if re.search(pattern, command)]
        assert matching, (kind, seen["processes"])
        for uids, gids in matching:
            assert set(uids) == {user.pw_uid} and set(gids) == {user.pw_gid}, (kind, uids, gids)
    assert seen["worker_exit"] == 0, seen["log"]             # a clean stop on SIGTERM


def test_a_worker_with_read_only_code_and_config_runs_a_job_and_writes_only_its_state(layout, broker, tmp_path):
    # The worker imports the installed copy, not the checkout: the same interpreter and environment, as nobody.
    probe = subprocess.run(
        [*layout.as_user(), str(layout.python), "-c",
         "import pidaemon, pidaemon_plugins.warble.worker as w; print(pidaemon.__file__); print(w.__file__)"],
        env=layout.worker_environment(0), cwd=layout.state, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert all(line.startswith(f"{layout.site}/") for line in probe.stdout.split()), probe.stdout

    before = {part: snapshot(layout.top / part) for part in ("opt", "etc")}
    places = ("/tmp", "/var/tmp", "/dev/shm")
    owned_before = owned_by(layout.user.pw_uid, *places)

    seen = run_cluster(layout, broker, tmp_path)

    check_the_job_ran_on_the_read_only_worker(seen, layout.user)
    for part, entries in before.items():
        assert snapshot(layout.top / part) == entries, f"the worker changed {layout.top / part}"
    assert owned_by(layout.user.pw_uid, *places) - owned_before == set()
    for path in layout.state.rglob("*"):                     # what it did write is its own
        assert path.lstat().st_uid == layout.user.pw_uid, path
    assert "Traceback" not in seen["log"], seen["log"]


def test_without_a_writable_state_directory_the_worker_stops_at_once_and_says_what_to_change(layout, tmp_path):
    """What ProtectSystem=strict without StateDirectory= would give: no READY=1, a reason, a failed unit."""
    os.chown(layout.state, 0, 0)
    notify = NotifyListener(layout.notify_socket)
    worker = start_worker(layout, free_udp_port(), tmp_path / "worker.log")
    try:
        status = worker.wait(60)
    finally:
        if worker.poll() is None:
            worker.kill()
        notify.sock.settimeout(0)
        while True:                  # whatever it sent before it stopped
            try:
                notify.messages.append(notify.sock.recv(4096).decode())
            except OSError:
                break
        notify.close()
    log = worker.log_path.read_text()
    assert status != 0, log
    assert f"node.state_dir {layout.state} is not a writable directory" in log, log
    assert not any("READY=1" in message for message in notify.messages)


@pytest.mark.skipif(not (shutil.which("strace") and shutil.which("systemd-analyze")),
                    reason="needs strace and systemd-analyze")
def test_the_worker_and_its_sandbox_make_no_system_call_the_units_filter_refuses(layout, broker, tmp_path):
    """SystemCallFilter=@system-service ~@privileged, and MemoryDenyWriteExecute=yes, hold for a worker's work."""
    allowed = unit_allowed_syscalls()
    assert {"fork", "setsid", "setrlimit", "prlimit64", "socketpair"} <= allowed   # what the sandbox needs
    assert not {"setuid", "setresuid", "chown", "mount"} & allowed
    trace_log = tmp_path / "strace.log"
    # Trace only what the filter refuses, execve (to tell setpriv's own calls from the worker's) and the
    # calls MemoryDenyWriteExecute= inspects.
    memory = {"mmap", "mprotect", "pkey_mprotect"}
    untraced = ",".join(f"?{name}" for name in sorted(allowed - {"execve"} - memory))
    wrapper = ["strace", "-f", "--seccomp-bpf", "-qq", "-e", "signal=none", "-o", str(trace_log),
               "-e", f"trace=!{untraced}"]

    seen = run_cluster(layout, broker, tmp_path, wrapper)

    check_the_job_ran_on_the_read_only_worker(seen, layout.user)
    lines = trace_log.read_text().splitlines()
    python_start = next(i for i, line in enumerate(lines) if re.search(r'execve\("[^"]*python', line))
    # The trace sees refused calls (setpriv's own, before the worker starts) and follows into the sandbox.
    assert any(re.search(r"\d+\s+setresuid\(", line) for line in lines[:python_start]), lines[:python_start]
    assert any("pidaemon.warble.zygote" in line for line in lines[python_start:] if "execve(" in line)
    worker_lines = lines[python_start:]
    calls = [(m.group(1), line) for line in worker_lines if (m := re.match(r"\d+\s+(?:<\.\.\. )?(\w+)", line))]
    refused = sorted({name for name, _line in calls if name not in {"execve"} | memory})
    assert refused == [], [line for name, line in calls if name in refused][:20]
    # MemoryDenyWriteExecute=: no mapping both writable and executable, no page made executable afterwards.
    assert any(name == "mmap" and "PROT_EXEC" in line for name, line in calls)      # shared libraries: traced
    write_exec = [line for name, line in calls
                  if (name == "mmap" and "PROT_WRITE" in line and "PROT_EXEC" in line)
                  or (name in ("mprotect", "pkey_mprotect") and "PROT_EXEC" in line)]
    assert write_exec == [], write_exec[:10]
