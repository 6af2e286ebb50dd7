"""`pidaemon submit`: what it says when the cluster cannot run a job, its progress, its errors, its retries.

Real mosquitto (or the embedded amqtt broker where a 3.1.1-only broker is needed) and real daemons; the
command runs in a thread (its output captured) or, where signals matter, as a process.  Time bounds
only catch hangs: "within a few seconds" is checked as well under the 60 s default timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pidaemon.submit_cli import add_commands
from tests.support.control_plane import registry_nodes
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.nodes import make_daemon
from tests.support.observer import Observer
from tests.support.warble_cluster import (
    InProcessCluster,
    server_plugins,
    wait_until,
    worker_plugins,
)

ROOT = Path(__file__).resolve().parents[2]

HANG = 20.0  # seconds: a command still running after Ctrl-C this long has hung (a bound on failure only)


def run_submit(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pidaemon")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["submit", *argv])
    return args.func(args)


def submit_process(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pidaemon", "submit", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def registry_says(observer, **states) -> None:
    """Wait until the retained registry gives these nodes these states."""
    await wait_until(lambda: all(registry_nodes(observer).get(node.replace("_", "-"), {}).get("state") == state
                                 for node, state in states.items()), what=f"retained registry with {states}")


def job_id_in(text: str) -> str:
    return re.search(r"queued as ([0-9a-z\-]+)", text).group(1)


# ---------------------------------------------------------------- nobody to run it

def test_a_job_queued_while_no_worker_is_online_says_so_and_runs_later(broker, observer, tmp_path, capsys):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1) as cluster:
            worker = cluster.workers.pop()
            await worker.shutdown()
            await registry_says(observer, server="online", worker_1="offline")
            queued = await asyncio.to_thread(run_submit, "PRINT(1)", "--broker", broker.url)
            queued_text = capsys.readouterr().err
            waited = await asyncio.to_thread(run_submit, "PRINT(6*7)", "--wait", "--broker", broker.url,
                                             "--timeout", "3")
            waited_text = capsys.readouterr()
            job = job_id_in(waited_text.err)
            # A worker comes: the job runs; submitting its id again shows its result.
            cluster.workers.append(worker := make_daemon("worker-1", broker.url, plugins=worker_plugins()))
            await worker.start()
            again = await asyncio.to_thread(run_submit, "PRINT(6*7)", "--id", job, "--wait", "--broker", broker.url,
                                            "--timeout", "30")
            return queued, queued_text, waited, waited_text, job, again, capsys.readouterr()

    queued, queued_text, waited, waited_text, job, again, again_text = asyncio.run(scenario())
    assert queued == 0
    assert re.fullmatch(r"queued as [0-9a-f]{16}, waiting for a worker: no worker able to run Warble is online "
                        r"\(server server is online; its registry, updated \d+s ago, knows 1 such worker: 1 offline\); "
                        r"the job runs when one comes online\n", queued_text), queued_text
    assert waited == 3 and waited_text.out == ""
    assert "waiting for a worker: no worker able to run Warble is online" in waited_text.err
    assert waited_text.err.splitlines()[-1] == (
        f"no result within 3 s: job {job} is still queued: no worker able to run Warble is online; it stays on "
        f"the server (submit with --id {job} --wait to see its result later)")
    assert again == 0 and again_text.out == "42\n", again_text


def test_no_server_at_all_is_said_within_seconds(broker, capsys):
    code = run_submit("PRINT(1)", "--wait", "--broker", broker.url)  # --timeout 60 by default
    err = capsys.readouterr().err
    assert code == 3   # not the 60 s timeout: its message would be "no answer within 60 s"
    assert err.startswith(f"no server is running: nothing is retained on picluster/registry at {broker.url}, so no "
                          f"server (plugins registry and warble_server) has run there with prefix 'picluster'\n"
                          f"submission ")
    assert "was not acknowledged; start the server and submit again (with --id " in err


def test_a_stopped_server_is_said_within_seconds(broker, observer, tmp_path, capsys):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1):
            await registry_says(observer, server="online", worker_1="online")
        await asyncio.to_thread(observer.wait_for, "picluster/nodes/server/status", "offline")
        code = await asyncio.to_thread(run_submit, "PRINT(1)", "--wait", "--broker", broker.url)
        return code, capsys.readouterr().err

    code, err = asyncio.run(scenario())
    assert code == 3
    # A server that stops cleanly says so in its last registry.
    assert err.startswith("no server is running: server server stopped "), err
    assert "(its registry's last update says so).\nsubmission " in err


# ---------------------------------------------------------------- the broker

def test_mqtt5_against_a_broker_that_speaks_3_1_1_only(capsys):
    from pidaemon.embedded_broker import EmbeddedBroker

    port = free_port()

    async def scenario():
        embedded = EmbeddedBroker("127.0.0.1", port)
        await embedded.start()
        try:
            return await asyncio.to_thread(run_submit, "PRINT(1)", "--wait", "--broker",
                                           f"mqtt://127.0.0.1:{port}", "--protocol", "5")
        finally:
            await embedded.stop()

    code = asyncio.run(scenario())
    assert code == 4
    assert capsys.readouterr().err == (
        f"the broker mqtt://127.0.0.1:{port} refused MQTT 5 (Unsupported protocol version): it does not speak that "
        f"version; use --protocol 3.1.1 (the embedded amqtt broker speaks 3.1.1 only)\n")


def test_an_unreachable_or_silent_broker_is_reported_at_once(capsys):
    code = run_submit("PRINT(1)", "--wait", "--broker", f"mqtt://127.0.0.1:{free_port()}")
    assert code == 4
    assert capsys.readouterr().err.startswith("cannot reach the broker mqtt://127.0.0.1:")
    with socket.socket() as silent:  # accepts TCP connections (the kernel does), never answers CONNECT
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        port = silent.getsockname()[1]
        code = run_submit("PRINT(1)", "--wait", "--broker", f"mqtt://127.0.0.1:{port}", "--timeout", "2")
    assert code == 4
    assert capsys.readouterr().err == (
        f"the broker mqtt://127.0.0.1:{port} accepted a TCP connection but did not answer MQTT's CONNECT within "
        f"2 s (is it an MQTT broker? mqtts:// needs TLS)\n")


# ---------------------------------------------------------------- progress and errors

def test_wait_shows_progress_then_the_output(broker, observer, tmp_path, capsys):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1):
            await registry_says(observer, server="online", worker_1="online")
            code = await asyncio.to_thread(run_submit, "PRINT(6*7)", "--wait", "--broker", broker.url)
            return code, capsys.readouterr()

    code, captured = asyncio.run(scenario())
    assert code == 0 and captured.out == "42\n"
    job = job_id_in(captured.err)
    assert captured.err.splitlines() == [f"queued as {job} (1 worker able to run Warble online)",
                                         "running on worker-1"]


def test_errors_show_the_source_line_and_a_caret(broker, observer, tmp_path, capsys):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1):
            await registry_says(observer, server="online", worker_1="online")
            failed = await asyncio.to_thread(run_submit, "PRINT(1);\nx=1/0", "--wait", "--broker", broker.url)
            failed_text = capsys.readouterr()
            rejected = await asyncio.to_thread(run_submit, "look: #pi{PRINT(2+)} !", "--wait", "--broker", broker.url)
            return failed, failed_text, rejected, capsys.readouterr()

    failed, failed_text, rejected, rejected_text = asyncio.run(scenario())
    assert failed == 1 and failed_text.out == "1\n"
    assert failed_text.err.endswith("error: line 2, column 4: division by zero\n  x=1/0\n     ^\n"), failed_text.err
    assert rejected == 1
    # The position is in the program inside #pi{...}, and so is the caret.
    assert re.search(r"rejected: line 1, column (\d+): .*\n  PRINT\(2\+\)\n  ( *)\^\n$", rejected_text.err)
    column, spaces = re.search(r"column (\d+).*\n.*\n  ( *)\^", rejected_text.err).groups()
    assert len(spaces) == int(column) - 1


# ---------------------------------------------------------------- retries

def test_a_submission_lost_in_a_broker_restart_is_submitted_again(broker, observer, tmp_path, capsys):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1) as cluster:
            await registry_says(observer, server="online", worker_1="online")
            # The broker forgets the server's subscription to submissions (a restart without persistence forgets
            # every subscription): the first submission reaches nobody, then the broker restarts.
            server_client = cluster.server.bus.client
            unsubscribed = asyncio.Event()
            server_client.on_unsubscribe = lambda *a: unsubscribed.set()  # the bus sets no such callback
            server_client.unsubscribe("picluster/warble/submit")
            await asyncio.wait_for(unsubscribed.wait(), 10)
            submitted = len(observer.messages)
            command = asyncio.create_task(asyncio.to_thread(
                run_submit, "PRINT(6*7)", "--wait", "--broker", broker.url, "--timeout", "30"))
            await asyncio.to_thread(observer.wait_for, "picluster/warble/submit", since=submitted)
            await asyncio.to_thread(broker.restart)
            code = await command
            return code, capsys.readouterr()

    code, captured = asyncio.run(scenario())
    assert code == 0 and captured.out == "42\n", captured.err
    assert f"lost the connection to the broker {broker.url}; reconnecting\nconnected again\n" in captured.err


def test_submitting_an_id_again_shows_that_jobs_result(broker, observer, tmp_path, capsys):
    """A server that answers a repeated id with the job's state, or one that says nothing (then the job's state
    comes from the user's history, which the command asks for with every re-submission): the result shows."""
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1):
            await registry_says(observer, server="online", worker_1="online")
            first = await asyncio.to_thread(run_submit, "PRINT(5)", "--id", "job-5", "--wait", "--broker", broker.url)
            first_out = capsys.readouterr().out
            again = await asyncio.to_thread(run_submit, "PRINT(5)", "--id", "job-5", "--wait", "--broker", broker.url,
                                            "--json")
            return first, first_out, again, capsys.readouterr().out

    first, first_out, again, again_out = asyncio.run(scenario())
    assert first == 0 and first_out == "5\n"
    assert again == 0
    answers = [json.loads(line) for line in again_out.splitlines()]
    assert answers[-1]["id"] == "job-5" and answers[-1]["status"] == "ok" and answers[-1]["output"] == ["5"]


