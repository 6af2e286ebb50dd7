"""Telemetry: real psutil readings, a fake thermal tree and vcgencmd, the payload against docs/telemetry.schema.json."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import psutil
import pytest
from pidaemon_plugins.system import SystemReadings, parse_throttled

from tests.support.control_plane import daemon, fake_thermal_tree, fake_vcgencmd
from tests.support.observer import Observer
from tests.support.schema_check import SchemaUnsupported, check_schema, validate

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "telemetry.schema.json"


@pytest.fixture(scope="module")
def schema():
    loaded = json.loads(SCHEMA_PATH.read_text())
    check_schema(loaded)  # only keywords the checker implements
    return loaded


def test_published_telemetry_matches_the_schema_with_fake_thermal_and_real_psutil(broker, observer, tmp_path, schema):
    thermal = fake_thermal_tree(tmp_path / "thermal")
    vcgencmd = fake_vcgencmd(tmp_path / "vcgencmd")

    async def scenario():
        node = daemon("tele", broker.url, tmp_path / "state", plugins={
            "telemetry": {"interval": 0.2},
            "system": {"thermal_root": str(thermal), "vcgencmd": str(vcgencmd), "throttling_interval": 0.1}})
        await node.start()
        # The first sample may precede vcgencmd's first answer; wait for one that has it.
        def with_throttling():
            for message in reversed(observer.messages):
                if message.topic == "picluster/nodes/tele/telemetry":
                    payload = json.loads(message.payload)
                    if "throttling" in payload["readings"]:
                        return payload
            return None
        deadline = asyncio.get_running_loop().time() + 15
        while (payload := with_throttling()) is None:
            assert asyncio.get_running_loop().time() < deadline, "no telemetry with throttling flags"
            await asyncio.sleep(0.05)
        info = json.loads((await asyncio.to_thread(observer.wait_for, "picluster/nodes/tele/info")).payload)
        await node.shutdown()
        # A newcomer sees the last readings at once: the telemetry is retained.
        newcomer = await asyncio.to_thread(Observer, broker.port, ["picluster/nodes/+/telemetry"])
        try:
            retained = await asyncio.to_thread(newcomer.wait_for, "picluster/nodes/tele/telemetry")
        finally:
            newcomer.close()
        return payload, retained, info

    payload, retained, info = asyncio.run(scenario())
    assert validate(payload, schema) == []
    readings = payload["readings"]
    assert readings["cpu_temperature"] == 48.31
    assert readings["thermal_zones"] == {"cpu-thermal": 48.31, "gpu-thermal": 45.0}
    assert readings["throttling"]["raw"] == "0x50005"
    assert readings["throttling"]["under_voltage"] is True and readings["throttling"]["throttled"] is True
    assert readings["throttling"]["frequency_capped"] is False
    assert readings["throttling"]["under_voltage_occurred"] is True
    # Real psutil for the rest.
    assert readings["memory"]["total"] == psutil.virtual_memory().total
    assert len(readings["cpu_percent_per_core"]) == psutil.cpu_count()
    assert readings["disk_state"]["path"] == str(tmp_path / "state")
    assert readings["daemon"]["rss"] > 1_000_000
    assert payload["node"] == "tele" and payload["seq"] >= 1
    assert retained.retain and retained.qos == 0
    assert validate(json.loads(retained.payload), schema) == []
    assert info["memory_total"] == psutil.virtual_memory().total


def test_missing_sensors_are_omitted_never_faked(tmp_path, schema):
    node = daemon("bare", "mqtt://127.0.0.1:1", tmp_path / "state", plugins={
        "system": {"thermal_root": str(tmp_path / "no-thermal"), "vcgencmd": str(tmp_path / "no-vcgencmd")}})
    node.load_plugins()
    readings = node.collect_telemetry()
    assert "cpu_temperature" not in readings and "thermal_zones" not in readings
    assert "throttling" not in readings
    assert node.plugin("system").vcgencmd is None
    assert validate({"node": "bare", "time": 1.0, "readings": readings}, schema) == []


def test_a_zone_with_an_unreadable_temperature_is_left_out(tmp_path):
    root = fake_thermal_tree(tmp_path / "thermal")
    (root / "thermal_zone0" / "temp").write_text("not a number\n")
    node = daemon("half", "mqtt://127.0.0.1:1", tmp_path / "state",
                  plugins={"system": {"thermal_root": str(root), "vcgencmd": ""}})
    node.load_plugins()
    readings = node.collect_telemetry()
    assert readings["thermal_zones"] == {"gpu-thermal": 45.0}
    assert readings["cpu_temperature"] == 45.0  # no CPU zone left: the first readable zone


def test_cpu_percent_comes_from_this_instance_counters(tmp_path):
    node = daemon("cpu", "mqtt://127.0.0.1:1", tmp_path / "state", plugins={"system": {"vcgencmd": ""}})
    node.load_plugins()
    system: SystemReadings = node.plugin("system")
    end = psutil.cpu_times().user + 0.3
    while psutil.cpu_times().user < end:  # burn CPU so that the percentage is above zero
        sum(range(10000))
    readings = system.readings()
    assert 0 < readings["cpu_percent"] <= 100
    assert readings["daemon"]["cpu_percent"] > 0


@pytest.mark.parametrize("text, expected", [
    ("throttled=0x0\n", {"raw": "0x0", "under_voltage": False, "throttled_occurred": False}),
    ("throttled=0x80008", {"raw": "0x80008", "soft_temperature_limit": True,
                           "soft_temperature_limit_occurred": True, "under_voltage": False}),
    ("error=1 error_msg=\"Command not registered\"", None),
    ("throttled=zz", None),
])
def test_parse_throttled(text, expected):
    result = parse_throttled(text)
    if expected is None:
        assert result is None
    else:
        assert {k: result[k] for k in expected} == expected


def test_schema_checker_rejects_what_the_schema_forbids(schema):
    good = {"node": "n1", "time": 1.5, "seq": 1, "interval": 5, "readings": {
        "cpu_percent": 3.0, "memory": {"total": 10, "available": 5, "percent": 50.0}, "co2_ppm": 612}}
    assert validate(good, schema) == []
    bad = copy.deepcopy(good)
    bad["readings"]["cpu_percent"] = "high"
    bad["readings"]["memory"]["percent"] = 150
    del bad["readings"]["memory"]["available"]
    bad["extra"] = 1
    errors = validate(bad, schema)
    assert any("cpu_percent: expected number" in e for e in errors)
    assert any("memory.percent: 150 > maximum 100" in e for e in errors)
    assert any("missing required 'available'" in e for e in errors)
    assert any("$.extra: not allowed" in e for e in errors)
    with pytest.raises(SchemaUnsupported):
        check_schema({"type": "object", "oneOf": []})


def test_a_sample_right_after_the_previous_one_has_no_cpu_percentage(tmp_path):
    node = daemon("quick", "mqtt://127.0.0.1:1", tmp_path / "state", plugins={"system": {"vcgencmd": ""}})
    node.load_plugins()
    first = node.plugin("system").readings()  # microseconds after the plugin was created
    assert "cpu_percent" not in first and "cpu_percent_per_core" not in first
    assert "cpu_percent" not in first["daemon"]
    assert "memory" in first  # everything else is there
