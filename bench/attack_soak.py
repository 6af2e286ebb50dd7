"""Attack soak: a real cluster under the attacks of issue 10, all in one run, and a ledger of every job.

    .venv/bin/python bench/attack_soak.py            # a few minutes
    .venv/bin/python bench/attack_soak.py --quick    # about a minute
    .venv/bin/python bench/attack_soak.py --keep     # keep the temporary directory (logs, configs, databases)

Starts, in a temporary directory, mosquitto with the settings of
config/mosquitto.conf (persistence on, its autosave interval, on a free
loopback port), a server process (registry + warble_server) whose state
directory is a small tmpfs (so that "disk full" is real; mounting needs root,
and without it the disk-full phase is skipped, saying why) and 4 worker
processes. Honest clients follow docs/protocol.md, "The client's pattern":
subscribe to `picluster/warble/results/<id>`, submit, submit the same id
again until an answer comes and after every reconnection, then wait for the
result, submitting the id again when nothing comes for a while. Each job
counts its own runs in the server's store:

    SLEEP(0.2);x=LOAD("c<id>");x++;SAVE("c<id>",x);PRINT(x)

so that a job run twice, or whose SAVE applied twice, leaves a count of 2 or
prints 2. A hostile client attacks throughout (malformed payloads, reply
topics with control characters or outside the allow-list, a node id with `+`,
forged worker replies and store requests, floods of re-submissions, rotating
user names). One after the other, with steady traffic in between: a broker
restart (SIGTERM), a broker SIGKILL, a worker SIGKILL, a worker SIGSTOP for
longer than the server's lease, a server SIGKILL, a full disk under the
server's state directory. Workers are stopped and killed with their sandbox
processes (their process group), as when a Pi freezes or crashes.

At the end, after a final round of re-submissions, the script stops the
cluster, reads the server's queue and store files, and prints the ledger:
submitted, acknowledged, results, rejected, lost, duplicated, ran twice, and
the forced disconnects of the server (from its log: connections lost while
the broker was up; from mosquitto's log: malformed packets and protocol
errors). Exit status 0 when lost, never answered, duplicated, ran twice,
forced disconnects and store values forged by the hostile client are all 0,
else 1. Not a test: `scripts/test` does not run it.
"""

from __future__ import annotations

import argparse
import errno
import getpass
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PREFIX = "picluster"
WORKERS = 4
SLOTS = 2
JOB_TIME_LIMIT = 5.0        # the workers' time limit and the server's job_time_limit, seconds
LEASE_MARGIN = 3.0          # lease = time limit + kill grace (0.5) + this
LEASE = JOB_TIME_LIMIT + 0.5 + LEASE_MARGIN
PING_INTERVAL, MISSED_PINGS = 1.0, 3
TMPFS_SIZE_MB = 64
RETRY_UNANSWERED = 3.0      # seconds before a client submits an unanswered id again
RETRY_WAITING = 10.0        # seconds without news of an acknowledged job before it is submitted again
BROKER_WINDOW_AFTER = 1.0   # seconds after the broker is back during which a lost connection is still its doing
LOG_SLACK = 0.05            # node logs give milliseconds, truncated: a line may seem to precede its cause
ACK_STATES = ("queued", "dispatched", "running")


# ---------------------------------------------------------------- the schedule

@dataclass
class Schedule:
    warmup: float
    gap: float              # steady traffic after each disruption
    broker_down: float
    worker_down: float
    stop: float             # SIGSTOP, longer than the lease
    server_down: float
    disk_full: float
    drain: float            # at most, for the last results once submissions stop

    @classmethod
    def default(cls) -> Schedule:
        return cls(warmup=15, gap=20, broker_down=4, worker_down=5, stop=LEASE + 6.5, server_down=4,
                   disk_full=20, drain=120)

    @classmethod
    def quick(cls) -> Schedule:
        return cls(warmup=4, gap=5, broker_down=2, worker_down=2, stop=LEASE + 2.5, server_down=2,
                   disk_full=6, drain=60)


class Timeline:
    """What happened when: disruptions, the windows in which the broker was down, the phases."""

    def __init__(self):
        self.t0 = time.time()
        self.events: list[tuple[float, str]] = []
        self.broker_down: list[list[float]] = []    # [from, to]
        self.server_down: list[list[float]] = []
        self.phases: list[dict] = []

    def note(self, what: str) -> None:
        now = time.time()
        self.events.append((now, what))
        print(f"  {now - self.t0:7.1f} s  {what}", flush=True)

    def broker_stopping(self) -> None:
        self.broker_down.append([time.time(), float("inf")])

    def broker_back(self) -> None:
        self.broker_down[-1][1] = time.time()

    def broker_was_down(self, t: float) -> bool:
        return any(start - LOG_SLACK <= t <= end + BROKER_WINDOW_AFTER for start, end in self.broker_down)

    def server_was_down(self, t: float, slack: float) -> bool:
        return any(start - slack <= t <= end + slack for start, end in self.server_down)

    def phase_at(self, t: float) -> str:
        names = [p["name"] for p in self.phases if p["start"] <= t < p["end"]]
        return names[0] if names else "-"



# ---------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_port(port: int, up: bool, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port) != up:
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} did not go {'up' if up else 'down'} within {timeout} s")
        time.sleep(0.02)


class Broker:
    """mosquitto with the cluster's shipped settings, on our port, its persistence and log in our directory."""

    OWN = ("listener", "persistence_location", "log_dest", "log_type", "user")

    def __init__(self, workdir: Path, shipped: Path):
        self.dir = workdir
        self.dir.mkdir()
        self.port = free_port()
        self.log_path = self.dir / "mosquitto.log"
        binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
        if not binary:
            raise SystemExit("mosquitto is not installed (scripts/test installs it)")
        self.binary = binary
        lines = [f"listener {self.port} {HOST}", f"persistence_location {self.dir}/",
                 f"log_dest file {self.log_path}", "log_type error", "log_type warning", "log_type notice",
                 "log_type information",
                 # As root, mosquitto would switch to the "mosquitto" user, who cannot write here.
                 f"user {getpass.getuser()}"]
        lines += [line for line in shipped.read_text().splitlines()
                  if line.strip() and not line.startswith("#") and line.split()[0] not in self.OWN]
        self.settings = {line.split()[0]: " ".join(line.split()[1:]) for line in lines}
        self.config = self.dir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_port(self.port, up=True)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(15)
        wait_port(self.port, up=False)


