"""`pidaemon plugins new NAME`: a plugin package skeleton that passes its own test.

The package has one plugin (a telemetry reading and a capability, its
settings declared with `@settings`), a test that runs it in a real daemon
against a real mosquitto, and a README.  The templates are the text below,
with `$name`, `$module`, `$cls` and `$distribution` filled in.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from .plugins import PluginCatalog

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


class ScaffoldError(Exception):
    """The skeleton cannot be written: a bad name, or the directory exists."""


def check_name(name: str, installed: list[str] | None = None) -> None:
    """Raise ScaffoldError unless `name` can be a new plugin's entry-point name and module suffix."""
    if not NAME_PATTERN.fullmatch(name):
        raise ScaffoldError(f"{name!r} is not a plugin name: use lower-case letters, digits and underscores, "
                            "starting with a letter (e.g. co2_sensor)")
    installed = PluginCatalog().names() if installed is None else installed
    if name in installed:
        raise ScaffoldError(f'a plugin named "{name}" is already installed (see `pidaemon plugins`): '
                            "two plugins cannot share a name, choose another")


def write_plugin_package(name: str, directory: str | Path = ".") -> list[Path]:
    """Write `pidaemon-NAME/` under `directory`; return the files written, the directory first."""
    check_name(name)
    root = Path(directory) / f"pidaemon-{name}"
    if root.exists():
        raise ScaffoldError(f"{root} already exists: remove it, or choose another NAME or --directory")
    values = {"name": name, "module": f"pidaemon_{name}", "distribution": f"pidaemon-{name.replace('_', '-')}",
              "cls": "".join(part.capitalize() for part in name.split("_"))}
    files = {
        "pyproject.toml": PYPROJECT,
        f"{values['module']}/__init__.py": PLUGIN,
        f"tests/test_{name}.py": TEST,
        "README.md": README,
    }
    root.mkdir(parents=True)
    written = [root]
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(exist_ok=True)
        path.write_text(Template(template).substitute(values), encoding="utf-8")
        written.append(path)
    return written


def summary(name: str, written: list[Path]) -> str:
    """What `pidaemon plugins new` prints: the files, then the next commands."""
    root = written[0]
    lines = [f'wrote plugin "{name}" in {root}/:'] + [f"  {path}" for path in written[1:]]
    lines += ["next:", f"  cd {root}", "  pip install -e '.[test]'",
              f"  pytest                  # runs tests/test_{name}.py: the plugin in a real daemon and mosquitto",
              f"  pidaemon plugins        # lists {name} with its hooks"]
    return "\n".join(lines)


# ---------------------------------------------------------------- templates

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "The $name plugin for pidaemon"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["pidaemon"]

[project.optional-dependencies]
test = ["pytest>=8", "paho-mqtt>=2,<3"]

# pidaemon finds the plugin by this entry point; its name ("$name") is the
# plugin's key under `plugins:` in a node's YAML.
[project.entry-points."pidaemon.plugins"]
$name = "$module:${cls}Plugin"

[tool.setuptools]
packages = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

PLUGIN = '''\
"""The "$name" pidaemon plugin: one telemetry reading and a capability.

Written by `pidaemon plugins new $name`.  Replace `read()` with your
measurement and the settings with yours, and keep tests/test_$name.py passing.
Every hook a plugin may implement is documented in `pidaemon.hookspecs`.
"""

from __future__ import annotations

from pidaemon import hookimpl
from pidaemon.schema import Number, String, settings


@settings
class ${cls}Settings:
    """The plugin's section of a node's YAML (`plugins: {$name: {...}}`): change the fields to yours.

    Each field has a type, a default (none: the key is required) and a doc;
    `pidaemon config check` reports a wrong value with its file and line.
    """

    reading: str = String(default="$name", pattern=r"[a-z][a-z0-9_]*", doc="name of the telemetry reading")
    value: float = Number(default=0.0, doc="what read() reports until it reads a real sensor")


class ${cls}Plugin:
    """Adds one reading to the node's telemetry and the "$name" capability to its info."""

    config_schema = ${cls}Settings

    def __init__(self, node, config: ${cls}Settings):
        # One instance per daemon (the simulator runs many in one process): keep state here, not in globals.
        self.config = config

    def read(self) -> float:
        """The measurement: replace with your sensor's.  Keep it quick (cache a slow sensor's value)."""
        return self.config.value

    @hookimpl
    def pidaemon_telemetry(self, node):
        """Readings for the node's telemetry, every `telemetry.interval` seconds."""
        return {self.config.reading: self.read()}

    @hookimpl
    def pidaemon_info(self, node):
        """Fields for the node's retained info: what this node can do."""
        return {"capabilities": ["$name"]}
'''

