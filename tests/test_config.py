"""Configuration: layering, validation with file:line and dotted path, the config commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pidaemon.config import ConfigError, load_config, render_node_id
from pidaemon.plugins import PluginCatalog

ROOT = Path(__file__).resolve().parent.parent
ROLE_FILES = sorted((ROOT / "config").glob("*.yaml"))


def pidaemon(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pidaemon", *args], capture_output=True, text=True, **kw)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


WORKER = """\
node:
  role: worker
  id: "pi-{mac6}"
mqtt:
  broker: mqtt://10.0.0.1:1883
  keepalive: 30
plugins:
  ping:
    qos: 1
"""


def load(path, **kw):
    return load_config(path, environ=kw.pop("environ", {}), plugin_schema=PluginCatalog().schema, **kw)


@pytest.mark.parametrize("role_file", ROLE_FILES, ids=lambda p: p.name)
def test_config_check_accepts_every_shipped_role_file(role_file):
    result = pidaemon("config", "check", str(role_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{role_file}: ok"


def test_the_shipped_roles_exist():
    assert {"server.yaml", "worker.yaml", "audio.yaml"} <= {p.name for p in ROLE_FILES}


def test_three_mistakes_are_all_reported_with_file_line_and_path(tmp_path):
    path = write(tmp_path / "worker.yaml", """\
node:
  role: worker
mqtt:
  broker: mqtt://10.0.0.1:1883
  keepalive: fast
  prefx: cluster
plugins:
  ping:
    qos: 7
