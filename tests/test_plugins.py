"""Plugins: a third-party package installed with pip, failures named, the hook contract documented."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pidaemon import hookimpl, hookspecs
from pidaemon.daemon import DaemonError
from tests.support.nodes import make_daemon, node_config, start_node_process, write_config
from tests.test_bus_integration import catalog_with

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGIN = Path(__file__).resolve().parent / "example_plugin"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """pip-installs the example plugin package into a directory of its own (not the test venv)."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    source = build / "example_plugin"
    subprocess.run(["cp", "-r", str(EXAMPLE_PLUGIN), str(source)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(source)], check=True)
    return {**os.environ, "PYTHONPATH": str(target)}


def test_pip_installed_plugin_is_listed_with_its_version(installed_example):
    out = subprocess.run([sys.executable, "-m", "pidaemon", "plugins"], capture_output=True, text=True,
                         env=installed_example, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("example_sensor "))
    assert "1.2.3" in line and "pidaemon-example-sensor" in line and "info, telemetry" in line


def test_pip_installed_plugin_loads_by_name_and_a_failing_one_is_contained(
        installed_example, tmp_path, broker, observer):
    config = node_config("thirdparty", broker.url, plugins={
        "ping": {},
        "telemetry": {"interval": 0.2},
        "example_sensor": {"name": "desk_temperature", "offset": 1.0},
        "broken_startup": {},
    })
    process = start_node_process(write_config(tmp_path / "tp.yaml", config), env=installed_example)
    try:
        telemetry = json.loads(observer.wait_for("picluster/nodes/thirdparty/telemetry", timeout=15).payload)
        info = None
        deadline_messages = observer.wait_for("picluster/nodes/thirdparty/info", timeout=15)
        info = json.loads(deadline_messages.payload)
        # The rest of the daemon keeps running: ping still answers.
        observer.publish("picluster/nodes/thirdparty/cmd/ping", b'{"seq": 1}')
        reply = json.loads(observer.wait_for("picluster/nodes/thirdparty/reply/ping").payload)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    log = open(process.log_path).read()
    assert telemetry["readings"] == {"desk_temperature": 22.5}
    assert info["plugins"]["example_sensor"] == {"version": "1.2.3", "state": "running"}
    broken = info["plugins"]["broken_startup"]
    assert broken["state"] == "failed"
    assert 'plugin "broken_startup" failed to start: RuntimeError: sensor not found on I2C bus 1' in broken["error"]
    assert "thermometer" in info["capabilities"]
    assert reply["seq"] == 1
    assert 'plugin "broken_startup" failed to start: RuntimeError: sensor not found on I2C bus 1' in log
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
    daemon._load_plugins()
    assert daemon.collect_telemetry() == {"co2_ppm": 612}
    assert any('plugin "broken" failed in pidaemon_telemetry: OSError: sensor unplugged' in r.getMessage()
               for r in caplog.records)


# ---------------------------------------------------------------- the contract is documented

HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
               if name.startswith("pidaemon_"))


def test_hookimpl_is_importable_from_the_package_root():
    import pidaemon
    assert pidaemon.hookimpl is hookspecs.hookimpl


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_and_a_docs_entry(hook):
    function = getattr(hookspecs, hook)
    assert function.__doc__ and len(function.__doc__.strip()) > 40
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert f"`{hook}" in docs, f"{hook} is not described in docs/plugins.md"


def test_the_docs_example_plugin_is_the_tested_one():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    example = (EXAMPLE_PLUGIN / "pidaemon_example_sensor" / "__init__.py").read_text()
    sensor_class = example[example.index("class ExampleSensor"):example.index("class BrokenStartup")].strip()
    assert sensor_class in docs


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
