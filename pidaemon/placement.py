"""Where each Pi sits in the cluster's box: the placement file the operator writes once.

The box holds racks side by side, each a stack of banks, each bank a row of
slots (the real machine: 4 racks of 5, 5, 5 and 6 banks, 50 Pis per bank,
1,050 in all).  The file (YAML, documented in docs/dashboard.md):

    racks: [5, 5, 5, 6]        # banks per rack (this is the default shape)
    slots: 50                  # Pis per bank
    nodes:                     # node id or MAC -> place (1-based)
      pi-0a1b2c: {rack: 1, bank: 1, slot: 1}
      "b8:27:eb:0a:1b:2d": {rack: 1, bank: 1, slot: 2}

A key with a `:` is a MAC (2-20 hexadecimal bytes, compared in lower case),
any other a node id (`pidaemon.names`).  A node is placed by its id, else by
the MAC its `info` gives; any other node is unplaced (the dashboard's tray).
Every problem is reported at once, each with the file and line, like a
configuration error (`ConfigError`).  `write_placement` writes one: the
simulator places its workers in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .config import ConfigError, load_yaml_file
from .names import NAME_DOC, is_name
from .schema import did_you_mean

DEFAULT_RACKS = (5, 5, 5, 6)
DEFAULT_SLOTS = 50
MAX_RACKS = 64
MAX_BANKS = 1000      # in one rack
MAX_SLOTS = 1000      # in one bank
MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){1,19}", re.IGNORECASE)
MAC_DOC = "a MAC address such as b8:27:eb:1a:2b:3c (2-20 hex bytes joined by ':')"
TOP_KEYS = ("racks", "slots", "nodes")
PLACE_KEYS = ("rack", "bank", "slot")


class PlacementError(ConfigError):
    """A placement file that cannot be used: every problem, each as `file:line: where: what`."""


@dataclass(frozen=True)
class Place:
    rack: int
    bank: int
    slot: int

    def as_list(self) -> list[int]:
        return [self.rack, self.bank, self.slot]

    def __str__(self) -> str:
        return f"rack {self.rack}, bank {self.bank}, slot {self.slot}"


@dataclass(frozen=True)
class Layout:
    """The shape of the box: banks per rack, slots per bank."""

    racks: tuple[int, ...] = DEFAULT_RACKS
    slots: int = DEFAULT_SLOTS

    @property
    def capacity(self) -> int:
        return sum(self.racks) * self.slots

    def places(self) -> Iterable[Place]:
        """Every place, in reading order: rack 1 bank 1 slot 1, slot 2, ..., bank 2, ..., rack 2, ..."""
        for rack, banks in enumerate(self.racks, 1):
            for bank in range(1, banks + 1):
                for slot in range(1, self.slots + 1):
                    yield Place(rack, bank, slot)

    def as_dict(self) -> dict[str, Any]:
        return {"racks": list(self.racks), "slots": self.slots}


@dataclass(frozen=True)
class Placement:
    layout: Layout = Layout()
    by_id: Mapping[str, Place] = field(default_factory=dict)
    by_mac: Mapping[str, Place] = field(default_factory=dict)   # lower-case MACs
    source: str | None = None                                   # the file, for log lines

    def place_of(self, node_id: str, mac: str | None = None) -> Place | None:
        """The node's place: by its id, else by its MAC; None: unplaced."""
        place = self.by_id.get(node_id)
        if place is None and isinstance(mac, str):
            place = self.by_mac.get(mac.lower())
        return place

    def __len__(self) -> int:
        return len(self.by_id) + len(self.by_mac)


def is_mac(text: str) -> bool:
    return MAC.fullmatch(text) is not None


