"""udev/: every rule is one udev accepts, every device name the configuration expects is made by one,
and every group a rule gives a device is one that a role's unit grants the daemon."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.udev_rules import RuleError, parse_rules
from tests.deploy.unit_files import ROLES, UNIT_DIR, EffectiveUnit

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "udev").glob("*.rules"))
# The boards' names (issue 13), whether or not a role file names them yet.
BOARD_NAMES = {"picluster-relay", "picluster-lights"}


def all_rules():
    return [rule for path in RULES for rule in parse_rules(path)]


def expected_device_names() -> set[str]:
    """The two boards' names, and every /dev/picluster-* a role file or the docs name."""
    names = set(BOARD_NAMES)
    for path in [*(ROOT / "config").glob("*.yaml"), *(ROOT / "docs").glob("*.md")]:
        names |= set(re.findall(r"/dev/(picluster-[A-Za-z0-9_-]+)", path.read_text()))
    return names


def test_the_rules_files_are_there_and_every_rule_parses():
    assert [p.name for p in RULES] == ["90-picluster-devices.rules", "91-picluster-arduino.rules"]
    rules = all_rules()
    assert len(rules) >= 9
    for rule in rules:
        assert rule.matches(), rule


@pytest.mark.skipif(not shutil.which("udevadm"), reason="udevadm is not installed")
def test_udevadm_verify_accepts_the_rules_where_it_exists():
    help_text = subprocess.run(["udevadm", "--help"], capture_output=True, text=True).stdout
    if "verify" not in help_text:
        pytest.skip("this udevadm has no verify (systemd 253+)")
    # Groups (gpio, spi) need not exist on the machine that runs the tests: do not resolve names.
    result = subprocess.run(["udevadm", "verify", "--resolve-names=never", *map(str, RULES)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_device_name_the_configuration_expects_is_made_by_a_rule():
    made = {name for rule in all_rules() for value in rule.assigned("SYMLINK") for name in value.split()}
    missing = expected_device_names() - made
    assert not missing, f"no udev rule makes /dev/{', /dev/'.join(sorted(missing))}"


def test_each_board_is_named_by_vendor_product_and_serial_or_by_port_for_clones():
    for name in BOARD_NAMES:
        rules = [rule for rule in all_rules() if name in rule.assigned("SYMLINK")]
        keys = [{(p.key, p.attr): p.value for p in rule.matches()} for rule in rules]
        genuine = [k for k in keys if k.get(("ATTRS", "idVendor")) == "2341"]
        clones = [k for k in keys if k.get(("ATTRS", "idVendor")) == "1a86"]
        assert len(genuine) == 1 and len(clones) == 1, (name, keys)
        assert set(genuine[0][("ATTRS", "idProduct")].split("|")) == {"0042", "0010"}   # Mega 2560 R3, first revision
        assert ("ATTRS", "serial") in genuine[0]
        assert clones[0][("ATTRS", "idProduct")] == "7523" and ("KERNELS", None) in clones[0]
        for rule in rules:
            assert rule.assigned("GROUP") == ["dialout"] and rule.assigned("MODE") == ["0660"]
    # One serial number per board: the same placeholder twice would give both boards one name.
    serials = [p.value for rule in all_rules() for p in rule.matches() if p.attr == "serial"]
    assert len(serials) == len(set(serials)) == 2


def test_the_hardware_the_daemon_drives_is_in_a_group_not_roots():
    groups = {}
    for rule in all_rules():
        kernel = next((p.value for p in rule.matches() if p.key == "KERNEL"), "")
        for group in rule.assigned("GROUP"):
            groups.setdefault(group, set()).add(kernel)
    assert any("ttyACM" in k and "ttyUSB" in k for k in groups["dialout"])
    assert "gpiomem" in groups["gpio"] and any(k.startswith("gpiochip") for k in groups["gpio"])
    assert any(k.startswith("spidev") for k in groups["spi"])


def test_every_group_the_rules_give_a_device_is_granted_by_some_roles_unit():
    granted = {group for role in ROLES for group in EffectiveUnit(role, UNIT_DIR).words("SupplementaryGroups")}
    used = {group for rule in all_rules() for group in rule.assigned("GROUP")}
    assert used <= granted, f"groups no unit grants: {used - granted}"


@pytest.mark.parametrize("line, why", [
    ('KERNEL="gpiomem", GROUP="gpio"', "KERNEL is matched with == or !=, not assigned"),   # = for ==
    ('KERNEL=="gpiomem", GROUP=="gpio"', "GROUP cannot be matched"),
    ('KERNEL=="gpiomem", GRUOP="gpio"', "unknown key GRUOP"),
    ('KERNEL=="gpiomem", GROUP=gpio', "cannot read"),                            # unquoted
    ('KERNEL=="gpiomem" GROUP="gpio"', "cannot read"),                           # no comma
    ('ATTRS=="2341", SYMLINK+="x"', "needs an attribute"),
    ('KERNEL=="gpiomem", MODE="rw"', "MODE must be octal"),
    ('KERNEL=="ttyACM0", SYMLINK+="/dev/picluster-relay"', "relative to /dev"),
    ('GROUP="gpio"', "applies to every device"),
])
def test_the_reader_refuses_what_udev_would_not_accept(tmp_path, line, why):
    path = tmp_path / "bad.rules"
    path.write_text(f"# a comment\n{line}\n")
    with pytest.raises(RuleError, match=why) as error:
        parse_rules(path)
    assert f"{path}:2" in str(error.value)


def test_the_reader_joins_continued_lines(tmp_path):
    path = tmp_path / "continued.rules"
    path.write_text('SUBSYSTEM=="tty", \\\n  ATTRS{idVendor}=="2341", SYMLINK+="picluster-relay"\n')
    (rule,) = parse_rules(path)
    assert rule.line == 1 and rule.assigned("SYMLINK") == ["picluster-relay"]