""")
    result = pidaemon("config", "check", str(path))
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert f'{path}:5: mqtt.keepalive: expected a whole number >= 2 and <= 65535, got "fast"' in lines
    assert f'{path}:6: mqtt.prefx: unknown key; did you mean "prefix"?' in lines
    assert f"{path}:9: plugins.ping.qos: expected a whole number >= 0 and <= 1, got 7" in lines
    assert lines[-1] == "3 errors in the configuration"


def test_unknown_plugin_gets_a_hint_and_required_makes_it_an_error(tmp_path):
    optional = write(tmp_path / "a.yaml", "node: {role: worker}\nplugins:\n  pnig: {}\n")
    config = load(optional)
    assert config.warnings == [f'{optional}:3: plugins.pnig: no plugin named "pnig" is installed; did you mean "ping"?']
    required = write(tmp_path / "b.yaml", "node: {role: worker}\nplugins:\n  pnig: {required: true}\n")
    with pytest.raises(ConfigError) as error:
        load(required)
    assert error.value.messages == [f'{required}:3: plugins.pnig: no plugin named "pnig" is installed; did you mean "ping"?']


def test_config_check_shows_the_warnings_beside_the_errors(tmp_path):
    path = write(tmp_path / "both.yaml", "node: {role: worker}\nmqtt: {keepalive: 1}\nplugins:\n  pnig: {}\n")
    result = pidaemon("config", "check", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f'warning: {path}:4: plugins.pnig: no plugin named "pnig" is installed; did you mean "ping"?',
        f"{path}:2: mqtt.keepalive: expected a whole number >= 2 and <= 65535, got 1",
        "1 error in the configuration"]


def test_an_override_that_creates_an_unknown_section_is_blamed_on_the_override(tmp_path):
    role = write(tmp_path / "worker.yaml", WORKER)
    with pytest.raises(ConfigError) as error:
        load(role, overrides=[(("nosuch", "x"), 1, "--set nosuch.x")])
    assert error.value.messages == ["--set nosuch.x: nosuch: unknown key"]


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path / "broken.yaml", "node:\n  role: worker\n  id: [unclosed\nmqtt: {}\n")
    with pytest.raises(ConfigError) as error:
        load(path)
    (message,) = error.value.messages
    assert message.startswith(f"{path}:") and "YAML syntax error" in message


def test_duplicate_keys_and_non_mapping_files_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r":3: YAML syntax error: duplicate key 'role'"):
        load(write(tmp_path / "dup.yaml", "node:\n  role: worker\n  role: server\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load(write(tmp_path / "list.yaml", "- a\n- b\n"))


def test_missing_role_is_reported_at_the_section(tmp_path):
    path = write(tmp_path / "norole.yaml", "node:\n  id: x\n")
    with pytest.raises(ConfigError) as error:
        load(path)
    assert error.value.messages == [f"{path}:1: node.role: missing; expected a lower-case role name such as worker"]


def test_layers_role_then_local_then_environment_then_flags(tmp_path):
    role = write(tmp_path / "worker.yaml", WORKER)
    local = write(tmp_path / "local.yaml", "mqtt:\n  keepalive: 40\n  prefix: local\n")
    environ = {"PIDAEMON_MQTT__KEEPALIVE": "50", "PIDAEMON_LOGGING__LEVEL": "debug", "HOME": "/root"}
    overrides = [(("mqtt", "keepalive"), 60, "--set mqtt.keepalive")]
    config = load(role, local=local, environ=environ, overrides=overrides)
    assert config["mqtt"]["keepalive"] == 60
    assert config["mqtt"]["prefix"] == "local"
    assert config["logging"]["level"] == "debug"
    assert config["mqtt"]["broker"].host == "10.0.0.1"
    assert config.sources == [str(role), str(local)]
    assert load(role, local=local, environ=environ)["mqtt"]["keepalive"] == 50
    assert load(role, local=local)["mqtt"]["keepalive"] == 40


def test_errors_from_environment_and_local_file_name_their_origin(tmp_path):
    role = write(tmp_path / "worker.yaml", WORKER)
    local = write(tmp_path / "local.yaml", "\nmqtt:\n  keepalive: -1\n")
    with pytest.raises(ConfigError) as error:
        load(role, local=local, environ={"PIDAEMON_MQTT__PROTOCOL": "4"})
    assert sorted(error.value.messages) == sorted([
        f"{local}:3: mqtt.keepalive: expected a whole number >= 2 and <= 65535, got -1",
        'environment PIDAEMON_MQTT__PROTOCOL: mqtt.protocol: expected one of "5", "3.1.1", got "4"',
    ])


def test_local_config_named_in_the_role_file_is_optional(tmp_path):
    role = write(tmp_path / "worker.yaml", WORKER + "\n# per node\n")
    text = role.read_text().replace('  id: "pi-{mac6}"', f'  id: "pi-{{mac6}}"\n  local_config: {tmp_path}/absent.yaml')
    role.write_text(text)
    assert load(role).sources == [str(role)]
    (tmp_path / "absent.yaml").write_text("logging: {format: json}\n")
    assert load(role)["logging"]["format"] == "json"


def test_embedded_broker_needs_mqtt_3_1_1(tmp_path):
    path = write(tmp_path / "desk.yaml", "node: {role: server}\nbroker:\n  embedded: true\n")
    with pytest.raises(ConfigError, match=r"mqtt\.protocol: the embedded broker \(amqtt\) speaks MQTT 3.1.1 only"):
        load(path)


def test_node_id_templates():
    assert render_node_id("pi-{mac6}", hostname="raspberrypi", mac="B8:27:EB:12:34:56") == "pi-123456"
    assert render_node_id("{hostname}", hostname="rack1-07.cluster.lan", mac="00:00:00:00:00:01") == "rack1-07"
    assert render_node_id("{hostname}-{mac}", hostname="a b", mac="b8:27:eb:00:00:01") == "a-b-b827eb000001"
    with pytest.raises(ValueError, match="bad template"):
        render_node_id("{serial}", hostname="h", mac="00:00:00:00:00:01")
    with pytest.raises(ValueError, match="node id 'bad id!' is not"):     # what the operator typed is not rewritten
        render_node_id("bad id!", hostname="h", mac="00:00:00:00:00:01")


def test_a_node_id_given_on_the_command_line_is_checked_not_rewritten(tmp_path):
    role = write(tmp_path / "worker.yaml", WORKER)
    result = pidaemon("run", "-c", str(role), "--node-id", "bad id!", "--broker", "mqtt://127.0.0.1:1",
                      timeout=60)   # stops before connecting
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith("--node-id: node.id: node id 'bad id!' is not 1-64 letters")


def test_config_show_prints_the_merged_configuration(tmp_path):
    role = write(tmp_path / "worker.yaml", WORKER)
    result = pidaemon("config", "show", str(role), "--set", "mqtt.keepalive=45", "--broker", "mqtts://broker.lan",
                      env={"PATH": "/usr/bin:/bin", "PIDAEMON_LOGGING__FORMAT": "json"})
    assert result.returncode == 0, result.stderr
    assert "  keepalive: 45\n" in result.stdout
    assert "  broker: mqtts://broker.lan:8883\n" in result.stdout
    assert "  format: json\n" in result.stdout
    assert "  ping:\n    qos: 1\n    enabled: true\n    required: false\n" in result.stdout


def test_config_check_exits_nonzero_on_any_bad_file(tmp_path):
    good = write(tmp_path / "good.yaml", WORKER)
    bad = write(tmp_path / "bad.yaml", "node: {role: Worker}\n")
    result = pidaemon("config", "check", str(good), str(bad))
    assert result.returncode == 2
    assert f"{good}: ok" in result.stdout
    assert f"{bad}:1: node.role: expected a lower-case role name such as worker" in result.stderr
