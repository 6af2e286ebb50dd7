"""`pidaemon status`: the cluster as a table or JSON, from the server's registry or the nodes' own topics."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
import time

from pidaemon.status_cli import (
    _clock,
    add_commands,
    format_table,
    report_from_registry,
    server_state,
)
from tests.support.control_plane import (
    daemon,
    fake_thermal_tree,
    registry_nodes,
    registry_section,
    wait_until,
)


def run_status(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pidaemon")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["status", *argv])
    return args.func(args)


def test_status_from_the_registry_as_json_and_table(broker, tmp_path, capsys):
    thermal = fake_thermal_tree(tmp_path / "thermal")

    async def scenario():
        server = daemon("server", broker.url, tmp_path / "server", role="server", plugins={
            "ping": {}, "telemetry": {"interval": 0.2}, "registry": registry_section(tmp_path),
            "telemetry_store": {"db": str(tmp_path / "t.sqlite3"),
                                "forward": {"url": "http://127.0.0.1:9/down", "interval": 0.1, "timeout": 0.5}}})
        worker = daemon("w1", broker.url, tmp_path / "w1", plugins={
            "ping": {}, "telemetry": {"interval": 0.2}, "system": {"thermal_root": str(thermal), "vcgencmd": ""}})
        await server.start()
        await worker.start()
        registry = server.plugin("registry")
        await wait_until(lambda: "cpu_percent" in ((registry.record("w1") or {}).get("telemetry") or {})
                         and "forwarder" in ((registry.record("server") or {}).get("telemetry") or {}),
                         what="telemetry in the registry")
        await asyncio.sleep(0.8)  # the next refresh publishes it
        code_json = await asyncio.to_thread(run_status, "--broker", broker.url, "--json", "--timeout", "5")
        as_json = capsys.readouterr().out
        code_table = await asyncio.to_thread(run_status, "--broker", broker.url, "--timeout", "5")
        table = capsys.readouterr().out
        await worker.shutdown()
        await server.shutdown()
        return code_json, json.loads(as_json), code_table, table

    code_json, report, code_table, table = asyncio.run(scenario())
    assert code_json == 0 and code_table == 0
    assert report["source"] == "registry" and report["server"] == "server"
    rows = {row["node"]: row for row in report["nodes"]}
    assert rows["w1"]["role"] == "worker" and rows["w1"]["state"] == "online"
    assert rows["w1"]["cpu_temperature"] == 48.31 and 0 <= rows["w1"]["memory_percent"] <= 100
    assert rows["server"]["cpu_temperature"] is None  # the server has no system plugin here: nothing faked
    assert report["forwarders"]["server"]["failures"] >= 1
    lines = table.splitlines()
    assert lines[0].split() == ["NODE", "ROLE", "STATE", "CPU", "MEM", "TEMP", "LAST", "SEEN"]
    w1 = next(line for line in lines if line.startswith("w1 "))
    assert "worker" in w1 and "online" in w1 and "48.3°C" in w1 and "s ago" in w1
    assert "2 nodes: 2 online, 0 unhealthy, 0 offline (registry of server server" in table
    assert "forwarder on server:" in table and "0 dropped" in table


def test_status_without_a_server_uses_the_nodes_topics(broker, tmp_path, capsys):
    async def scenario():
        worker = daemon("lonely", broker.url, tmp_path / "w", plugins={"ping": {}, "telemetry": {"interval": 0.2}})
        await worker.start()
        assert await worker.bus.wait_connected(10)
        await asyncio.sleep(0.5)
        code = await asyncio.to_thread(run_status, "--broker", broker.url, "--json", "--timeout", "3")
        await worker.shutdown()
        return code, json.loads(capsys.readouterr().out)

    code, report = asyncio.run(scenario())
    assert code == 0 and report["source"] == "node topics"
    assert [(r["node"], r["state"], r["role"]) for r in report["nodes"]] == [("lonely", "online", "worker")]


def test_status_reports_an_unreachable_broker(capsys):
    code = run_status("--broker", "mqtt://127.0.0.1:9", "--timeout", "1")
    assert code == 1 and "cannot reach the broker mqtt://127.0.0.1:9" in capsys.readouterr().err


def test_watch_refreshes_until_interrupted(broker, tmp_path):
    """Through the real command line: `python -m pidaemon status --watch --json`."""
    process = subprocess.Popen([sys.executable, "-m", "pidaemon", "status", "--broker", broker.url, "--json",
                                "--watch", "--interval", "0.2", "--timeout", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=10)
    reports = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert process.returncode == 0, err
    assert len(reports) >= 3 and all(r["nodes"] == [] for r in reports)


def test_table_formatting_of_missing_values():
    report = report_from_registry({"server": "s", "time": 100.0, "nodes": {
        "a": {"role": "worker", "state": "unhealthy", "last_seen": 40.0, "telemetry": {}},
        "b": {"state": "offline"}}}, now=100.0)
    table = format_table(report, now=100.0)
    assert table.splitlines()[1].split() == ["a", "worker", "unhealthy", "-", "-", "-", "1m", "ago"]
    assert table.splitlines()[2].split() == ["b", "-", "offline", "-", "-", "-", "-"]
    assert "2 nodes: 0 online, 1 unhealthy, 1 offline" in table


# ---------------------------------------------------------------- a dead server's registry

def test_a_dead_servers_registry_is_shown_as_what_it_last_knew(broker, observer, tmp_path, capsys):
    """The server stops first: its retained registry still says every node is online; their own topics do not."""
    async def scenario():
        server = daemon("server", broker.url, tmp_path / "server", role="server",
                        plugins={"ping": {}, "registry": registry_section(tmp_path)})
        workers = [daemon(f"w{i}", broker.url, tmp_path / f"w{i}", plugins={"ping": {}}) for i in (1, 2)]
        await server.start()
        for worker in workers:
            await worker.start()
        await wait_until(lambda: all(registry_nodes(observer).get(n, {}).get("state") == "online"
                                     for n in ("server", "w1", "w2")), what="everyone online in the retained registry")
        await server.shutdown()
        for worker in workers:
            await worker.shutdown()
        await asyncio.to_thread(observer.wait_for, "picluster/nodes/w2/status", "offline")
        code_json = await asyncio.to_thread(run_status, "--broker", broker.url, "--json")
        as_json = capsys.readouterr().out
        code_table = await asyncio.to_thread(run_status, "--broker", broker.url, "--color", "never")
        return code_json, json.loads(as_json), code_table, capsys.readouterr().out

    code_json, report, code_table, table = asyncio.run(scenario())
    assert code_json == 0 and code_table == 0
    assert report["stale"] is True and report["server_status"] == "offline"
    # A server that stops cleanly says so in its last registry (readable where its status topic is not).
    assert report["problem"].startswith("server server stopped ")
    assert {(r["node"], r["state"], r["own_status"]) for r in report["nodes"]} == {
        ("server", "online", "offline"), ("w1", "online", "offline"), ("w2", "online", "offline")}
    lines = table.splitlines()
    assert lines[0].startswith("server server stopped ")
    assert lines[0].endswith("(its registry's last update says so).")
    assert lines[1] == ("What follows is what it last knew, not the cluster now; NOW is each node's own status "
                        "topic where it disagrees.")
    assert lines[3].split() == ["NODE", "ROLE", "STATE", "NOW", "CPU", "MEM", "TEMP", "LAST", "SEEN"]
    assert next(line for line in lines if line.startswith("w1 ")).split()[:4] == ["w1", "worker", "online", "offline"]
    assert "3 nodes: 3 online, 0 unhealthy, 0 offline (registry of server server, " in table
    assert "what it last knew)" in table and "their own status topics: 0 online, 3 offline" in table


def test_a_killed_servers_registry_is_known_by_its_status_topic():
    registry = {"server": "s", "time": 1000.0, "nodes": {"s": {"role": "server", "state": "online"}}}
    problem = server_state(registry, {"s": "offline"}).problem(now=1005.0)
    assert problem == ("server s is offline (its status topic says so); last heard from 5s ago, at "
                       f"{_clock(1000.0, 1005.0)} (its registry's last update).")


def test_an_old_registry_is_not_current_even_if_its_server_says_online():
    registry = {"server": "s", "time": 1000.0, "nodes": {"s": {"role": "server", "state": "online"},
                                                         "a": {"role": "worker", "state": "online"}}}
    fresh = report_from_registry(registry, {"s": "online", "a": "offline"}, now=1010.0, stale_after=30)
    old = report_from_registry(registry, {"s": "online", "a": "offline"}, now=1130.0, stale_after=30)
    assert fresh["stale"] is False and fresh["problem"] is None
    assert "NOW" not in format_table(fresh, now=1010.0)
    assert old["stale"] is True and old["problem"].startswith(
        "server s is not updating its registry: last update 2m ago, at ")
    assert old["problem"].endswith(", more than 30 s ago, although its status topic says online (or the clocks of "
                                   "this machine and the server disagree).")
    table = format_table(old, now=1130.0).splitlines()
    assert table[4].split() == ["a", "worker", "online", "offline", "-", "-", "-", "-"]
    assert table[5].split()[:3] == ["s", "server", "online"] and len(table[5].split()) == 7  # agrees: NOW empty


# ---------------------------------------------------------------- filtering, sorting, colour

def retain_cluster(observer, server="c"):
    """A registry (retained, fresh) of five nodes, and the server's own status: a current view."""
    def node(role, state, cpu):
        return {"role": role, "state": state, "last_seen": time.time(), "telemetry": {"cpu_percent": cpu}}
    registry = {"schema": 1, "server": server, "time": time.time(), "nodes": {
        "a": node("worker", "online", 10.0), "b": node("worker", "unhealthy", 50.0), "c": node("server", "online", 5.0),
        "d": node("worker", "offline", None), "e": node("audio", "online", 70.0)}}
    observer.publish(f"picluster/nodes/{server}/status", "online", retain=True)
    observer.publish("picluster/registry", json.dumps(registry), retain=True)


