"""systemd/: the template unit and each role's drop-ins, as systemd reads them.

`systemd-analyze verify` runs where installed (it needs no running systemd: it
loads the units, their drop-ins and dependencies, and checks that ExecStart's
program exists, so the test verifies a copy whose ExecStart is this Python).
Its warnings (an unknown or misspelt key) leave its exit status 0: any line it
prints fails the test.  The reader in unit_files.py checks the promises of the
deployment: what each role runs as, may touch and may call.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.unit_files import (BOOLEAN_OPTIONS, ROLES, TEMPLATE, UNIT_DIR, YES, EffectiveUnit, UnitError,
                                     parse_unit_text)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_EXEC = "/opt/pidaemon/venv/bin/pidaemon"
STATE_DIR = "/var/lib/pidaemon"
# Only the groups of the role's devices; video for /dev/vchiq (vcgencmd get_throttled) everywhere.
GROUPS = {"server": {"video"}, "worker": {"video"}, "audio": {"video", "audio"},
          "lights": {"video", "gpio", "spi", "dialout"}, "relay": {"video", "gpio", "dialout"}}
needs_systemd_analyze = pytest.mark.skipif(not shutil.which("systemd-analyze"),
                                           reason="systemd-analyze is not installed (apt-get install systemd)")


@pytest.fixture(scope="module")
def units() -> dict[str, EffectiveUnit]:
    return {role: EffectiveUnit(role) for role in ROLES}


def runnable_copy(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this interpreter's `-m pidaemon`, which exists here."""
    copy = tmp_path / "units"
    shutil.copytree(UNIT_DIR, copy)
    template = copy / TEMPLATE
    text = template.read_text()
    assert f"ExecStart={SHIPPED_EXEC} " in text
    template.write_text(text.replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={sys.executable} -m pidaemon "))
    return copy


@needs_systemd_analyze
@pytest.mark.parametrize("role", ROLES)
def test_systemd_analyze_verify_passes_without_a_word(tmp_path, role):
    copy = runnable_copy(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy / f"pidaemon@{role}.service")],
                            capture_output=True, text=True, cwd=copy)
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result


@needs_systemd_analyze
def test_systemd_analyze_verify_does_catch_a_misspelt_option(tmp_path):
    """The check above can fail: a drop-in with a typo makes verify speak."""
    copy = runnable_copy(tmp_path)
    (copy / "pidaemon@worker.service.d" / "typo.conf").parent.mkdir(exist_ok=True)
    (copy / "pidaemon@worker.service.d" / "typo.conf").write_text("[Service]\nProtectSytem=strict\n")
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy / "pidaemon@worker.service")],
                            capture_output=True, text=True, cwd=copy)
    assert "Unknown key 'ProtectSytem'" in result.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("role", ROLES)
def test_offline_security_analysis_rates_every_role_well_confined(tmp_path, role):
    """systemd's own exposure score (0 best, 10 worst), from the unit files alone (systemd 250+)."""
    copy = runnable_copy(tmp_path)
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                             str(copy / f"pidaemon@{role}.service")], capture_output=True, text=True, cwd=copy)
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("systemd-analyze security has no --offline here (systemd 250+)")
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= 2.5, result.stdout


