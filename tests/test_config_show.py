"""`pidaemon config show`: the effective configuration, printed as YAML that reads back the same."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pidaemon.config import CORE_SCHEMA, config_from_mapping, dump_config, load_config
from pidaemon.plugins import PluginCatalog
from pidaemon.warble import Limits

ROOT = Path(__file__).resolve().parent.parent
ROLE_FILES = sorted((ROOT / "config").glob("*.yaml"))
CATALOG = PluginCatalog()


def shown_reads_back_the_same(config, tmp_path: Path) -> None:
    shown = tmp_path / "shown.yaml"
    shown.write_text(dump_config(config))
    again = load_config(shown, environ={}, plugin_schema=CATALOG.schema)
    assert again.data == config.data


@pytest.mark.parametrize("path", ROLE_FILES, ids=lambda p: p.name)
def test_config_show_prints_every_shipped_role_file(path, tmp_path):
    result = subprocess.run([sys.executable, "-m", "pidaemon", "config", "show", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert yaml.safe_load(result.stdout)["node"]["role"]
    shown_reads_back_the_same(load_config(path, environ={}, plugin_schema=CATALOG.schema), tmp_path)


def every_option() -> dict:
    """A configuration that sets every core option and every option of every installed plugin."""
    data = CORE_SCHEMA.default_value()
    data["node"]["role"] = "server"
    data["mqtt"]["broker"] = "mqtt://127.0.0.1:1883"
    data["mqtt"]["password"] = "secret"
    data["plugins"] = {}
    for name in CATALOG.names():
        section = CATALOG.schema(name).validate({"instance": "https://example.org"}
                                                if name == "mastodon_feed" else {}, (), [])
        if "limits" in section:  # a Checked field: give it every Warble limit
            section["limits"] = dataclasses.asdict(Limits())
        if "insecure" in section:  # announce and discovery: a secret of their own
            section["secret"] = "a-secret-of-at-least-16-characters"
        data["plugins"][name] = section
    return data


def test_config_show_prints_a_file_that_sets_every_option(tmp_path):
    """Before: any warble_worker.limits (a Limits object) made `config show` end in a YAML traceback."""
    config = config_from_mapping(every_option(), plugin_schema=CATALOG.schema)
    text = dump_config(config)
    assert "password: '********'" in text
    shown = yaml.safe_load(text)
    assert shown["plugins"]["warble_worker"]["limits"]["sounds"] == list(Limits().sounds)
    assert shown["broker"]["listen"] == "127.0.0.1:1883"
    config.data["mqtt"]["password"] = "********"  # what reading the shown file gives back
    shown_reads_back_the_same(config, tmp_path)
