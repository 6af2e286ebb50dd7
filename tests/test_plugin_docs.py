"""docs/plugins.md is the plugin authors' contract: it may not drift from the code (datasette's test_docs.py).

Every hook is documented with its real signature, every documented hook
exists, every `node.` attribute the docs offer exists, and the docs' example
plugin is the package the suite pip-installs.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from pidaemon_plugins.homeassistant import hookspecs as homeassistant_hookspecs
from pidaemon_plugins.http import hookspecs as http_hookspecs
from pidaemon_plugins.warble import hookspecs as warble_hookspecs

import pidaemon
from pidaemon import hookspecs
from pidaemon.daemon import Daemon

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "plugins.md").read_text()
EXAMPLE_PLUGIN = Path(__file__).resolve().parent / "example_plugin"

SPECS = {name: fn for module in (hookspecs, warble_hookspecs, homeassistant_hookspecs, http_hookspecs)
         for name, fn in inspect.getmembers(module, inspect.isfunction) if name.startswith("pidaemon_")}
# `pidaemon_name(arg, ...)` as the hook tables write them.
DOCUMENTED = dict(re.findall(r"`(pidaemon_[a-z_]+)\(([^)]*)\)`", DOCS))


@pytest.mark.parametrize("hook", sorted(SPECS))
def test_every_hook_is_documented_with_its_real_signature(hook):
    spec = SPECS[hook]
    assert spec.__doc__ and len(spec.__doc__.strip()) > 40, f"{hook} needs a docstring that says when it fires"
    assert hook in DOCUMENTED, f"{hook} is not in docs/plugins.md's hook tables as `{hook}(...)`"
    documented = [arg.strip() for arg in DOCUMENTED[hook].split(",") if arg.strip()]
    assert documented == list(inspect.signature(spec).parameters), f"docs/plugins.md shows {hook}({DOCUMENTED[hook]})"


def test_every_documented_hook_exists():
    assert sorted(set(DOCUMENTED) - set(SPECS)) == []


def test_every_node_attribute_the_docs_offer_exists():
    offered = set(re.findall(r"`node\.([a-z_]+)", DOCS))
    assert offered, "the docs' table of what node offers is gone"
    missing = [name for name in sorted(offered) if not hasattr(Daemon, name) and name not in _instance_attributes()]
    assert missing == []


def _instance_attributes() -> set[str]:
    """Attributes Daemon.__init__ sets (`self.name = ...`)."""
    return set(re.findall(r"self\.([a-z_]+)\s*[:=]", inspect.getsource(Daemon.__init__)))


def test_hookimpl_and_hookspec_are_importable_from_the_package_root():
    assert pidaemon.hookimpl is hookspecs.hookimpl
    assert pidaemon.hookspec is hookspecs.hookspec


def test_the_docs_example_plugin_is_the_tested_one():
    example = (EXAMPLE_PLUGIN / "pidaemon_example_sensor" / "__init__.py").read_text()
    shown = example[example.index("from pidaemon import"):example.index("class BrokenStartup")].strip()
    assert shown in DOCS
    project = (EXAMPLE_PLUGIN / "pyproject.toml").read_text()
    for key in ("example_sensor = ", "example_alarm = "):
        entry = next(line for line in project.splitlines() if line.startswith(key))
        assert entry in DOCS