# ---------------------------------------------------------------- Ctrl-C

def interrupt(process: subprocess.Popen) -> tuple[int, str]:
    """Ctrl-C; its exit code and what it said (a command still running after HANG fails the test)."""
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=HANG)
    return process.returncode, err


def test_ctrl_c_while_waiting_for_a_result(broker, observer, tmp_path):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=0):
            await registry_says(observer, server="online")
            process = submit_process("PRINT(1)", "--wait", "--broker", broker.url)
            first_line = await asyncio.to_thread(process.stderr.readline)  # queued, waiting for a worker
            return first_line, await asyncio.to_thread(interrupt, process)

    first_line, (code, err) = asyncio.run(scenario())
    job = job_id_in(first_line)
    assert code == 130 and "Traceback" not in err
    assert err == f"interrupted; job {job} stays on the server (submit with --id {job} to follow it)\n"


def test_ctrl_c_while_connecting_or_before_the_acknowledgement(broker):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        process = submit_process("PRINT(1)", "--broker", f"mqtt://127.0.0.1:{silent.getsockname()[1]}")
        time.sleep(1)  # in connect(), waiting for a CONNACK that never comes
        code, err = interrupt(process)
    assert code == 130 and err == "interrupted before the cluster acknowledged submission " \
        f"{err.split()[-1]}\n" and "Traceback" not in err
    process = submit_process("PRINT(1)", "--broker", broker.url)   # no server: it would give up after 3 s
    time.sleep(1)
    code, err = interrupt(process)
    assert code == 130 and err.startswith("interrupted before the cluster acknowledged submission ")


