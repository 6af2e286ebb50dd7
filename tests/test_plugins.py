"""Plugins installed with pip as a user would: listed, loaded by name, failures named and contained."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pidaemon import hookimpl
from pidaemon.daemon import DaemonError
from tests.support.nodes import (
    make_daemon,
    node_config,
    start_node_process,
    write_config,
)
from tests.support.plugins import catalog_with, pip_install

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGIN = Path(__file__).resolve().parent / "example_plugin"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """pip-installs the example plugin package into a directory of its own (not the test venv)."""
    return pip_install(EXAMPLE_PLUGIN, tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("build"))


def test_pip_installed_plugin_is_listed_with_its_version(installed_example):
    out = subprocess.run([sys.executable, "-m", "pidaemon", "plugins"], capture_output=True, text=True,
                         env=installed_example, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("example_sensor "))
    assert "1.2.3" in line and "pidaemon-example-sensor" in line and "info, telemetry" in line
    line = next(l for l in out.splitlines() if l.startswith("example_alarm "))
    assert line.split()[-1] == "configure"


def test_pip_installed_plugin_loads_by_name_and_a_failing_one_is_contained(
        installed_example, tmp_path, broker, observer):
    config = node_config("thirdparty", broker.url, plugins={
        "ping": {},
        "telemetry": {"interval": 0.2},
        "example_sensor": {"name": "desk_temperature", "offset": 1.0, "high": 22.0},
        "example_alarm": {},
        "broken_startup": {},
    })
    process = start_node_process(write_config(tmp_path / "tp.yaml", config), env=installed_example)
    try:
        telemetry = json.loads(observer.wait_for("picluster/nodes/thirdparty/telemetry", timeout=15).payload)
        alarm = json.loads(observer.wait_for("picluster/alarms/thirdparty", timeout=15).payload)
        info = json.loads(observer.wait_for("picluster/nodes/thirdparty/info", timeout=15).payload)
        # The rest of the daemon keeps running: ping still answers.
        observer.publish("picluster/nodes/thirdparty/cmd/ping", b'{"seq": 1}')
        reply = json.loads(observer.wait_for("picluster/nodes/thirdparty/reply/ping").payload)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    log = open(process.log_path).read()
    assert telemetry["readings"] == {"desk_temperature": 22.5}
    # The alarm found the sensor by its type and heard its event.
    assert alarm == {"reading": "desk_temperature", "value": 22.5, "limit": 22.0}
    assert info["plugins"]["example_sensor"] == {"version": "1.2.3", "state": "running"}
    assert info["plugins"]["example_alarm"] == {"version": "1.2.3", "state": "running"}
    broken = info["plugins"]["broken_startup"]
    assert broken["state"] == "failed"
    assert 'plugin "broken_startup" failed to start: RuntimeError: sensor not found on I2C bus 1' in broken["error"]
    assert "thermometer" in info["capabilities"]
    assert reply["seq"] == 1
    assert 'plugin "broken_startup" failed to start: RuntimeError: sensor not found on I2C bus 1' in log
    assert process.returncode == 0
    # The start-up log says which files were read and which plugins run, third-party ones with their origin.
    assert f"configuration read from {tmp_path / 'tp.yaml'}" in log
    assert ("plugins: broken_startup 1.2.3 (pidaemon-example-sensor), example_alarm 1.2.3 (pidaemon-example-sensor), "
            "example_sensor 1.2.3 (pidaemon-example-sensor), ping 0.1.0, telemetry 0.1.0") in log  # the file's order


def test_warble_run_uses_an_installed_plugins_builtins(installed_example):
    run = subprocess.run([sys.executable, "-m", "pidaemon", "warble", "run", "--plugin", "example_sensor",
                          "PRINT(ROOM_TEMPERATURE() + 1)"], capture_output=True, text=True, env=installed_example)
    assert (run.returncode, run.stdout) == (0, "22.5\n"), run.stderr
    check = subprocess.run([sys.executable, "-m", "pidaemon", "warble", "check", "--plugin", "example_sensor",
                            "PRINT(ROOM_TEMPERATURE())"], capture_output=True, text=True, env=installed_example)
    assert check.returncode == 0, check.stderr
    missing = subprocess.run([sys.executable, "-m", "pidaemon", "warble", "run", "--plugin", "no_such_plugin",
                              "PRINT(1)"], capture_output=True, text=True, env=installed_example)
    assert missing.returncode == 2 and 'no plugin named "no_such_plugin" is installed' in missing.stderr


def test_a_plugin_whose_partner_is_missing_fails_naming_it(installed_example, tmp_path, broker, observer):
    config = node_config("lonely", broker.url, plugins={"ping": {}, "example_alarm": {}})
    process = start_node_process(write_config(tmp_path / "lonely.yaml", config), env=installed_example)
    try:
        info = json.loads(observer.wait_for("picluster/nodes/lonely/info", timeout=15).payload)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    alarm = info["plugins"]["example_alarm"]
    assert alarm["state"] == "failed"
    assert 'needs the "example_sensor" plugin on the same node' in alarm["error"]
    assert process.returncode == 0


def test_required_plugin_failing_stops_the_daemon_with_its_name(installed_example, tmp_path, broker):
    config = node_config("strict", broker.url, plugins={"broken_startup": {"required": True}})
    process = start_node_process(write_config(tmp_path / "strict.yaml", config), env=installed_example)
    assert process.wait(20) == 1
    log = open(process.log_path).read()
    assert 'cannot run: required plugin "broken_startup" failed: plugin "broken_startup" failed to start' in log


def test_plugin_that_cannot_import_is_named(tmp_path, broker):
    site = tmp_path / "site"
    (site / "badplugin-0.1.dist-info").mkdir(parents=True)
    (site / "badplugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: badplugin\nVersion: 0.1\n")
    (site / "badplugin-0.1.dist-info" / "entry_points.txt").write_text("[pidaemon.plugins]\nbad = badplugin:Plugin\n")
    (site / "badplugin.py").write_text("import no_such_module_anywhere\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    path = write_config(tmp_path / "bad.yaml", node_config("badimport", broker.url, plugins={"ping": {}, "bad": {}}))
    check = subprocess.run([sys.executable, "-m", "pidaemon", "config", "check", str(path)],
                           capture_output=True, text=True, env=env)
    assert check.returncode == 0  # optional: a warning, not an error
    assert ('plugins.bad: error importing plugin "bad" (badplugin:Plugin): ModuleNotFoundError: '
            "No module named 'no_such_module_anywhere'") in check.stderr
    write_config(path, node_config("badimport", broker.url, plugins={"bad": {"required": True}}))
    check = subprocess.run([sys.executable, "-m", "pidaemon", "config", "check", str(path)],
                           capture_output=True, text=True, env=env)
    assert check.returncode == 2 and 'error importing plugin "bad"' in check.stderr


def test_config_check_and_plugins_report_a_misspelled_hook(tmp_path, broker):
    site = tmp_path / "site"
    (site / "typoplugin-0.1.dist-info").mkdir(parents=True)
    (site / "typoplugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: typoplugin\nVersion: 0.1\n")
    (site / "typoplugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[pidaemon.plugins]\ntypo = typoplugin:Plugin\nbuiltins = typoplugin:Builtins\n")
    (site / "typoplugin.py").write_text(
        "from pidaemon import hookimpl\n"
        "class Plugin:\n"
        "    def __init__(self, node, config): pass\n"
        "    @hookimpl\n"
        "    def pidaemon_telemtry(self): return {}\n"
        "class Builtins:\n"  # a hook another installed plugin declares: known even where that one is not loaded
        "    def __init__(self, node, config): pass\n"
        "    @hookimpl\n"
        "    def pidaemon_warble_builtins(self): return []\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    path = write_config(tmp_path / "typo.yaml", node_config("typo", broker.url, plugins={"typo": {}, "builtins": {}}))
    check = subprocess.run([sys.executable, "-m", "pidaemon", "config", "check", str(path)],
                           capture_output=True, text=True, env=env)
    assert check.returncode == 0  # optional: a warning
    assert ('plugins.typo: plugin "typo" implements unknown hook "pidaemon_telemtry"; '
            'did you mean "pidaemon_telemetry"?') in check.stderr
    assert "builtins" not in check.stderr
    write_config(path, node_config("typo", broker.url, plugins={"typo": {"required": True}}))
    check = subprocess.run([sys.executable, "-m", "pidaemon", "config", "check", str(path)],
                           capture_output=True, text=True, env=env)
    assert check.returncode == 2 and 'unknown hook "pidaemon_telemtry"' in check.stderr
    listing = subprocess.run([sys.executable, "-m", "pidaemon", "plugins"], capture_output=True, text=True,
                             env=env, check=True).stdout
    line = next(l for l in listing.splitlines() if l.startswith("typo "))
    assert 'failed: plugin "typo" implements unknown hook "pidaemon_telemtry"; did you mean' in line
    line = next(l for l in listing.splitlines() if l.startswith("builtins "))
    assert "installed" in line and "warble_builtins" in line


class Misspelled:
    def __init__(self, node, config):
        pass

    @hookimpl
    def pidaemon_startp(self, node):
        pass


class RaisesInConstructor:
    def __init__(self, node, config):
        raise ValueError("no such GPIO pin 99")


class SlowShutdown:
    def __init__(self, node, config):
        self.calls = []

    @hookimpl
    async def pidaemon_shutdown(self, node):
        await asyncio.sleep(30)


class RaisesInShutdown:
    def __init__(self, node, config):
        self.shutdown_called = False

    @hookimpl
    def pidaemon_shutdown(self, node):
        self.shutdown_called = True
        raise RuntimeError("relay stuck")


class RecordsShutdown:
    def __init__(self, node, config):
        self.shutdown_called = False

    @hookimpl
    def pidaemon_shutdown(self, node):
        self.shutdown_called = True


def test_misspelled_hook_and_constructor_failure_are_named(broker, caplog):
    catalog = catalog_with(misspelled=Misspelled, broken_ctor=RaisesInConstructor)

    async def scenario():
        daemon = make_daemon("faulty", broker.url, catalog=catalog,
                             plugins={"ping": {}, "misspelled": {}, "broken_ctor": {}})
        await daemon.start()
        status = daemon.status()
        await daemon.shutdown()
        return status

    status = asyncio.run(scenario())
    assert status["failed_plugins"] == ["broken_ctor", "misspelled"]
    assert 'unknown hook "pidaemon_startp"; did you mean "pidaemon_startup"?' in status["plugins"]["misspelled"]["error"]
    assert "ValueError: no such GPIO pin 99" in status["plugins"]["broken_ctor"]["error"]
    assert status["plugins"]["ping"]["state"] == "running"


def test_one_failing_shutdown_does_not_skip_the_others(broker):
    catalog = catalog_with(raises=RaisesInShutdown, records=RecordsShutdown)

    async def scenario():
        daemon = make_daemon("shut", broker.url, catalog=catalog, plugins={"raises": {}, "records": {}})
        await daemon.start()
        raises, records = daemon.plugin("raises"), daemon.plugin("records")
        await daemon.shutdown()
        return raises.shutdown_called, records.shutdown_called

    assert asyncio.run(scenario()) == (True, True)


def test_hanging_shutdown_is_cut_off_and_the_node_still_goes_offline(broker, observer):
    catalog = catalog_with(slow=SlowShutdown)

    async def scenario():
        daemon = make_daemon("slowpoke", broker.url, catalog=catalog, plugins={"slow": {}})
        daemon.config["lifecycle"]["shutdown_timeout"] = 0.5
        await daemon.start()
        assert await daemon.bus.wait_connected(10)
        await daemon.shutdown()

    asyncio.run(scenario())
    observer.wait_for("picluster/nodes/slowpoke/status", "offline", timeout=5)


def test_required_plugin_constructor_failure_raises_daemon_error(broker):
    catalog = catalog_with(broken_ctor=RaisesInConstructor)

    async def scenario():
        daemon = make_daemon("strict2", broker.url, catalog=catalog, plugins={"broken_ctor": {"required": True}})
        try:
            await daemon.start()
        finally:
            await daemon.shutdown()

    with pytest.raises(DaemonError, match='required plugin "broken_ctor" failed.*no such GPIO pin 99'):
        asyncio.run(scenario())


def test_telemetry_hook_readings_are_merged_and_isolated(broker, caplog):
    class Sensor:
        def __init__(self, node, config):
            pass

        @hookimpl
        def pidaemon_telemetry(self, node):
            return {"co2_ppm": 612}

    class Broken:
        def __init__(self, node, config):
            pass

        @hookimpl
        def pidaemon_telemetry(self, node):
            raise OSError("sensor unplugged")

    daemon = make_daemon("tele", broker.url, catalog=catalog_with(sensor=Sensor, broken=Broken),
                         plugins={"sensor": {}, "broken": {}})
    daemon.load_plugins()
    assert daemon.collect_telemetry() == {"co2_ppm": 612}
    assert any('plugin "broken" failed in pidaemon_telemetry: OSError: sensor unplugged' in r.getMessage()
               for r in caplog.records)


class HangsInStartup:
    def __init__(self, node, config):
        pass

    @hookimpl
    async def pidaemon_startup(self, node):
        await asyncio.sleep(120)  # e.g. waiting for hardware that never answers


def test_stop_during_a_hanging_startup_still_shuts_down(broker, observer):
    catalog = catalog_with(hang=HangsInStartup)

    async def scenario():
        daemon = make_daemon("hanging", broker.url, catalog=catalog, plugins={"ping": {}, "hang": {}})
        running = asyncio.create_task(daemon.run())
        while daemon.bus is None or not daemon.bus.connected:
            await asyncio.sleep(0.02)
        daemon.stop()
        await asyncio.wait_for(running, 20)  # the 120 s start-up is cancelled, not awaited

    asyncio.run(scenario())
    observer.wait_for("picluster/nodes/hanging/status", "offline", timeout=5)
