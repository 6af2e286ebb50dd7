"""Reading the shipped systemd units as systemd does: a template, then its instance's drop-ins.

Used where `systemd-analyze verify` is missing, and to check what verify does not:
that the options are the ones the deployment promises.  KNOWN holds the
directives the units may use, spelled as systemd.unit(5), systemd.service(5),
systemd.exec(5) and systemd.resource-control(5) spell them: a misspelt one is
not in it (systemd would only warn and ignore it, leaving the service less
confined than it reads).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

UNIT_DIR = Path(__file__).resolve().parents[2] / "systemd"
TEMPLATE = "pidaemon@.service"
ROLES = ("server", "worker", "audio", "lights", "relay")

KNOWN = {
    "Unit": {"Description", "Documentation", "Wants", "Requires", "After", "Before", "BindsTo", "PartOf",
             "Conflicts", "ConditionPathExists", "AssertPathExists", "StartLimitIntervalSec", "StartLimitBurst",
             "RequiresMountsFor"},
    "Service": {
        # service life
        "Type", "NotifyAccess", "ExecStart", "ExecStartPre", "ExecReload", "WatchdogSec", "TimeoutStartSec",
        "TimeoutStopSec", "Restart", "RestartSec", "OOMPolicy", "Environment", "EnvironmentFile", "KillMode",
        "KillSignal",
        # who
        "User", "Group", "SupplementaryGroups", "DynamicUser", "UMask", "WorkingDirectory",
        "StateDirectory", "StateDirectoryMode", "RuntimeDirectory", "LogsDirectory", "CacheDirectory",
        # privileges
        "NoNewPrivileges", "CapabilityBoundingSet", "AmbientCapabilities", "RestrictSUIDSGID",
        "LockPersonality", "RestrictRealtime", "RestrictNamespaces", "RemoveIPC",
        # file system
        "ProtectSystem", "ProtectHome", "PrivateTmp", "ProtectKernelTunables", "ProtectKernelModules",
        "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname", "ProtectProc",
        "ProcSubset", "PrivateMounts", "PrivateDevices", "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths",
        # devices, network, system calls
        "DevicePolicy", "DeviceAllow", "RestrictAddressFamilies", "IPAddressDeny", "IPAddressAllow",
        "SystemCallFilter", "SystemCallErrorNumber", "SystemCallArchitectures", "MemoryDenyWriteExecute",
        # resources
        "MemoryMax", "MemoryHigh", "TasksMax", "CPUQuota", "LimitNOFILE",
    },
    "Install": {"WantedBy", "RequiredBy", "Alias", "Also", "DefaultInstance"},
}

BOOLEAN_OPTIONS = ("NoNewPrivileges", "PrivateTmp", "ProtectKernelTunables", "ProtectKernelModules",
                   "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname",
                   "RestrictSUIDSGID", "LockPersonality", "RestrictRealtime", "RestrictNamespaces", "RemoveIPC",
                   "PrivateMounts", "MemoryDenyWriteExecute")
YES = {"yes", "true", "on", "1"}


class UnitError(ValueError):
    pass


def parse_unit_text(text: str, origin: str) -> dict[str, list[tuple[str, str, str]]]:
    """{section: [(key, value, "file:line"), ...]} in file order; UnitError on what systemd would ignore."""
    sections: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    section = None
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        raw = lines[number]
        number += 1
        start = number
        while raw.endswith("\\") and number < len(lines):   # a continued line
            raw = raw[:-1] + " " + lines[number]
            number += 1
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        where = f"{origin}:{start}"
        if line.startswith("["):
            if not line.endswith("]"):
                raise UnitError(f"{where}: bad section header {line!r}")
            section = line[1:-1]
            if section not in KNOWN:
                raise UnitError(f"{where}: unknown section [{section}]")
            continue
        if section is None:
            raise UnitError(f"{where}: assignment outside a section")
        if "=" not in line:
            raise UnitError(f"{where}: not KEY=VALUE: {line!r}")
        key, value = (part.strip() for part in line.split("=", 1))
        if key not in KNOWN[section]:
            raise UnitError(f"{where}: unknown key {key} in [{section}]")
        sections[section].append((key, value, where))
    return sections


class EffectiveUnit:
    """A role's unit: the template with the role's drop-ins applied (list keys accumulate, an empty value resets)."""

    LIST_KEYS = {"Wants", "Requires", "After", "Before", "Documentation", "SupplementaryGroups", "DeviceAllow",
                 "RestrictAddressFamilies", "SystemCallFilter", "Environment", "WantedBy", "ReadWritePaths",
                 "CapabilityBoundingSet", "AmbientCapabilities", "ExecStart"}

    def __init__(self, role: str, unit_dir: Path = UNIT_DIR):
        self.role = role
        self.files = [unit_dir / TEMPLATE]
        drop_ins = unit_dir / f"pidaemon@{role}.service.d"
        if drop_ins.is_dir():
            self.files += sorted(drop_ins.glob("*.conf"))
        self.values: dict[tuple[str, str], list[str]] = defaultdict(list)
        for path in self.files:
            for section, entries in parse_unit_text(path.read_text(), str(path)).items():
                for key, value, _where in entries:
                    slot = self.values[(section, key)]
                    if key in self.LIST_KEYS:
                        if value == "":
                            slot.clear()
                        else:
                            slot.append(value)
                    else:
                        slot[:] = [value]

    def get(self, key: str, section: str = "Service") -> str | None:
        """The value in force; "" for a list emptied by an empty assignment; None if never set."""
        if (section, key) not in self.values:
            return None
        values = self.values[(section, key)]
        return values[-1] if values else ""

    def all(self, key: str, section: str = "Service") -> list[str]:
        return list(self.values.get((section, key), []))

    def words(self, key: str, section: str = "Service") -> list[str]:
        return [word for value in self.all(key, section) for word in value.split()]

    def instance_value(self, key: str, section: str = "Service") -> str | None:
        value = self.get(key, section)
        return None if value is None else value.replace("%i", self.role)
