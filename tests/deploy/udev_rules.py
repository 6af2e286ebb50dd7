"""A reader of udev rules files, strict enough to stand in for `udevadm verify` (systemd 253+).

Each rule is a line (a trailing backslash continues it) of comma-separated
`KEY<op>"value"` pairs.  Matching keys take `==` or `!=`; assigning keys `=`,
`+=`, `-=` or `:=`; some keys do both.  Keys with an attribute name take it in
braces (`ATTRS{serial}`).  Values are double-quoted.  Anything else is an error,
with the file and line, as udev itself would log and then skip the rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MATCH_OPS = ("==", "!=")
ASSIGN_OPS = ("=", "+=", "-=", ":=")

# udev(7): key -> (may match, may assign, takes {attribute})
KEYS = {
    "ACTION": (True, False, False), "DEVPATH": (True, False, False), "KERNEL": (True, False, False),
    "KERNELS": (True, False, False), "SUBSYSTEM": (True, False, False), "SUBSYSTEMS": (True, False, False),
    "DRIVER": (True, False, False), "DRIVERS": (True, False, False), "ATTRS": (True, False, True),
    "TAGS": (True, False, False), "TEST": (True, False, True), "PROGRAM": (True, False, False),
    "RESULT": (True, False, False), "CONST": (True, False, True),
    "NAME": (True, True, False), "SYMLINK": (True, True, False), "TAG": (True, True, False),
    "ENV": (True, True, True), "ATTR": (True, True, True), "SYSCTL": (True, True, True),
    "OWNER": (False, True, False), "GROUP": (False, True, False), "MODE": (False, True, False),
    "SECLABEL": (False, True, True), "RUN": (False, True, True), "LABEL": (False, True, False),
    "GOTO": (False, True, False), "IMPORT": (False, True, True), "OPTIONS": (False, True, False),
}

PAIR = re.compile(r'\s*(?P<key>[A-Z_]+)(?:\{(?P<attr>[^{}"\s]+)\})?\s*(?P<op>==|!=|\+=|-=|:=|=)\s*'
                  r'"(?P<value>(?:[^"\\]|\\.)*)"\s*(?P<sep>,|$)')


class RuleError(ValueError):
    """A line udev would not accept: says where and why."""


@dataclass(frozen=True)
class Pair:
    key: str
    attr: str | None
    op: str
    value: str

    @property
    def is_match(self) -> bool:
        return self.op in MATCH_OPS


@dataclass(frozen=True)
class Rule:
    path: Path
    line: int
    pairs: tuple[Pair, ...]

    def matches(self) -> list[Pair]:
        return [p for p in self.pairs if p.is_match]

    def assigned(self, key: str) -> list[str]:
        return [p.value for p in self.pairs if p.key == key and not p.is_match]


def logical_lines(text: str):
    """(first line number, text) of each rule: comments and blank lines skipped, continuations joined."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        yield start, pending + raw
        pending = ""
    if pending:
        raise RuleError(f"line {start}: the file ends inside a continued line")


def parse_pair(text: str, pos: int, where: str) -> tuple[Pair, int]:
    found = PAIR.match(text, pos)
    if not found:
        raise RuleError(f"{where}: cannot read a KEY==\"value\" pair at {text[pos:pos + 40]!r}")
    key, attr, op = found["key"], found["attr"], found["op"]
    if key not in KEYS:
        raise RuleError(f"{where}: unknown key {key}")
    may_match, may_assign, takes_attr = KEYS[key]
    if takes_attr and not attr and key not in ("RUN", "IMPORT"):
        raise RuleError(f"{where}: {key} needs an attribute in braces ({key}{{name}})")
    if attr and not takes_attr:
        raise RuleError(f"{where}: {key} takes no attribute, got {{{attr}}}")
    if op in MATCH_OPS and not may_match:
        raise RuleError(f"{where}: {key} cannot be matched ({op}); it is assigned with =")
    if op in ASSIGN_OPS and not may_assign:
        raise RuleError(f"{where}: {key} is matched with == or !=, not assigned with {op}")
    if key == "MODE" and not re.fullmatch(r"0?[0-7]{3}", found["value"]):
        raise RuleError(f"{where}: MODE must be octal, like \"0660\", got {found['value']!r}")
    if key == "SYMLINK" and op in ASSIGN_OPS and found["value"].startswith("/"):
        raise RuleError(f"{where}: SYMLINK is relative to /dev, got {found['value']!r}")
    return Pair(key, attr, op, found["value"]), found.end()


def parse_rules(path: Path) -> list[Rule]:
    """Every rule of a rules file; RuleError on the first line udev would reject."""
    rules = []
    for number, line in logical_lines(path.read_text()):
        where = f"{path}:{number}"
        pairs, pos = [], 0
        while pos < len(line.rstrip()):
            pair, pos = parse_pair(line, pos, where)
            pairs.append(pair)
        if not any(p.is_match for p in pairs) and not any(p.key == "LABEL" for p in pairs):
            raise RuleError(f"{where}: a rule without a match applies to every device")
        rules.append(Rule(path, number, tuple(pairs)))
    return rules