def status_json(broker, capsys, *argv):
    code = run_status("--broker", broker.url, "--json", *argv)
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_filtering_and_sorting(broker, observer, capsys):
    retain_cluster(observer)

    def order(*argv):
        return [row["node"] for row in status_json(broker, capsys, *argv)["nodes"]]

    assert order() == ["a", "b", "c", "d", "e"]
    assert order("--role", "worker", "--state", "online,unhealthy", "--sort", "cpu") == ["b", "a"]
    assert order("--role", "worker", "--state", "online,unhealthy", "--sort", "cpu", "--reverse") == ["a", "b"]
    assert order("--state", "offline", "--state", "unhealthy") == ["b", "d"]
    assert order("--role", "worker,audio", "--sort", "cpu") == ["e", "b", "a", "d"]  # no reading: last
    assert order("--sort", "state") == ["d", "b", "a", "c", "e"]                    # offline, unhealthy, online
    report = status_json(broker, capsys, "--role", "server")
    assert report["counts"] == {"online": 3, "unhealthy": 1, "offline": 1, "unknown": 0}  # the whole cluster
    assert report["shown"] == 1 and report["filters"] == {"role": ["server"], "state": []}
    assert run_status("--broker", broker.url, "--role", "worker", "--state", "online", "--color", "never") == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary.startswith("5 nodes: 3 online, 1 unhealthy, 1 offline (registry of server c, ")
    assert summary.endswith("s ago); 1 shown (--role worker --state online)")
    try:
        run_status("--broker", broker.url, "--state", "sleepy")
    except SystemExit as exit:
        assert exit.code == 2
    assert "'sleepy' is not one of online, unhealthy, offline, unknown" in capsys.readouterr().err