TEST = '''\
"""The "$name" plugin in a real daemon, against a real MQTT broker.

Starts its own mosquitto on a free port, runs `python -m pidaemon run` with
the telemetry plugin and this one, and checks what a user sees on the bus:
the reading in the node's telemetry, the capability in its info, and a clean
exit on SIGTERM.  Change VALUE's check when `read()` measures something real.
"""

import json
import queue
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import paho.mqtt.client as mqtt
import pytest

NODE_ID = "$name-test"
READING, VALUE = "$name", 42.5   # as set in the node's configuration below
TIMEOUT = 20  # seconds before a missing message fails the test: a bound on failure, not a timing claim


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def broker(tmp_path):
    """A mosquitto of the test's own on a free port (the machine's broker is left alone); yields the port."""
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        pytest.fail("mosquitto is not installed: install it (Debian, Raspberry Pi OS: sudo apt-get install mosquitto)")
    port = free_port()
    config, log = tmp_path / "mosquitto.conf", tmp_path / "mosquitto.log"
    config.write_text(f"listener {port} 127.0.0.1\\nallow_anonymous true\\n")
    with open(log, "wb") as out:
        process = subprocess.Popen([binary, "-c", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"mosquitto exited with {process.returncode}:\\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto does not listen on port {port}:\\n{log.read_text()}")
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def messages(broker):
    """The node's telemetry and info messages as they arrive: {topic: queue of JSON payloads}."""
    topics = {f"picluster/nodes/{NODE_ID}/{kind}": queue.Queue() for kind in ("telemetry", "info")}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda client, userdata, flags, reason, properties: client.subscribe(
        [(topic, 1) for topic in topics])
    client.on_message = lambda client, userdata, message: topics[message.topic].put(json.loads(message.payload))
    client.connect("127.0.0.1", broker)
    client.loop_start()
    yield topics
    client.loop_stop()
    client.disconnect()


def wait_for(messages, topic, wanted, daemon, log):
    """The first payload on `topic` for which `wanted(payload)` is true; fails with the daemon's log."""
    last = None
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and daemon.poll() is None:
        try:
            last = messages[topic].get(timeout=0.1)
        except queue.Empty:
            continue
        if wanted(last):
            return last
    state = "running" if daemon.poll() is None else f"exited with {daemon.returncode}"
    pytest.fail(f"nothing wanted on {topic} (last: {last}); daemon {state}, its log:\\n{log.read_text()}")


def test_${name}_reading_and_capability_reach_the_bus(broker, messages, tmp_path):
    config, log = tmp_path / "node.yaml", tmp_path / "daemon.log"
    config.write_text(textwrap.dedent(f"""\\
        node:
          role: test
          id: {NODE_ID}
          state_dir: {tmp_path / "state"}
        mqtt:
          broker: mqtt://127.0.0.1:{broker}
        plugins:
          telemetry:
            interval: 0.2
          $name:
            required: true   # a plugin that cannot load or start stops the daemon, with the reason in its log
            reading: {READING}
            value: {VALUE}
        """))
    with open(log, "wb") as out:
        daemon = subprocess.Popen([sys.executable, "-m", "pidaemon", "run", "--config", str(config)],
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        telemetry = wait_for(messages, f"picluster/nodes/{NODE_ID}/telemetry",
                             lambda payload: READING in payload["readings"], daemon, log)
        info = wait_for(messages, f"picluster/nodes/{NODE_ID}/info",
                        lambda payload: payload["plugins"]["$name"]["state"] == "running", daemon, log)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    assert telemetry["readings"][READING] == VALUE
    assert "$name" in info["capabilities"]
    assert daemon.returncode == 0, log.read_text()
'''

README = '''\
# $distribution

The `$name` plugin for pidaemon: it adds the reading `$name` to the node's
telemetry and the capability `$name` to its info.  Written by
`pidaemon plugins new $name`: replace `read()` in `$module/__init__.py`
with your measurement.

## Install and test

```sh
pip install -e '.[test]'
pytest
```

The test starts its own mosquitto on a free port (install it first:
`sudo apt-get install mosquitto`), runs the plugin in a real daemon
(`python -m pidaemon run`) and checks its telemetry on the bus.

## Enable it on a node

Install the package next to pidaemon on the node, then name the plugin in the
node's YAML; its section holds the plugin's settings:

```yaml
plugins:
  telemetry: {interval: 5}
  $name:
    reading: $name  # name of the telemetry reading
    value: 0.0  # what read() reports until it reads a real sensor
```

`pidaemon config check FILE` validates the section; `pidaemon plugins` lists
the plugin with its version and hooks.
'''
