"""docs/deploy.md names what the project ships, as it is named, and installs every part of it."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.unit_files import ROLES, UNIT_DIR

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deploy.md").read_text()


def test_every_shipped_file_the_guide_names_exists():
    named = set(re.findall(r"`((?:udev|systemd|config)/[^`\s]+)`", DOC))   # the shipped paths, as `code`
    concrete = {path for path in named if "<" not in path}
    assert concrete, "the guide names no shipped file"
    missing = sorted(path for path in concrete if not (ROOT / path).exists())
    assert not missing, missing
    for path in named - concrete:        # systemd/pidaemon@<role>.service.d/role.conf: one per role with a drop-in
        for role in ROLES:
            candidate = ROOT / path.replace("<role>", role)
            if path.startswith("config/") or (UNIT_DIR / f"pidaemon@{role}.service.d").exists():
                assert candidate.exists(), candidate


def test_the_guide_installs_every_file_of_udev_and_systemd():
    for path in [*(ROOT / "udev").iterdir(), UNIT_DIR / "pidaemon@.service", UNIT_DIR / "pidaemon.sysusers"]:
        assert path.name in DOC, f"docs/deploy.md does not install {path.relative_to(ROOT)}"
    for drop_in in UNIT_DIR.glob("pidaemon@*.service.d"):
        role = drop_in.name.split("@")[1].split(".")[0]
        install_loop = re.search(r"for role in ([a-z ]+); do\n\s+sudo install -d \"/etc/systemd/system/pidaemon@\$role",
                                 DOC)
        assert install_loop and role in install_loop.group(1).split(), role
    for role in ROLES:
        assert f"pidaemon@{role}" in DOC