def status_process(broker, *argv, env=None, terminal=False) -> str:
    """`python -m pidaemon status`, its standard output a pipe or (terminal) a pseudo-terminal."""
    command = [sys.executable, "-m", "pidaemon", "status", "--broker", broker.url, *argv]
    environment = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    environment.update(env or {}, TERM="xterm")
    if not terminal:
        done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout
    controller, terminal_end = pty.openpty()
    process = subprocess.Popen(command, stdout=terminal_end, stderr=subprocess.PIPE, env=environment)
    os.close(terminal_end)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(30) == 0, process.stderr.read()
    return output.decode()


def test_colour_on_a_terminal_only_unless_asked(broker, observer):
    retain_cluster(observer)
    on_terminal = status_process(broker, terminal=True)
    assert "\x1b[1;31moffline\x1b[0m" in on_terminal and "\x1b[1;33munhealthy\x1b[0m" in on_terminal
    assert "\x1b[" not in status_process(broker, terminal=True, env={"NO_COLOR": "1"})
    assert "\x1b[" not in status_process(broker)                         # piped
    assert "\x1b[" not in status_process(broker, "--color", "never", terminal=True)
    forced = status_process(broker, "--color", "always", env={"NO_COLOR": "1"})
    assert "\x1b[1;31moffline\x1b[0m" in forced
    assert "\x1b[" not in status_process(broker, "--json", "--color", "always")
