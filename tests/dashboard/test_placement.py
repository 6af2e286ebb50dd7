"""The placement file: every mistake reported with its file and line, lookups by id then by MAC, the simulator's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pidaemon.placement import Layout, Place, PlacementError, load_placement, placement_for, write_placement
from pidaemon.sim import SimulatedCluster, default_roles, worker_id


def problems(tmp_path, text: str) -> list[str]:
    path = tmp_path / "placement.yaml"
    path.write_text(text)
    with pytest.raises(PlacementError) as caught:
        load_placement(path)
    return [line.replace(str(path), "FILE") for line in caught.value.messages]


def test_a_good_file_places_by_id_then_by_mac(tmp_path):
    path = tmp_path / "placement.yaml"
    path.write_text("racks: [2, 3]\nslots: 4\nnodes:\n"
                    "  pi-0a1b2c: {rack: 1, bank: 1, slot: 1}\n"
                    "  \"B8:27:EB:0A:1B:2D\": {rack: 2, bank: 3, slot: 4}\n"
                    "  1234: {rack: 1, bank: 2, slot: 1}\n")
    placement = load_placement(path)
    assert placement.layout == Layout((2, 3), 4) and placement.layout.capacity == 20
    assert placement.place_of("pi-0a1b2c") == Place(1, 1, 1)
    assert placement.place_of("pi-other", "b8:27:eb:0a:1b:2d") == Place(2, 3, 4)   # by MAC, any case
    assert placement.place_of("pi-0a1b2c", "b8:27:eb:0a:1b:2d") == Place(1, 1, 1)  # the id first
    assert placement.place_of("1234") == Place(1, 2, 1)
    assert placement.place_of("pi-unplaced", "02:00:00:00:00:09") is None


def test_the_default_shape_and_an_empty_file(tmp_path):
    path = tmp_path / "placement.yaml"
    path.write_text("# nothing placed yet\n")
    placement = load_placement(path)
    assert placement.layout.racks == (5, 5, 5, 6) and placement.layout.slots == 50
    assert placement.layout.capacity == 1050 and len(placement) == 0


@pytest.mark.parametrize("text, expected", [
    ("nodes:\n  pi-1: {rack: 5, bank: 1, slot: 1}\n",
     "FILE:2: nodes.pi-1: rack 5 is out of range: the box has racks 1 to 4"),
    ("nodes:\n  pi-1: {rack: 4, bank: 7, slot: 1}\n",
     "FILE:2: nodes.pi-1: bank 7 is out of range: rack 4 has banks 1 to 6"),
    ("nodes:\n  pi-1: {rack: 1, bank: 1, slot: 51}\n",
     "FILE:2: nodes.pi-1: slot 51 is out of range: a bank has slots 1 to 50"),
    ("nodes:\n  pi-1: {rack: 1, bank: 1, slot: 0}\n",
     "FILE:2: nodes.pi-1: slot 0 is out of range: a bank has slots 1 to 50"),
    ("nodes:\n  pi-1: {rack: true, bank: 1, slot: 1}\n",
     "FILE:2: nodes.pi-1: rack True is out of range: the box has racks 1 to 4"),
    ("nodes:\n  pi-1: {rack: 1, bank: 1}\n",
     "FILE:2: nodes.pi-1: a place needs rack, bank and slot; slot missing"),
    ("nodes:\n  pi-1: {rack: 1, bank: 1, slott: 1}\n",
     'FILE:2: nodes.pi-1: unknown key slott in a place (rack, bank, slot); did you mean "slot"?'),
    ("nodes:\n  pi-1: [1, 1, 1]\n",
     "FILE:2: nodes.pi-1: expected a place {rack: R, bank: B, slot: S}, got [1, 1, 1]"),
    ("nodes:\n  pi-1: {rack: 1, bank: 1, slot: 1}\n  pi-2: {rack: 1, bank: 1, slot: 1}\n",
     "FILE:3: nodes.pi-2: rack 1, bank 1, slot 1 is already the place of pi-1 (FILE:2)"),
    ("nodes:\n  \"not a node!\": {rack: 1, bank: 1, slot: 1}\n",
     "FILE:2: nodes.not a node!: expected a node id (1-64 letters, digits, '_', '-' or '.', starting with a "
     "letter or digit) or a MAC address such as b8:27:eb:1a:2b:3c (2-20 hex bytes joined by ':')"),
    ("nodes:\n  \"b8:27:eb:zz:1b:2d\": {rack: 1, bank: 1, slot: 1}\n",
     "FILE:2: nodes.b8:27:eb:zz:1b:2d: expected a node id"),
    ("nodes:\n  1.5: {rack: 1, bank: 1, slot: 1}\n",
     "quote a key made of digits only"),
    ("nodes:\n  \"b8:27:eb:0a:1b:2d\": {rack: 1, bank: 1, slot: 1}\n"
     "  \"B8:27:EB:0A:1B:2D\": {rack: 1, bank: 1, slot: 2}\n",
     "FILE:3: nodes.B8:27:EB:0A:1B:2D: B8:27:EB:0A:1B:2D is placed twice (also as b8:27:eb:0a:1b:2d, FILE:2)"),
    ("nodes:\n  pi-1: {rack: 1, bank: 1, slot: 1}\n  pi-1: {rack: 1, bank: 1, slot: 2}\n",
     "FILE:3: YAML syntax error: duplicate key 'pi-1'"),
    ("racks: [5, 0]\n", "FILE:1: racks: expected a list of 1 to 64 bank counts"),
    ("racks: 4\n", "FILE:1: racks: expected a list of 1 to 64 bank counts"),
    ("slots: fifty\n", "FILE:1: slots: expected a whole number from 1 to 1000, got 'fifty'"),
    ("rack: [5]\n", 'FILE:1: rack: unknown key (known: racks, slots, nodes); did you mean "racks"?'),
    ("nodes: [pi-1]\n", "FILE:1: nodes: expected a mapping of node ids or MACs to places, got ['pi-1']"),
    ("nodes:\n  pi-1: {rack: 1\n", "FILE:3: YAML syntax error"),
    ("- just a list\n", "FILE:1: the file must hold a mapping"),
])
def test_each_mistake_is_reported_with_its_line(tmp_path, text, expected):
    found = problems(tmp_path, text)
    assert any(expected in line for line in found), found


def test_every_mistake_is_reported_at_once(tmp_path):
    found = problems(tmp_path, "slots: 0\nnodes:\n  pi-1: {rack: 9, bank: 1, slot: 1}\n"
                               "  \"x:y\": {rack: 1, bank: 1, slot: 1}\n")
    assert [line.split(":")[1] for line in found] == ["1", "3", "4"], found


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(PlacementError) as caught:
        load_placement(tmp_path / "nowhere.yaml")
    assert "nowhere.yaml: cannot read" in str(caught.value)


def test_written_files_read_back_and_1050_workers_fill_the_box(tmp_path):
    ids = [f"sim-worker-{i:04d}" for i in range(1, 1052)]
    places = placement_for(ids)
    assert len(places) == 1050 and "sim-worker-1051" not in places  # beyond the box: the tray
    assert places["sim-worker-0001"] == Place(1, 1, 1) and places["sim-worker-0051"] == Place(1, 2, 1)
    assert places["sim-worker-0251"] == Place(2, 1, 1) and places["sim-worker-1050"] == Place(4, 6, 50)
    places["02:00:00:00:00:0a"] = Place(1, 1, 1)  # a MAC is quoted when written
    del places["sim-worker-0001"]
    loaded = load_placement(write_placement(tmp_path / "p.yaml", places, comment="two\nlines"))
    assert {**loaded.by_id, **loaded.by_mac} == places


def test_the_simulator_places_its_workers_for_its_dashboard(tmp_path):
    roles = default_roles()
    roles["server"]["plugins"] = {"ping": {}, "dashboard": {}, "http": {"listen": "0.0.0.0:8181"}}
    cluster = SimulatedCluster(3, state_dir=tmp_path / "sim", roles=roles, devices=False)
    assert cluster.placement_file == tmp_path / "sim" / "placement.yaml"
    section = cluster.server.config.plugin_sections["dashboard"]
    assert section["placement"] == str(cluster.placement_file)
    placement = load_placement(cluster.placement_file)
    assert [placement.place_of(worker_id(i)) for i in (1, 2, 3)] == [Place(1, 1, 1), Place(1, 1, 2), Place(1, 1, 3)]
    assert placement.place_of("sim-server") is None
    assert cluster.dashboard_url == "http://127.0.0.1:8181/"
    # A placement of the user's own is left alone; without a dashboard there is nothing to write.
    roles["server"]["plugins"]["dashboard"] = {"placement": str(tmp_path / "mine.yaml")}
    assert SimulatedCluster(2, state_dir=tmp_path / "sim2", roles=roles, devices=False).placement_file is None
    roles["server"]["plugins"]["dashboard"] = {"enabled": False}
    assert SimulatedCluster(2, state_dir=tmp_path / "sim3", roles=roles, devices=False).placement_file is None


def test_config_check_reads_the_placement_file_and_names_its_mistakes(tmp_path):
    """Before: `config check` said ok, and the dashboard then failed at start (its page a bare 404)."""
    placement = tmp_path / "placement.yaml"
    placement.write_text("nodes:\n  w1: {rack: 9, bank: 1, slot: 1}\n")
    config = tmp_path / "server.yaml"
    config.write_text(f"node: {{role: server, id: s1}}\nplugins:\n  http: {{listen: '127.0.0.1:0'}}\n"
                      f"  dashboard: {{placement: {placement}}}\n")
    checked = subprocess.run([sys.executable, "-m", "pidaemon", "config", "check", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert f"{config}:4: plugins.dashboard.placement: the dashboard will not start: {placement}:2: nodes.w1: " \
           f"rack 9 is out of range" in checked.stderr, checked.stderr
    assert "http" not in checked.stderr.replace("plugins.dashboard.placement", ""), checked.stderr
    placement.unlink()
    config.write_text(f"node: {{role: server, id: s1}}\nplugins:\n  dashboard: {{placement: {placement}}}\n")
    checked = subprocess.run([sys.executable, "-m", "pidaemon", "config", "check", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert f"{placement}: cannot read" in checked.stderr, checked.stderr
    assert 'plugins.dashboard: its page is served by the "http" plugin' in checked.stderr, checked.stderr