def load_placement(path: str | Path) -> Placement:
    """Read and check a placement file; raises PlacementError naming every problem with its line."""
    try:
        data, locations = load_yaml_file(path)
    except PlacementError:
        raise
    except ConfigError as exc:  # unreadable, not YAML, a duplicate key
        raise PlacementError(exc.messages) from None
    problems: list[str] = []

    def problem(where: tuple[str, ...], message: str) -> None:
        place = locations.get(where) or locations.get(where[:-1]) or locations[()]
        problems.append(f"{place}: {'.'.join(where) + ': ' if where else ''}{message}")

    for key in data:
        if key not in TOP_KEYS:
            problem((str(key),), f"unknown key (known: {', '.join(TOP_KEYS)}){did_you_mean(str(key), TOP_KEYS)}")
    layout = _layout(data, problem)
    nodes = data.get("nodes")
    by_id: dict[str, Place] = {}
    by_mac: dict[str, Place] = {}
    if nodes is None:
        nodes = {}
    elif not isinstance(nodes, dict):
        problem(("nodes",), f"expected a mapping of node ids or MACs to places, got {_describe(nodes)}")
        nodes = {}
    taken: dict[Place, str] = {}  # place: the key that took it
    seen: dict[str, str] = {}     # node id or lower-case MAC: its key as written
    for key, value in nodes.items():
        where = ("nodes", str(key))
        name = _node_key(key)
        if name is None:
            problem(where, f"expected a node id ({NAME_DOC}) or {MAC_DOC}"
                    + ("; quote a key made of digits only" if isinstance(key, (int, float)) else ""))
            continue
        place = _place(value, layout, where, problem)
        if place is None:
            continue
        if name in seen:  # the same MAC twice, in different cases
            problem(where, f"{key} is placed twice (also as {seen[name]}, {locations.get(('nodes', seen[name]))})")
            continue
        seen[name] = str(key)
        if place in taken:
            earlier = taken[place]
            problem(where, f"{place} is already the place of {earlier} ({locations.get(('nodes', earlier))})")
            continue
        taken[place] = str(key)
        (by_mac if ":" in name else by_id)[name] = place
    if problems:
        raise PlacementError(problems)
    return Placement(layout, by_id, by_mac, str(path))


def _node_key(key: Any) -> str | None:
    """The node id, or the lower-case MAC, of a key of `nodes`; None when it is neither."""
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)  # `1234: {...}`: YAML read the id as a number
    if not isinstance(key, str):
        return None
    if ":" in key:
        return key.lower() if is_mac(key) else None
    return key if is_name(key) else None


def _layout(data: Mapping[str, Any], problem) -> Layout:
    racks, slots = data.get("racks", list(DEFAULT_RACKS)), data.get("slots", DEFAULT_SLOTS)
    if not isinstance(racks, list) or not 1 <= len(racks) <= MAX_RACKS \
            or not all(_whole(b) and 1 <= b <= MAX_BANKS for b in racks):
        problem(("racks",), f"expected a list of 1 to {MAX_RACKS} bank counts (whole numbers from 1 to "
                            f"{MAX_BANKS}), got {_describe(racks)}")
        racks = list(DEFAULT_RACKS)
    if not _whole(slots) or not 1 <= slots <= MAX_SLOTS:
        problem(("slots",), f"expected a whole number from 1 to {MAX_SLOTS}, got {_describe(slots)}")
        slots = DEFAULT_SLOTS
    return Layout(tuple(racks), slots)


def _place(value: Any, layout: Layout, where: tuple[str, ...], problem) -> Place | None:
    if not isinstance(value, dict):
        problem(where, f"expected a place {{rack: R, bank: B, slot: S}}, got {_describe(value)}")
        return None
    unknown = [str(k) for k in value if k not in PLACE_KEYS]
    if unknown:
        problem(where, f"unknown key {unknown[0]} in a place (rack, bank, slot){did_you_mean(unknown[0], PLACE_KEYS)}")
        return None
    missing = [k for k in PLACE_KEYS if k not in value]
    if missing:
        problem(where, f"a place needs rack, bank and slot; {', '.join(missing)} missing")
        return None
    rack, bank, slot = (value[k] for k in PLACE_KEYS)
    if not _whole(rack) or not 1 <= rack <= len(layout.racks):
        problem(where, f"rack {_describe(rack)} is out of range: the box has racks 1 to {len(layout.racks)}")
    elif not _whole(bank) or not 1 <= bank <= layout.racks[rack - 1]:
        problem(where, f"bank {_describe(bank)} is out of range: rack {rack} has banks 1 to {layout.racks[rack - 1]}")
    elif not _whole(slot) or not 1 <= slot <= layout.slots:
        problem(where, f"slot {_describe(slot)} is out of range: a bank has slots 1 to {layout.slots}")
    else:
        return Place(rack, bank, slot)
    return None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def placement_for(node_ids: Iterable[str], layout: Layout = Layout()) -> dict[str, Place]:
    """The first places of the box, in reading order, for `node_ids` in order; those beyond its capacity
    are left unplaced."""
    return dict(zip(node_ids, layout.places()))


def write_placement(path: str | Path, places: Mapping[str, Place], layout: Layout = Layout(),
                    comment: str = "") -> Path:
    """Write a placement file that `load_placement` reads back to the same places."""
    path = Path(path)
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"racks: [{', '.join(str(b) for b in layout.racks)}]", f"slots: {layout.slots}", "nodes:"]
    for key, place in places.items():
        name = f'"{key}"' if ":" in key else key
        lines.append(f"  {name}: {{rack: {place.rack}, bank: {place.bank}, slot: {place.slot}}}")
    if not places:
        lines[-1] = "nodes: {}"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path
