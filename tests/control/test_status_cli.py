"""`pidaemon status`: the cluster as a table or JSON, from the server's registry or the nodes' own topics."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time

from pidaemon.status_cli import add_commands, format_table, report_from_registry
from tests.control.helpers import daemon, registry_section, wait_until
from tests.control.test_telemetry import fake_thermal_tree

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
        "b": {"state": "offline"}}})
    table = format_table(report, now=100.0)
    assert table.splitlines()[1].split() == ["a", "worker", "unhealthy", "-", "-", "-", "1m", "ago"]
    assert table.splitlines()[2].split() == ["b", "-", "offline", "-", "-", "-", "-"]
    assert "2 nodes: 0 online, 1 unhealthy, 1 offline" in table