class NodeProcess:
    """A pidaemon node (`python -m pidaemon run --config FILE`) in its own process group, its log appended to."""

    def __init__(self, name: str, config: dict, workdir: Path):
        self.name = name
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.stopped = False
        self.starts = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "pidaemon", "run", "--config",
                                             str(self.config_path)], stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.starts += 1

    def signal_group(self, sig: int) -> None:
        os.killpg(self.process.pid, sig)
        if sig == signal.SIGKILL:
            self.process.wait(10)
        self.stopped = sig == signal.SIGSTOP

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        if not self.alive():
            return
        if self.stopped:
            self.signal_group(signal.SIGCONT)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # its sandbox processes, if any stayed
        except ProcessLookupError:
            pass


class StateDisk:
    """The server's state directory on a tmpfs of its own, which can be filled up; or a plain directory."""

    def __init__(self, path: Path, size_mb: int):
        self.path = path
        self.path.mkdir()
        self.size_mb = size_mb
        self.mounted = False
        self.skip_reason: str | None = None
        self.filler = path / "filler"

    def mount(self) -> None:
        if os.geteuid() != 0:
            self.skip_reason = "not root: cannot mount a tmpfs for the server's state directory"
            return
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0700", "tmpfs",
                               str(self.path)], check=False, capture_output=True, text=True)
        if done.returncode != 0:
            self.skip_reason = f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"
        else:
            self.mounted = True

    def free_bytes(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def used_bytes(self) -> int:
        stat = os.statvfs(self.path)
        return (stat.f_blocks - stat.f_bfree) * stat.f_frsize

    def fill(self) -> int:
        """Write a file until the file system refuses (ENOSPC); returns the bytes left free."""
        with open(self.filler, "wb", buffering=0) as f:
            for chunk in (bytes(1 << 20), bytes(4096), bytes(512)):
                while True:
                    try:
                        f.write(chunk)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        return self.free_bytes()

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            done = subprocess.run(["umount", str(self.path)], check=False, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"warning: umount {self.path} failed: {done.stderr.strip()}", file=sys.stderr)
            else:
                self.mounted = False


def server_config(broker: Broker, state: Path) -> dict:
    """The server's settings as config/server.yaml has them, but for loopback, a short lease and fast pings."""
    return {
        "node": {"role": "server", "id": "server", "state_dir": str(state)},
        "mqtt": {"broker": broker.url, "protocol": "5", "keepalive": 30, "session_expiry": 3600,
                 "queue_limit": 100000, "reconnect": {"min_delay": 0.5, "max_delay": 10}},
        "logging": {"level": "info", "format": "json"},
        "plugins": {
            "ping": {}, "telemetry": {"interval": 5},
            "registry": {"required": True, "ping_interval": PING_INTERVAL, "missed_pings": MISSED_PINGS,
                         "db": str(state / "registry.sqlite3")},
            "warble_server": {"required": True, "db": str(state / "jobs.sqlite3"),
                              "store_db": str(state / "store.sqlite3"),
                              "cpu_threshold": 101,  # every worker shares this machine's CPUs
                              "job_time_limit": JOB_TIME_LIMIT, "lease_margin": LEASE_MARGIN,
                              "slots_per_worker": SLOTS,
                              "max_saved_keys": 100_000},  # one counter per job and user
        },
    }


def worker_config(name: str, broker: Broker, workdir: Path) -> dict:
    """A worker as config/worker.yaml has it, but with the broker given (no discovery) and a 5 s time limit."""
    return {
        "node": {"role": "worker", "id": name, "state_dir": str(workdir / name)},
        "mqtt": {"broker": broker.url, "protocol": "5", "keepalive": 30, "session_expiry": 600,
                 "queue_limit": 10000, "reconnect": {"min_delay": 0.5, "max_delay": 60}},
        "logging": {"level": "info", "format": "json"},
        "plugins": {"ping": {}, "telemetry": {"interval": 5},
                    "warble_worker": {"slots": SLOTS, "jobs_per_child": 100,
                                      "limits": {"time_limit": JOB_TIME_LIMIT}}},
    }


# ---------------------------------------------------------------- MQTT clients

def v5_client(client_id: str, port: int) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.reconnect_delay_set(0.2, 2)
    client.connect_async(HOST, port, keepalive=10, clean_start=True)
    return client


def results_topic(job_id: str) -> str:
    return f"{PREFIX}/warble/results/{job_id}"


def job_of(topic: str) -> str:
    return topic.rsplit("/", 1)[-1]


def canonical(answer: dict) -> str:
    """An answer as comparable text (key order aside; `reply_refused` is about the asking, not the job)."""
    return json.dumps({k: v for k, v in answer.items() if k != "reply_refused"}, sort_keys=True)


@dataclass
class SoakJob:
    id: str
    user: str
    source: str
    created: float
    sends: int = 0
    last_send: float = 0.0
    last_heard: float = 0.0
    subscribed: bool = False
    last_subscribe: float = 0.0
    acknowledged: bool = False
    rejection: dict | None = None
    finals: list[tuple[float, dict]] = field(default_factory=list)
    after_rejection: list[dict] = field(default_factory=list)   # answers other than the rejection, after it

    @property
    def open(self) -> bool:
        return not self.finals and self.rejection is None


class HonestClient:
    """A client that must not lose a job: the pattern of docs/protocol.md, one user, its client id as origin."""

    def __init__(self, index: int, port: int, rate: float):
        self.name = f"soak-client-{index}"
        self.user = f"honest-{index}"
        self.rate = rate
        self.jobs: dict[str, SoakJob] = {}
        self.creating = False
        self._credit = 0.0
        self._last_tick = time.monotonic()
        self._lock = threading.Lock()
        self._pending_subacks: dict[int, list[str]] = {}
        self._early_subacks: set[int] = set()
        self.connected = False
        self.reconnections = 0
        self._properties = Properties(PacketTypes.PUBLISH)
        self._properties.UserProperty = [("client_id", self.name)]
        self.client = v5_client(self.name, port)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.loop_start()

    # paho's thread: never call paho while holding our lock (paho takes its own locks)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        with self._lock:
            self.connected = True
            self.reconnections += 1
            open_ids = [j.id for j in self.jobs.values() if j.open]
        self._subscribe(open_ids)   # and, once subscribed, submit them all again

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            self.connected = False
            for job in self.jobs.values():
                job.subscribed = False
            self._pending_subacks.clear()

    def _subscribe(self, ids: list[str]) -> None:
        with self._lock:
            now = time.monotonic()
            for job_id in ids:
                self.jobs[job_id].last_subscribe = now
        for start in range(0, len(ids), 200):
            chunk = ids[start:start + 200]
            result, mid = self.client.subscribe([(results_topic(i), 1) for i in chunk])
            if result != mqtt.MQTT_ERR_SUCCESS:
                return
            with self._lock:
                self._pending_subacks[mid] = chunk
                early = mid in self._early_subacks
                self._early_subacks.discard(mid)
            if early:
                self._subscribed(mid)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._lock:
            if mid not in self._pending_subacks:
                self._early_subacks.add(mid)
                return
        self._subscribed(mid)

    def _subscribed(self, mid: int) -> None:
        with self._lock:
            ids = self._pending_subacks.pop(mid, [])
            for job_id in ids:
                self.jobs[job_id].subscribed = True
            jobs = [self.jobs[i] for i in ids if self.jobs[i].open]
        for job in jobs:
            self._send(job)

    def _send(self, job: SoakJob) -> None:
        job.sends += 1
        job.last_send = time.monotonic()
        self.client.publish(f"{PREFIX}/warble/submit",
                            json.dumps({"id": job.id, "user": job.user, "source": job.source}), qos=1,
                            properties=self._properties)

    def _on_message(self, client, userdata, message) -> None:
        try:
            answer = json.loads(message.payload)
        except ValueError:
            return
        now = time.monotonic()
        done = False
        with self._lock:
            job = self.jobs.get(job_of(message.topic))
            if job is None or not isinstance(answer, dict):
                return
            job.last_heard = now
            status = answer.get("status")
            if job.rejection is not None:
                job.after_rejection.append(answer)
            elif status in ACK_STATES:
                job.acknowledged = True
            elif status == "rejected":
                if job.acknowledged or job.finals:
                    job.after_rejection.append(answer)
                else:
                    job.rejection = answer
                    done = True
            else:
                job.acknowledged = True
                done = not job.finals
                job.finals.append((time.time(), answer))
        if done:
            client.unsubscribe(message.topic)

    # the driver's thread

    def tick(self) -> None:
        now = time.monotonic()
        new: list[str] = []
        again: list[SoakJob] = []
        with self._lock:
            if self.creating:
                self._credit += (now - self._last_tick) * self.rate
                while self._credit >= 1:
                    self._credit -= 1
                    job_id = uuid.uuid4().hex[:16]
                    source = f'SLEEP(0.2);x=LOAD("c{job_id}");x++;SAVE("c{job_id}",x);PRINT(x)'
                    self.jobs[job_id] = job = SoakJob(job_id, self.user, source, time.time())
                    new.append(job_id)
            self._last_tick = now
            if not self.connected:
                return
            for job in self.jobs.values():
                if not job.open:
                    continue
                if not job.subscribed:   # a subscription that never came back acknowledged
                    if job.last_subscribe and now - job.last_subscribe > RETRY_UNANSWERED:
                        new.append(job.id)
                    continue
                quiet = now - max(job.last_send, job.last_heard)
                if quiet >= (RETRY_WAITING if job.acknowledged else RETRY_UNANSWERED):
                    again.append(job)
        if new:
            self._subscribe(new)
        for job in again:
            self._send(job)

    def submit_open_again(self) -> int:
        """The final round: every open id submitted again now."""
        with self._lock:
            jobs = [j for j in self.jobs.values() if j.open and j.subscribed]
            unsubscribed = [j.id for j in self.jobs.values() if j.open and not j.subscribed]
        for job in jobs:
            self._send(job)
        if unsubscribed and self.connected:
            self._subscribe(unsubscribed)
        return len(jobs) + len(unsubscribed)

    def open_count(self, acknowledged_only: bool = False) -> int:
        with self._lock:
            return sum(1 for j in self.jobs.values() if j.open and (j.acknowledged or not acknowledged_only))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class ClusterWatch:
    """Sees what anyone may read: every answer on results/+, the nodes' health, the workers' job replies."""

    def __init__(self, port: int):
        self.lock = threading.Lock()
        self.finals: dict[str, list[dict]] = {}
        self.health: dict[str, str] = {}
        self.first_result: dict[str, float] = {}    # job: when its first final answer (not a rejection) came
        self.worker_outputs: dict[str, list[tuple[str, int, list]]] = {}   # job: (node, attempt, output)
        self.running: dict[str, dict[str, int]] = {}   # node: {job: attempt} started and not done
        self.client = v5_client(f"soak-watch-{uuid.uuid4().hex[:6]}", port)
        topics = [(f"{PREFIX}/warble/results/+", 1), (f"{PREFIX}/nodes/+/health", 1),
                  (f"{PREFIX}/nodes/+/reply/warble", 1)]
        self.client.on_connect = lambda c, u, f, rc, p: rc.is_failure or c.subscribe(topics)
        self.client.on_message = self._on_message
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        try:
            data = json.loads(message.payload)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        levels = message.topic.split("/")
        with self.lock:
            if levels[-2] == "results":
                if data.get("status") not in ACK_STATES:
                    self.finals.setdefault(levels[-1], []).append(data)
                    if data.get("status") != "rejected":
                        self.first_result.setdefault(levels[-1], time.time())
            elif levels[-1] == "health":
                self.health[levels[-2]] = str(data.get("state"))
            elif levels[-1] == "warble" and isinstance(data.get("id"), str):
                node, job_id = levels[-3], data["id"]
                if data.get("state") == "running":
                    self.running.setdefault(node, {})[job_id] = data.get("attempt")
                elif data.get("state") == "done":
                    self.running.get(node, {}).pop(job_id, None)
                    output = (data.get("result") or {}).get("output")
                    self.worker_outputs.setdefault(job_id, []).append((node, data.get("attempt"), output))

    def healthy(self, nodes: list[str]) -> bool:
        with self.lock:
            return all(self.health.get(n) == "online" for n in nodes)

    def busiest(self, nodes: list[str]) -> str:
        with self.lock:
            return max(nodes, key=lambda n: (len(self.running.get(n, {})), random.random()))

    def running_on(self, node: str) -> int:
        with self.lock:
            return len(self.running.get(node, {}))

    def results_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for t in self.first_result.values() if start <= t < end)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class HostileClient:
    """Mallory, throughout: everything the server must survive (docs/protocol.md, issue 10's items)."""

    def __init__(self, port: int, workers: list[str], seed: int):
        self.port = port
        self.workers = workers
        self.random = random.Random(seed)
        self.sent: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()          # status (and rejection reason) of answers to its ids
        self.misdirected: list[str] = []                # answers on topics outside the allow-list
        self.known_ids: list[str] = []                  # ids seen on results/+ (anyone's): flood material
        self.disconnects = 0
        self.kamikaze_kicked = 0
        self._users = 0
        self._ids: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.client = v5_client(f"mallory-{uuid.uuid4().hex[:6]}", port)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self._count_disconnect()
        self.client.on_message = self._on_message
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, name="hostile", daemon=True)

    def _count_disconnect(self) -> None:
        self.disconnects += 1

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe([(f"{PREFIX}/warble/results/+", 1), ("garage/#", 1), ("home/#", 1),
                              (f"{PREFIX}/replies/#", 1)])

    def _on_message(self, client, userdata, message) -> None:
        topic = message.topic
        if not topic.startswith(f"{PREFIX}/"):
            self.misdirected.append(topic)
            return
        if not topic.startswith(f"{PREFIX}/warble/results/"):
            return
        job_id = job_of(topic)
        with self._lock:
            if len(self.known_ids) < 20000:
                self.known_ids.append(job_id)
            if job_id not in self._ids:
                return
        try:
            answer = json.loads(message.payload)
            reason = (answer.get("error") or {}).get("reason") if answer.get("status") == "rejected" else None
            self.answers[f"{answer.get('status')}{'/' + reason if reason else ''}"] += 1
        except (ValueError, AttributeError):
            self.answers["unreadable"] += 1

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.client.loop_stop()
        self.client.disconnect()

    # ------------------------------------------------------------ the attacks

    def _publish(self, kind: str, topic: str, payload, properties: Properties | None = None) -> None:
        try:
            self.client.publish(topic, payload, qos=1, properties=properties)
            self.sent[kind] += 1
        except (ValueError, TypeError) as exc:   # paho itself refused (a wildcard in a topic name...)
            self.sent[f"{kind} (refused by paho: {type(exc).__name__})"] += 1

    def _new_id(self) -> str:
        job_id = f"m{uuid.uuid4().hex[:12]}"
        with self._lock:
            self._ids.add(job_id)
        return job_id

    def _submit(self, kind: str, request, properties: Properties | None = None) -> None:
        if isinstance(request, dict) and "id" not in request:
            request = {"id": self._new_id(), **request}
        payload = request if isinstance(request, bytes) else json.dumps(request)
        self._publish(kind, f"{PREFIX}/warble/submit", payload, properties)

    def _user(self) -> str:
        self._users += 1
        return f"mallory-{self._users}"

    def malformed(self) -> None:
        user = self._user()
        self._submit("malformed", self.random.choice([
            b"\xff\xfe\xfa not UTF-8", b"{", b"[1, 2, 3]", b"null", b'"just a string"', b"{}",
            json.dumps({"user": user, "source": 5}).encode(), json.dumps({"user": user}).encode(),
            json.dumps({"id": "a/b", "user": user, "source": "PRINT(1)"}).encode(),
            json.dumps({"id": "a+b", "user": user, "source": "PRINT(1)"}).encode(),
            json.dumps({"id": "#", "user": user, "source": "PRINT(1)"}).encode(),
            json.dumps({"id": "x" * 65, "user": user, "source": "PRINT(1)"}).encode(),
            json.dumps({"id": "\uffff", "user": user, "source": "PRINT(1)"}).encode(),
            json.dumps({"id": ["list"], "user": user, "source": "PRINT(1)"}).encode(),
            json.dumps({"user": "a/b", "source": "PRINT(1)"}).encode(),
            json.dumps({"user": "+", "source": "PRINT(1)"}).encode(),
            json.dumps({"user": "\u0000", "source": "PRINT(1)"}).encode(),
            json.dumps({"user": "u" * 65, "source": "PRINT(1)"}).encode(),
            json.dumps({"user": user, "source": "PRINT(" + "1" * 5000 + ")"}).encode(),
            json.dumps({"user": user, "source": "PRINT("}).encode(),
            json.dumps({"user": user, "source": "NOSUCHTHING(1)"}).encode(),
            json.dumps({"user": user, "source": "#pi{"}).encode(),
            b'{"a":' * 20000 + b"1" + b"}" * 20000,          # nested past any parser's recursion limit
            b"#pi{PRINT(1)}" + b" " * 200_000,               # a 200 kB post
        ]))

    def bad_reply_topics(self) -> None:
        reply_to = self.random.choice([
            f"{PREFIX}/replies/\u0001x", f"{PREFIX}/replies/\uffff", f"{PREFIX}/replies/a\u0000b",
            f"{PREFIX}/replies/\ud800", "garage/door/cmd", "home/garage/set",
            f"{PREFIX}/nodes/{self.random.choice(self.workers)}/cmd/warble", f"{PREFIX}/nodes/server/status",
            f"{PREFIX}/warble/submit", f"{PREFIX}/replies/#", f"{PREFIX}/replies/+/x", f"{PREFIX}/replies",
            f"{PREFIX}/replies/" + "x" * 600, 5, ["a"], {"t": 1}, f"{PREFIX}/replies/mallory"])
        self._submit("reply_to outside the allow-list or with control characters",
                     {"user": self._user(), "source": "PRINT(1)", "reply_to": reply_to})

    def bad_properties(self) -> None:
        """User properties the server must refuse (control characters: on a throw-away connection, `kamikaze`)."""
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = [self.random.choice([
            ("client_id", "c" * 300), ("client_id", ""), ("client_id", "a/b#+"), ("user", "a/b"), ("user", "#")])]
        self._submit("v5 user properties oversized, empty or with wildcards",
                     {"user": self._user(), "source": "PRINT(1)"}, properties)

    def rotating_users(self) -> None:
        self._submit("valid program, rotating user names", {"user": self._user(), "source": "PRINT(1)"})

    def node_poison(self) -> None:
        worker = self.random.choice(self.workers)
        topic, payload = self.random.choice([
            (f"{PREFIX}/nodes/evil/info", {"id": "a+b", "cpu_count": "many", "capabilities": ["warble"]}),
            (f"{PREFIX}/nodes/evil/reply/ping", {"node": "a+b", "seq": 1}),
            (f"{PREFIX}/nodes/a b/reply/ping", {"node": "a b", "seq": 1}),
            (f"{PREFIX}/nodes/{worker}/reply/ping", {"node": "evil", "seq": 10 ** 12}),
            (f"{PREFIX}/registry/forget", {"nodes": ["a+b", "x\u0001", "#"], "reply_to": f"{PREFIX}/replies/\u0001"}),
            (f"{PREFIX}/registry/forget", {"nodes": "a+b", "reply_to": "garage/door/cmd"}),
            (f"{PREFIX}/warble/history", {"user": "honest-1", "reply_to": f"{PREFIX}/replies/\uffff"}),
            (f"{PREFIX}/warble/history", {"user": 5, "reply_to": f"{PREFIX}/replies/mallory"}),
            (f"{PREFIX}/warble/history", {"user": "honest-1", "reply_to": f"{PREFIX}/replies/mallory"}),
        ])
        self._publish("node id with '+', forged ping answers, forget and history requests", topic,
                      json.dumps(payload))

    def forged_worker_traffic(self) -> None:
        """Junk and forgeries on the workers' topics, with attempts that hold no job (999, not numbers)."""
        worker = self.random.choice(self.workers)
        with self._lock:
            victim = self.random.choice(self.known_ids) if self.known_ids else "nothing"
        topic, payload = self.random.choice([
            (f"{PREFIX}/nodes/{worker}/cmd/warble", b"not json"),
            (f"{PREFIX}/nodes/{worker}/cmd/warble", {"id": "x", "source": "PRINT(1)"}),
            (f"{PREFIX}/nodes/{worker}/cmd/warble", {"id": 5, "source": "PRINT(1)", "attempt": 1}),
            (f"{PREFIX}/nodes/{worker}/cmd/warble", {"id": f"forged-{uuid.uuid4().hex[:8]}", "user": "honest-1",
                                                     "source": 'SAVE("stolen",1);PRINT(1)', "attempt": 1}),
            (f"{PREFIX}/nodes/{worker}/cmd/warble_revoke", {"id": victim, "attempt": "1"}),
            (f"{PREFIX}/nodes/{worker}/cmd/warble_store", {"correlation": "nobody", "value": ["int", "7"]}),
            (f"{PREFIX}/nodes/{worker}/cmd/ping", {"seq": "x" * 1000}),
            (f"{PREFIX}/nodes/{worker}/reply/warble", {"id": victim, "attempt": 999, "state": "done",
                                                       "result": {"status": "ok", "output": ["666"]}}),
            (f"{PREFIX}/nodes/{worker}/reply/warble", {"id": victim, "attempt": True, "state": "running"}),
            (f"{PREFIX}/nodes/{worker}/reply/warble", {"id": victim, "attempt": "1", "state": "done"}),
            (f"{PREFIX}/nodes/{worker}/reply/warble_store", {
                "op": "save", "user": "honest-1", "name": f"c{victim}", "value": ["int", "99"], "job": victim,
                "attempt": 999, "correlation": "forged"}),
            (f"{PREFIX}/nodes/{worker}/reply/warble_store", {"op": "load", "user": ["x"], "name": None}),
        ])
        self._publish("forged or malformed worker traffic", topic,
                      payload if isinstance(payload, bytes) else json.dumps(payload))

    def kamikaze(self) -> None:
        """Protocol-level junk, on a connection of its own that the broker may well close."""
        if self.random.random() < 0.5:
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as s:
                    s.sendall(bytes([0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]) + os.urandom(64))
                    s.settimeout(0.5)
                    s.recv(16)
            except OSError:
                pass
            self.sent["raw garbage on a fresh TCP connection"] += 1
            return
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"mallory-k-{uuid.uuid4().hex[:6]}",
                             protocol=mqtt.MQTTv5)
        gone = threading.Event()
        client.on_disconnect = lambda *a: gone.set()
        try:
            client.connect(HOST, self.port, keepalive=5)
            client.loop_start()
            properties = Properties(PacketTypes.PUBLISH)
            if self.random.random() < 0.5:
                properties.ResponseTopic = self.random.choice([f"{PREFIX}/replies/\u0001", f"{PREFIX}/replies/\uffff",
                                                               f"{PREFIX}/replies/#"])
            else:
                properties.UserProperty = [self.random.choice([("client_id", "x\u0001y"), ("user", "m\u0007")])]
            properties.CorrelationData = b"\x00\xff"
            client.publish(f"{PREFIX}/warble/submit", json.dumps({"id": self._new_id(), "user": self._user(),
                                                                  "source": "PRINT(1)"}), 1, properties=properties)
            if gone.wait(1.0):
                self.kamikaze_kicked += 1
        except (OSError, ValueError):
            pass
        finally:
            client.loop_stop()
            client.disconnect()
        self.sent["v5 response topic or user property with control characters (own connection)"] += 1

    def flood(self, seconds: float, per_second: int) -> None:
        """Re-submissions of known ids, anyone's, as fast as allowed: no more answers than one retrying client."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self._stop.is_set():
            with self._lock:
                ids = self.random.sample(self.known_ids, min(len(self.known_ids), per_second // 10))
            for job_id in ids:
                self._publish("re-submission flood (known ids, anyone's)", f"{PREFIX}/warble/submit",
                              json.dumps({"id": job_id, "user": "mallory", "source": "PRINT(1)"}))
            time.sleep(0.1)

    def _run(self) -> None:
        attacks = [self.malformed, self.bad_reply_topics, self.bad_properties, self.rotating_users,
                   self.node_poison, self.forged_worker_traffic]
        next_flood = time.monotonic() + 5
        while not self._stop.is_set():
            for attack in self.random.sample(attacks, 4):
                attack()
            if self.random.random() < 0.1:
                self.kamikaze()
            if time.monotonic() >= next_flood:
                self.flood(2.0, 400)
                next_flood = time.monotonic() + 15
            self._stop.wait(0.5)


# ---------------------------------------------------------------- the soak

class Soak:
    def __init__(self, args, work: Path):
        self.args = args
        self.work = work
        self.schedule = Schedule.quick() if args.quick else Schedule.default()
        if args.gap is not None:
            self.schedule.gap = args.gap
        self.timeline = Timeline()
        self.broker = Broker(work / "broker", ROOT / "config" / "mosquitto.conf")
        self.disk = StateDisk(work / "server-state", TMPFS_SIZE_MB)
        self.server = NodeProcess("server", server_config(self.broker, self.disk.path), work)
        self.workers = [NodeProcess(f"worker-{i}", worker_config(f"worker-{i}", self.broker, work), work)
                        for i in range(1, WORKERS + 1)]
        self.clients: list[HonestClient] = []
        self.watch: ClusterWatch | None = None
        self.hostile: HostileClient | None = None
        self.unexpected_exits: list[str] = []
        self.disk_full_report: str | None = None
        self._ticking = threading.Event()

    # ------------------------------------------------------------ start and stop

    def start(self) -> None:
        self.broker.start()
        self.server.start()
        for worker in self.workers:
            worker.start()
        self.watch = ClusterWatch(self.broker.port)
        names = [w.name for w in self.workers]
        deadline = time.monotonic() + 90
        while not self.watch.healthy(names):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not healthy within 90 s: {self.watch.health}")
            time.sleep(0.2)
        self.clients = [HonestClient(i, self.broker.port, self.args.rate) for i in range(1, self.args.clients + 1)]
        self.hostile = HostileClient(self.broker.port, names, self.args.seed)
        threading.Thread(target=self._drive, name="driver", daemon=True).start()

    def _drive(self) -> None:
        self._ticking.set()
        while self._ticking.is_set():
            for client in self.clients:
                client.tick()
            time.sleep(0.1)

    def stop(self) -> None:
        self._ticking.clear()
        if self.hostile:
            self.hostile.stop()
        for client in self.clients:
            client.close()
        if self.watch:
            self.watch.close()
        for node in [self.server, *self.workers]:
            if node.process is not None and not node.alive() and not node.stopped:
                self.unexpected_exits.append(f"{node.name} (exit status {node.process.returncode})")
        for node in [*self.workers, self.server]:
            node.terminate()
        self.broker.stop()

    def cleanup(self, keep: bool) -> None:
        for node in [self.server, *self.workers]:
            if node.alive():
                node.signal_group(signal.SIGKILL)
        if self.broker.process and self.broker.process.poll() is None:
            self.broker.stop(signal.SIGKILL)
        if keep and self.disk.mounted:
            shutil.copytree(self.disk.path, self.work / "server-state-copy",
                            ignore=shutil.ignore_patterns("filler"))
        self.disk.unmount()

    # ------------------------------------------------------------ phases

    def phase(self, name: str, action) -> None:
        start = time.time()
        submitted = self.submitted_count()
        self.timeline.note(f"{name}: start")
        detail = action() or ""
        disrupted = time.time()
        time.sleep(self.schedule.gap if action != self.steady else 0)
        end = time.time()
        self.timeline.phases.append({"name": name, "start": start, "disrupted": disrupted, "end": end,
                                     "submitted": self.submitted_count() - submitted,
                                     "results": self.watch.results_between(start, end), "detail": detail})

    def submitted_count(self) -> int:
        return sum(len(c.jobs) for c in self.clients)

    def steady(self) -> str:
        time.sleep(self.schedule.warmup)
        return ""

    def broker_restart(self, sig: int) -> str:
        self.timeline.broker_stopping()
        self.broker.stop(sig)
        time.sleep(self.schedule.broker_down)
        self.broker.start()
        self.timeline.broker_back()
        down, up = self.timeline.broker_down[-1]
        return f"down {up - down:.1f} s; {self.server_back(up)}"

    def server_back(self, since: float) -> str:
        """When the server was connected again (its log), after `since`: the reconnect backoff shows here."""
        deadline = time.monotonic() + self.schedule.gap
        while time.monotonic() < deadline:
            times = [t for t, _, m in log_entries(self.server.log_path)
                     if t is not None and t >= since - LOG_SLACK and "connected to broker" in m and "lost" not in m]
            if times:
                return f"server connected again {times[0] - since:.1f} s later"
            time.sleep(0.2)
        return "server not connected again within the gap"

    def worker_kill(self) -> str:
        worker = self._worker(self.watch.busiest([w.name for w in self.workers]))
        running = self.watch.running_on(worker.name)
        worker.signal_group(signal.SIGKILL)
        time.sleep(self.schedule.worker_down)
        worker.start()
        return f"{worker.name}, {running} jobs running on it by its replies, back after {self.schedule.worker_down:g} s"

    def worker_stop(self) -> str:
        worker = self._worker(self.watch.busiest([w.name for w in self.workers]))
        running = self.watch.running_on(worker.name)
        worker.signal_group(signal.SIGSTOP)
        time.sleep(self.schedule.stop)
        worker.signal_group(signal.SIGCONT)
        return (f"{worker.name}, {running} jobs running on it by its replies, stopped {self.schedule.stop:g} s "
                f"(lease {LEASE:g} s)")

    def server_kill(self) -> str:
        self.timeline.server_down.append([time.time(), float("inf")])
        self.server.signal_group(signal.SIGKILL)
        time.sleep(self.schedule.server_down)
        self.server.start()
        self.timeline.server_down[-1][1] = started = time.time()
        return f"started again after {self.schedule.server_down:g} s; {self.server_back(started)}"

    def disk_full(self) -> str:
        if not self.disk.mounted:
            self.disk_full_report = f"SKIPPED: {self.disk.skip_reason}"
            return self.disk_full_report
        used = self.disk.used_bytes()
        left = self.disk.fill()
        time.sleep(self.schedule.disk_full)
        self.disk.free()
        self.disk_full_report = (f"ran: tmpfs of {TMPFS_SIZE_MB} MB, the server's files {used / 2**20:.1f} MB, "
                                 f"filled to {left} bytes free for {self.schedule.disk_full:g} s")
        return self.disk_full_report

    def _worker(self, name: str) -> NodeProcess:
        return next(w for w in self.workers if w.name == name)

    def run(self) -> None:
        self.timeline.note("cluster up: mosquitto, server, 4 workers healthy; clients start")
        for client in self.clients:
            client.creating = True
        self.hostile.start()
        self.phase("steady", self.steady)
        self.phase("broker restart (SIGTERM)", lambda: self.broker_restart(signal.SIGTERM))
        self.phase("broker SIGKILL", lambda: self.broker_restart(signal.SIGKILL))
        self.phase("worker SIGKILL", self.worker_kill)
        self.phase("worker SIGSTOP", self.worker_stop)
        self.phase("server SIGKILL", self.server_kill)
        self.phase("disk full", self.disk_full)
        for client in self.clients:
            client.creating = False
        self.drain()

    def drain(self) -> None:
        start = time.time()
        self.timeline.note("submissions stop; waiting for the open jobs")
        deadline = time.monotonic() + self.schedule.drain
        while time.monotonic() < deadline and sum(c.open_count() for c in self.clients):
            time.sleep(0.5)
        for round_ in (1, 2):
            open_ids = sum(c.submit_open_again() for c in self.clients)
            self.timeline.note(f"final round {round_}: {open_ids} open ids submitted again")
            if not open_ids:
                break
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and sum(c.open_count() for c in self.clients):
                time.sleep(0.5)
        end = time.time()
        self.timeline.phases.append({"name": "drain and final round", "start": start, "disrupted": start,
                                     "end": end, "submitted": 0, "results": self.watch.results_between(start, end),
                                     "detail": ""})


# ---------------------------------------------------------------- the ledger

def read_rows(path: Path, query: str) -> list[tuple]:
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def log_entries(path: Path):
    """(epoch seconds, level, message) of each JSON log line of a node; other lines as (None, '', line)."""
    if not path.exists():
        return
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            stamp = datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            yield stamp.timestamp(), entry.get("level", ""), entry.get("message", "")
        except (ValueError, KeyError, TypeError):
            yield None, "", line


# Every line by which mosquitto (2.0) says it dropped a client, rather than the client leaving.
MOSQUITTO_DROPS = re.compile(r"^(\d+): (?:Bad socket read/write on client (?P<a>\S+): (?P<why_a>.*)"
                             r"|Client (?P<b>\S+) (?P<why_b>disconnected due to .*|has exceeded timeout.*"
                             r"|already connected, closing old connection.*)"
                             r"|Socket error on client (?P<c>\S+), disconnecting.*)$")


class Ledger:
    def __init__(self, soak: Soak):
        self.soak = soak
        self.lines: list[str] = []
        self.failures: list[str] = []

    def out(self, text: str = "") -> None:
        self.lines.append(text)

    def build(self, jobs_db: Path, store_db: Path) -> None:
        soak = self.soak
        jobs = {j.id: j for c in soak.clients for j in c.jobs.values()}
        stored = {row[0]: row for row in read_rows(jobs_db, "SELECT id, state, attempts, node, result FROM jobs")}
        counts = {(user, name): (kind, value) for user, name, kind, value in
                  read_rows(store_db, "SELECT user, name, kind, value FROM warble_values")}
        self.jobs_ledger(jobs, stored, counts)
        forged = sorted((u, n, v) for (u, n), (_, v) in counts.items() if n == "stolen" or v == "99")
        self.out(f"  store values the hostile forged that got in: {len(forged)} {forged[:5] if forged else ''}")
        self.figures["forged store writes"] = len(forged)
        self.disconnects()
        self.hostile_and_server()
        self.phases()

    def jobs_ledger(self, jobs: dict[str, SoakJob], stored: dict, counts: dict) -> None:
        soak = self.soak
        acknowledged = [j for j in jobs.values() if j.acknowledged]
        with_result = [j for j in jobs.values() if j.finals]
        rejected = [j for j in jobs.values() if j.rejection is not None]
        never_answered = [j for j in jobs.values() if not j.acknowledged and j.rejection is None and not j.finals]
        lost = [j for j in acknowledged if not j.finals]
        statuses = Counter(j.finals[0][1].get("status") for j in with_result)
        reasons = Counter((j.rejection.get("error") or {}).get("reason") for j in rejected)
        duplicated, ran_twice, notes, causes = [], [], [], Counter()
        requeues: dict[str, list[tuple[float, str]]] = {}
        for t, _, message in log_entries(soak.server.log_path):
            requeued = re.search(r"job (\S+) (re-queued .*|failed: .*)", message)
            if t is not None and requeued:
                requeues.setdefault(requeued[1], []).append((t, requeued[2]))
        with soak.watch.lock:
            watched = {k: list(v) for k, v in soak.watch.finals.items()}
            worker_outputs = {k: list(v) for k, v in soak.watch.worker_outputs.items()}
        for job in jobs.values():
            answers = [a for _, a in job.finals] + [a for a in watched.get(job.id, []) if a.get("status") != "rejected"]
            row = stored.get(job.id)
            if row is not None and row[4] and job.finals:
                answers.append({"id": job.id, "user": job.user, **json.loads(row[4])})
            kind_value = counts.get((job.user, f"c{job.id}"))
            count = int(kind_value[1]) if kind_value and kind_value[0] == "int" else 0
            printed = {line for a in answers for line in (a.get("output") or [])}
            handed_out = row[2] if row else 0   # a reply naming another attempt is a forgery (the hostile's)
            printed |= {line for _, attempt, out in worker_outputs.get(job.id, [])
                        if isinstance(attempt, int) and 1 <= attempt <= handed_out for line in (out or [])}
            if len({canonical(a) for a in answers}) > 1 or (job.finals and count > 1):
                duplicated.append(job.id)
            if count > 1 or printed - {"1"}:
                ran_twice.append(job.id)
                causes[soak.timeline.phase_at(requeues[job.id][0][0]) if job.id in requeues else "no re-queue"] += 1
                notes.append(f"    {job.id}: stored count {count}, printed {sorted(printed)}, attempts "
                             f"{row[2] if row else '?'}, worker replies {worker_outputs.get(job.id)}"
                             + "".join(f"; {t - soak.timeline.t0:.1f} s ({soak.timeline.phase_at(t)}): {m}"
                                       for t, m in requeues.get(job.id, [])))
            if job.finals and job.finals[0][1].get("status") == "ok" and count == 0:
                notes.append(f"    {job.id}: result ok but no stored count (a SAVE reported done that is not there)")
            if job.after_rejection:
                notes.append(f"    {job.id}: answered {[a.get('status') for a in job.after_rejection]} after "
                             f"being {'rejected' if job.rejection else 'acknowledged'}")
        self.figures = {"lost": len(lost), "never answered": len(never_answered), "duplicated": len(duplicated),
                        "ran twice": len(ran_twice)}
        attempts = Counter(stored[j.id][2] for j in with_result if j.id in stored)
        self.out(f"ledger of the honest clients ({len(soak.clients)} clients x {soak.args.rate:g} jobs/s, "
                 f"each id submitted until answered):")
        self.out(f"  submitted       {len(jobs):6d}  distinct ids")
        self.out(f"  acknowledged    {len(acknowledged):6d}  answered queued, dispatched, running or with a result")
        self.out(f"  results         {len(with_result):6d}  final answers: "
                 + ", ".join(f"{s} {n}" for s, n in statuses.most_common())
                 + f"; dispatched {', '.join(f'{n} jobs {a}x' for a, n in sorted(attempts.items()))}")
        self.out(f"  rejected        {len(rejected):6d}  " + (", ".join(f"{r} {n}" for r, n in reasons.most_common())
                                                            or "none"))
        self.out(f"  never answered  {len(never_answered):6d}  submitted again and again, no answer at all")
        self.out(f"  lost            {len(lost):6d}  acknowledged, no final answer after the final re-submission round")
        self.out(f"  duplicated      {len(duplicated):6d}  one id, final answers that differ (from each other or from "
                 f"the stored result), or a result whose stored count is above 1")
        self.out(f"  ran twice       {len(ran_twice):6d}  stored count above 1, or a run printed more than 1"
                 + ("; by the phase of their first re-queue: "
                    + ", ".join(f"{c} {n}" for c, n in causes.most_common()) if causes else ""))
        resends = sum(j.sends for j in jobs.values()) - len(jobs)
        reconnections = sum(c.reconnections - 1 for c in soak.clients)
        self.out(f"  (re-submissions of the same id: {resends}; client reconnections: {reconnections})")
        for line in notes[:20]:
            self.out(line)
        for name, ids in (("lost", lost), ("never answered", never_answered)):
            for job in ids[:10]:
                row = stored.get(job.id)
                self.out(f"    {name}: {job.id} sends {job.sends}, stored {row[1:4] if row else 'not in the queue'}")
        for job_id in duplicated[:10]:
            self.out(f"    duplicated: {job_id}")

    def disconnects(self) -> None:
        soak, timeline = self.soak, self.soak.timeline
        lost_lines = {}
        for node in [soak.server, *soak.workers]:
            times = [t for t, _, message in log_entries(node.log_path)
                     if t is not None and "lost connection to broker" in message]
            lost_lines[node.name] = (len(times), [t for t in times if not timeline.broker_was_down(t)])
        nodes = {soak.server.name, *(w.name for w in soak.workers)}
        node_drops, other_drops, server_drops = Counter(), Counter(), []
        for line in soak.broker.log_path.read_text(errors="replace").splitlines():
            match = MOSQUITTO_DROPS.match(line)
            if not match:
                continue
            client = match["a"] or match["b"] or match["c"]
            why = (match["why_a"] or match["why_b"] or "socket error").rstrip(".")
            if client not in nodes:
                other_drops[why] += 1
                continue
            node_drops[(client, why)] += 1
            # mosquitto's log has whole seconds; the server's own death (our SIGKILL) explains a socket error
            if client == soak.server.name and not timeline.server_was_down(int(match[1]), slack=1.5):
                server_drops.append((int(match[1]), why))
        total, forced = lost_lines["server"]
        self.figures["forced disconnects"] = len(forced) + len(server_drops)
        self.out()
        self.out(f"server's forced disconnects: {len(forced) + len(server_drops)}  (its log: {total} lost "
                 f"connections, {len(forced)} of them while the broker was up; mosquitto's log: {len(server_drops)} "
                 f"times it dropped the server: malformed packet, protocol error, timeout, socket error, take-over)")
        for t in forced:
            self.out(f"    the server lost the broker at {t - timeline.t0:.1f} s ({timeline.phase_at(t)}), "
                     f"the broker up")
        for t, why in server_drops:
            self.out(f"    mosquitto dropped the server at {t - timeline.t0:.0f} s: {why}")
        workers_forced = {n: len(f) for n, (_, f) in lost_lines.items() if n != soak.server.name and f}
        self.out(f"workers: {sum(t for n, (t, _) in lost_lines.items() if n != soak.server.name)} lost connections, "
                 f"{sum(workers_forced.values())} while the broker was up {workers_forced or ''}")
        for (client, why), n in sorted(node_drops.items()):
            self.out(f"  mosquitto dropped node {client}: {why} ({n}x)")
        self.out(f"other clients mosquitto dropped (the hostile's): {sum(other_drops.values())}"
                 + "".join(f"; {why} {n}" for why, n in other_drops.most_common()))

    def hostile_and_server(self) -> None:
        soak = self.soak
        hostile = soak.hostile
        self.out()
        self.out(f"hostile client: {sum(hostile.sent.values())} messages; its own connection dropped "
                 f"{hostile.disconnects} times (broker restarts included); "
                 f"{hostile.kamikaze_kicked} throw-away connections closed by the broker")
        for kind, n in hostile.sent.most_common():
            self.out(f"  {n:6d}  {kind}")
        self.out(f"  answers to its ids: {', '.join(f'{k} {n}' for k, n in hostile.answers.most_common())}")
        self.out(f"  answers published outside {PREFIX}/ (garage/#, home/#): {len(hostile.misdirected)}")
        self.out(f"  processes that ended on their own: {', '.join(soak.unexpected_exits) or 'none'}")
        errors, payload_errors = Counter(), Counter()
        refusals = 0
        for t, level, message in log_entries(soak.server.log_path):
            if level == "error" or (t is None and message.startswith("Traceback")):
                text = re.sub(r"\b[0-9a-f]{12,}\b", "<id>", message.replace("[server] ", ""))
                refused = re.search(r"could not handle a message on (\S+): PayloadError", text)
                if refused:
                    payload_errors[re.sub(r"/nodes/[^/]+/", "/nodes/+/", refused[1])] += 1
                else:
                    errors[text[:150]] += 1
            if "refused to publish" in message:
                refusals += 1
        self.out(f"  server log: {sum(payload_errors.values())} refusals of malformed messages (PayloadError, "
                 f"logged once per distinct message) on "
                 + ", ".join(f"{topic} {n}" for topic, n in payload_errors.most_common())
                 + f"; {refusals} publishes its bus refused (invalid topics); {sum(errors.values())} other errors:")
        for message, n in errors.most_common(8):
            self.out(f"    {n:5d}  {message}")

    def phases(self) -> None:
        soak, t0 = self.soak, self.soak.timeline.t0
        self.out()
        self.out(f"disk-full phase: {soak.disk_full_report or 'not reached'}")
        self.out("phases (time from the start, disruption, steady traffic after it):")
        for p in soak.timeline.phases:
            took = p["end"] - p["start"]
            self.out(f"  {p['name']:<26} at {p['start'] - t0:6.1f} s  {p['disrupted'] - p['start']:5.1f} s + "
                     f"{p['end'] - p['disrupted']:5.1f} s  submitted {p['submitted']:5d}  results {p['results']:5d} "
                     f"({p['results'] / took if took else 0:5.1f}/s)  {p['detail']}")
        phases = soak.timeline.phases
        span = phases[-1]["end"] - phases[0]["start"]
        results = sum(p["results"] for p in phases)
        self.out(f"throughput: {results} final answers (honest and hostile) in {span:.0f} s = {results / span:.1f}/s")

    def verdict(self) -> int:
        figures = self.figures
        bad = {k: v for k, v in figures.items() if v}
        self.out()
        self.out("goal: lost, never answered, duplicated, ran twice, forced disconnects, forged store writes all 0: "
                 + ("met" if not bad else "NOT met: " + ", ".join(f"{k} {v}" for k, v in bad.items())))
        return 1 if bad else 0


def header(soak: Soak) -> str:
    settings = soak.broker.settings
    broker = ", ".join(f"{key} {settings[key]}" for key in ("persistence", "autosave_interval"))
    state = (f"a tmpfs of {TMPFS_SIZE_MB} MB" if soak.disk.mounted
             else f"the shared disk ({soak.disk.skip_reason}: the disk-full phase will be skipped)")
    return (f"attack soak: mosquitto ({broker}, port {soak.broker.port}), 1 server, {WORKERS} workers x {SLOTS} "
            f"slots, lease {LEASE:g} s, pings every {PING_INTERVAL:g} s (unhealthy after {MISSED_PINGS} missed); "
            f"server state on {state}; in {soak.work}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute instead of a few")
    parser.add_argument("--clients", type=int, default=4, help="honest submitting clients")
    parser.add_argument("--rate", type=float, default=4.0, help="new jobs per second per honest client")
    parser.add_argument("--gap", type=float, default=None, help="seconds of steady traffic after each disruption")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and say where it is")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pidaemon-attack-soak-"))
    soak = Soak(args, work)
    try:
        soak.disk.mount()
        print(header(soak), flush=True)
        soak.start()
        soak.run()
        soak.stop()
        ledger = Ledger(soak)
        ledger.build(soak.disk.path / "jobs.sqlite3", soak.disk.path / "store.sqlite3")
        code = ledger.verdict()
        print()
        print("\n".join(ledger.lines))
        return code
    finally:
        soak.cleanup(args.keep)
        if args.keep:
            print(f"kept: {work} (the server's state files, from the tmpfs: server-state-copy)")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