@pytest.mark.parametrize("role", ROLES)
def test_each_role_runs_as_the_unprivileged_user_under_the_promised_confinement(units, role):
    unit = units[role]
    assert unit.get("Type") == "notify" and unit.get("NotifyAccess") == "main"
    assert int(unit.get("WatchdogSec")) > 0
    assert unit.get("TimeoutStartSec") == "infinity"    # a node waits for its server's announcement
    assert unit.get("Restart") == "on-failure"
    assert unit.get("User") == "pidaemon" and unit.get("Group") == "pidaemon"
    assert unit.get("DynamicUser") is None      # the same uid on every boot: the secret file is owned by it
    assert unit.get("ProtectSystem") == "strict" and unit.get("ProtectHome") == "yes"
    assert unit.get("StateDirectory") == "pidaemon"
    for option in BOOLEAN_OPTIONS:
        assert (unit.get(option) or "").lower() in YES, f"{option} is not on for {role}"
    assert unit.get("CapabilityBoundingSet") == "" and unit.get("AmbientCapabilities") == ""
    assert unit.get("DevicePolicy") == "closed"
    assert set(unit.words("RestrictAddressFamilies")) == {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"}
    assert unit.all("SystemCallFilter") == ["@system-service", "~@privileged"]
    assert unit.get("SystemCallArchitectures") == "native"
    assert set(unit.words("SupplementaryGroups")) == GROUPS[role]
    assert unit.get("WantedBy", "Install") == "multi-user.target"


@pytest.mark.parametrize("role", ROLES)
def test_each_role_starts_the_shipped_program_on_its_own_role_file(units, role):
    command = units[role].instance_value("ExecStart").split()
    assert command == [SHIPPED_EXEC, "run", "--config", f"/etc/pidaemon/{role}.yaml"]
    role_file = ROOT / "config" / f"{role}.yaml"
    node = yaml.safe_load(role_file.read_text())["node"]
    assert node["role"] == role
    # ProtectSystem=strict leaves only the state directory writable: the role file must keep its state there.
    assert node["state_dir"] == STATE_DIR
    assert node.get("local_config", f"{STATE_DIR}/local.yaml").startswith(f"{STATE_DIR}/")


def test_only_the_server_waits_for_the_broker_and_only_device_roles_get_devices(units):
    assert "mosquitto.service" in units["server"].words("After", "Unit")
    for role in ("worker", "audio", "lights", "relay"):
        assert "mosquitto.service" not in units[role].words("After", "Unit")
    pseudo_only = {"/dev/vchiq"}
    assert set(units["worker"].words("DeviceAllow")[::2]) == pseudo_only
    assert set(units["server"].words("DeviceAllow")[::2]) == pseudo_only
    assert "char-alsa" in units["audio"].words("DeviceAllow")
    assert {"char-spi", "char-ttyACM", "char-ttyUSB", "/dev/gpiomem"} <= set(units["lights"].words("DeviceAllow"))
    assert {"char-gpiochip", "char-ttyACM", "/dev/gpiomem"} <= set(units["relay"].words("DeviceAllow"))
    assert "char-spi" not in units["relay"].words("DeviceAllow")


@pytest.mark.parametrize("text, why", [
    ("[Service]\nProtectSytem=strict\n", "unknown key ProtectSytem"),
    ("[Service]\nNoNewPrivileges\n", "not KEY=VALUE"),
    ("User=pidaemon\n", "outside a section"),
    ("[Servce]\nUser=pidaemon\n", "unknown section"),
])
def test_the_reader_refuses_what_systemd_would_ignore(text, why):
    with pytest.raises(UnitError, match=why):
        parse_unit_text(text, "drop-in.conf")


def test_a_drop_in_that_loosened_a_role_would_be_seen(tmp_path):
    copy = tmp_path / "units"
    shutil.copytree(UNIT_DIR, copy)
    (copy / "pidaemon@worker.service.d").mkdir(exist_ok=True)
    (copy / "pidaemon@worker.service.d" / "zz-root.conf").write_text("[Service]\nUser=root\nSupplementaryGroups=\n")
    unit = EffectiveUnit("worker", copy)
    assert unit.get("User") == "root" and unit.words("SupplementaryGroups") == []


@pytest.mark.skipif(not shutil.which("systemd-sysusers"), reason="systemd-sysusers is not installed")
def test_sysusers_creates_the_user_and_the_device_groups(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        (root / "etc" / name).write_text("")
    (root / "etc" / "group").write_text("dialout:x:20:\naudio:x:29:\nvideo:x:44:\n")   # as systemd's basic.conf
    result = subprocess.run(["systemd-sysusers", f"--root={root}", str(UNIT_DIR / "pidaemon.sysusers")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    user = passwd["pidaemon"]
    assert 0 < int(user[2]) < 1000 and user[5] == STATE_DIR and user[6] == "/usr/sbin/nologin"
    assert groups["pidaemon"][2] == user[3]                 # its own group, and no other
    assert not any("pidaemon" in g[3].split(",") for g in groups.values())
    assert {"gpio", "spi"} <= set(groups)
    # Every group a unit names exists after sysusers, or comes with systemd (dialout, audio, video).
    named = {group for role in ROLES for group in EffectiveUnit(role).words("SupplementaryGroups")}
    assert named <= set(groups)