def test_a_submission_refused_before_it_gets_its_id_is_shown(broker, observer, tmp_path, capsys):
    """A bad user name: the server refuses the envelope under another id; the answer also goes to reply_to."""
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1):
            await registry_says(observer, server="online", worker_1="online")
            code = await asyncio.to_thread(run_submit, "PRINT(1)", "--user", "ada/admin", "--wait",
                                           "--broker", broker.url)
            return code, capsys.readouterr().err

    code, err = asyncio.run(scenario())
    assert code == 1
    assert err.startswith("rejected: a user name is "), err


# ---------------------------------------------------------------- without a broker user, under the shipped ACL

@pytest.fixture
def acl_broker(tmp_path):
    """mosquitto with config/mosquitto.acl: clients without a user see nothing under nodes/."""
    passwd = tmp_path / "passwd"
    for user in ("server", "worker"):
        subprocess.run(["mosquitto_passwd", "-b", *([] if passwd.exists() else ["-c"]), str(passwd), user,
                        f"{user}-pw"], check=True)
    acl = ROOT / "config" / "mosquitto.acl"
    broker = Mosquitto(tmp_path / "broker", extra=f"password_file {passwd}\nacl_file {acl}\n")
    yield broker.start()
    broker.stop()


def test_without_a_broker_user_under_the_shipped_acl(acl_broker, tmp_path, capsys):
    """No node's status nor worker's reply can be read: the registry alone says whether the server is alive."""
    from pidaemon.status_cli import add_commands as add_status

    def run_status(*argv):
        parser = argparse.ArgumentParser(prog="pidaemon")
        add_status(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["status", "--broker", acl_broker.url, *argv])
        return args.func(args)

    async def scenario():
        server = make_daemon("server", acl_broker.url, role="server", plugins=server_plugins(tmp_path),
                             session_expiry=600, username="server", password="server-pw")
        server.config["node"]["state_dir"] = str(tmp_path)
        worker = make_daemon("worker-1", acl_broker.url, plugins=worker_plugins(), username="worker",
                             password="worker-pw")
        watcher = await asyncio.to_thread(Observer, acl_broker.port, ("picluster/registry",))  # anonymous
        await server.start()
        await worker.start()
        await registry_says(watcher, server="online", worker_1="online")
        ran = await asyncio.to_thread(run_submit, "SLEEP(0.5);PRINT(6*7)", "--wait", "--broker", acl_broker.url)
        ran_text = capsys.readouterr()
        current = await asyncio.to_thread(run_status, "--json")
        current_report = json.loads(capsys.readouterr().out)
        await worker.shutdown()
        await server.shutdown()
        await asyncio.sleep(1.5)  # the registry grows older than --stale-after 1
        stale = await asyncio.to_thread(run_status, "--stale-after", "1", "--color", "never")
        watcher.close()
        return ran, ran_text, current, current_report, stale, capsys.readouterr().out

    ran, ran_text, current, current_report, stale, stale_table = asyncio.run(scenario())
    assert ran == 0 and ran_text.out == "42\n"
    # Progress comes on the results topic, which anonymous clients may read: running, and where.
    assert ran_text.err == (f"queued as {job_id_in(ran_text.err)} (1 worker able to run Warble online)\n"
                            f"running on worker-1\n")
    assert current == 0 and current_report["stale"] is False and current_report["server_status"] is None
    assert {row["node"]: row["state"] for row in current_report["nodes"]} == {"server": "online",
                                                                              "worker-1": "online"}
    assert stale == 0
    # The status topics are out of reach; the registry's own "stopped" mark tells.
    assert re.match(r"server server stopped \d+s ago, at [0-9:]+ \(its registry's last update says so\)\.\n",
                    stale_table), stale_table


def test_under_mqtt5_submissions_carry_the_client_id_that_the_server_counts_them_by(broker, observer, tmp_path,
                                                                                    capsys):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1) as cluster:
            await registry_says(observer, server="online", worker_1="online")
            code = await asyncio.to_thread(run_submit, "PRINT(1)", "--wait", "--protocol", "5", "--broker",
                                           broker.url)
            job = job_id_in(capsys.readouterr().err)
            return code, cluster.service.queue.get(job).origin

    code, origin = asyncio.run(scenario())
    assert code == 0 and origin.startswith("mqtt:")
