"""End to end on the desk cluster (`pidaemon sim` against a real mosquitto): a program posted with
`mosquitto_pub`, a client nobody in this project wrote, lights the simulated lamp and plays the
default sound on the simulated speaker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from tests.support.observer import Observer

GREEN = [0, 255, 0]


def test_a_posted_program_turns_the_lamp_green_and_plays_the_default_sound(broker, tmp_path):
    sim = subprocess.Popen([sys.executable, "-m", "pidaemon", "sim", "--workers", "1", "--broker", broker.url,
                            "--http", "off", "--state-dir", str(tmp_path / "state")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watcher = Observer(broker.port, topics=["picluster/lights/state", "picluster/sound/played",
                                            "picluster/warble/results/+"])
    try:
        _wait_for_the_cluster(broker.port)
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", "picluster/warble/submit",
                        "-m", '#pi{FOR(i=0;i<24;i++){LIGHTS(i,0,255,0)};PLAYSOUND("")}'], check=True, timeout=30)
        played = json.loads(watcher.wait_for("picluster/sound/played", timeout=60).payload)
        deadline = time.monotonic() + 30
        while not _all_green(watcher) and time.monotonic() < deadline:
            time.sleep(0.1)
        green = _all_green(watcher)
        # What a newcomer's `mosquitto_sub -t picluster/lights/state` shows: the retained state, all green.
        retained = subprocess.run(["mosquitto_sub", "-p", str(broker.port), "-t", "picluster/lights/state", "-C",
                                   "1", "-W", "10"], capture_output=True, text=True, timeout=30)
    finally:
        watcher.close()
        sim.send_signal(signal.SIGINT)
        output = sim.communicate(timeout=30)[0]
    assert green and json.loads(retained.stdout)["pixels"] == [GREEN] * 24, output
    # Stopped: the lamp is dark, and its retained state says so.
    after = subprocess.run(["mosquitto_sub", "-p", str(broker.port), "-t", "picluster/lights/state", "-C", "1",
                            "-W", "10"], capture_output=True, text=True, timeout=30)
    assert json.loads(after.stdout)["on"] is False
    assert played["name"] == "beep" and played["duration"] > 0, played   # sim.yaml's speaker: its default sound
    assert "Traceback" not in output, output


def _wait_for_the_cluster(port: int) -> None:
    """Until the server's registry lists an online worker (the program needs one to run)."""
    registry = Observer(port, topics=["picluster/registry"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for message in reversed(registry.messages):
                nodes = json.loads(message.payload).get("nodes", {})
                if any(record.get("role") == "worker" and record.get("state") == "online"
                       for record in nodes.values()):
                    return
            time.sleep(0.2)
    finally:
        registry.close()
    raise TimeoutError("no online worker in the registry within 60 s")


def _all_green(watcher: Observer) -> bool:
    states = [json.loads(m.payload) for m in watcher.messages if m.topic == "picluster/lights/state"]
    return bool(states) and states[-1]["pixels"] == [GREEN] * 24
