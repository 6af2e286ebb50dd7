"""`pidaemon plugins new`: the skeleton installs, is listed, validates, and passes its own test."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pidaemon.cli import main

NAME = "co2_probe"  # an underscore: the distribution is pidaemon-co2-probe, the module pidaemon_co2_probe


def pidaemon(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pidaemon", *args], capture_output=True, text=True, env=env,
                          check=False)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """`pidaemon plugins new` run for real, its package pip-installed into a directory of its own."""
    workdir = tmp_path_factory.mktemp("scaffold")
    result = pidaemon("plugins", "new", NAME, "--directory", str(workdir / "src"))
    assert result.returncode == 0, result.stderr
    package = workdir / "src" / f"pidaemon-{NAME}"
    site = workdir / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(site), str(package)], check=True)
    return {"output": result.stdout, "package": package, "workdir": workdir,
            "env": {**os.environ, "PYTHONPATH": str(site)}}


def test_new_prints_what_it_wrote_and_the_next_commands(generated):
    package = generated["package"]
    written = [package / "pyproject.toml", package / f"pidaemon_{NAME}" / "__init__.py",
               package / "tests" / f"test_{NAME}.py", package / "README.md"]
    assert all(path.is_file() for path in written)
    lines = generated["output"].splitlines()
    assert [f"  {path}" for path in written] == lines[1:5]
    assert lines[5:8] == ["next:", f"  cd {package}", "  pip install -e '.[test]'"]
    assert lines[8].startswith("  pytest ")


def test_installed_skeleton_is_listed_with_its_hooks(generated):
    result = pidaemon("plugins", env=generated["env"])
    assert result.returncode == 0, result.stderr
    line = next(l for l in result.stdout.splitlines() if l.startswith(NAME + " "))
    assert line.split() == [NAME, "0.1.0", "pidaemon-co2-probe", "installed", "info,", "telemetry"]


def test_its_settings_are_checked_and_listed_with_config(generated):
    config = generated["workdir"] / "node.yaml"
    config.write_text(f"node: {{role: worker}}\nplugins:\n  telemetry: {{interval: 5}}\n"
                      f"  {NAME}: {{reading: co2_ppm, value: 415}}\n")
    check = pidaemon("config", "check", str(config), env=generated["env"])
    assert (check.returncode, check.stdout.strip()) == (0, f"{config}: ok"), check.stderr
    listed = pidaemon("plugins", "--config", str(config), env=generated["env"])
    assert [l.split()[:4] for l in listed.stdout.splitlines()[1:]] == [
        ["telemetry", "0.1.0", "pidaemon", "loads"], [NAME, "0.1.0", "pidaemon-co2-probe", "loads"]]
    config.write_text(f"node: {{role: worker}}\nplugins:\n  {NAME}: {{value: high, readng: x}}\n")
    check = pidaemon("config", "check", str(config), env=generated["env"])
    assert check.returncode == 2
    assert f'node.yaml:3: plugins.{NAME}.readng: unknown key; did you mean "reading"?' in check.stderr
    assert f'plugins.{NAME}.value: expected a number, got "high"' in check.stderr


def test_generated_package_passes_its_own_test(generated):
    package = generated["package"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package,
                            capture_output=True, text=True, env=generated["env"], timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.mark.parametrize("name", ["Co2", "2co", "co2-probe", "co2.probe", "_co2", "co2 probe", ""])
def test_a_name_that_is_not_a_lower_case_identifier_is_refused(name, tmp_path, capsys):
    assert main(["plugins", "new", name, "--directory", str(tmp_path)]) == 2
    assert f"{name!r} is not a plugin name: use lower-case letters, digits and underscores" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_name_of_an_installed_plugin_is_refused(tmp_path, capsys):
    assert main(["plugins", "new", "telemetry", "--directory", str(tmp_path)]) == 2
    assert 'a plugin named "telemetry" is already installed' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_existing_directory_is_not_overwritten(tmp_path, capsys):
    existing = tmp_path / f"pidaemon-{NAME}"
    existing.mkdir()
    (existing / "README.md").write_text("mine\n")
    assert main(["plugins", "new", NAME, "--directory", str(tmp_path)]) == 2
    assert f"{existing} already exists" in capsys.readouterr().err
    assert [p.name for p in existing.iterdir()] == ["README.md"]
    assert (existing / "README.md").read_text() == "mine\n"
