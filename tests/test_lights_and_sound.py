"""The lamp and the speaker plugins (simulated backends) against a real broker: commands and bad input."""

from __future__ import annotations

import asyncio
import json

from tests.support.nodes import make_daemon
from tests.support.waiting import wait_until


def test_lamp_shows_valid_commands_and_names_bad_ones(broker, observer, caplog):
    async def scenario():
        lamp = make_daemon("lamp", broker.url, role="lights", plugins={"lights": {"pixels": 4, "state_interval": 0}})
        speaker = make_daemon("speaker", broker.url, role="audio", plugins={"sound": {"sounds": ["bell"]}})
        for node in (lamp, speaker):
            await node.start()
            assert await node.bus.wait_connected(10)
        for payload in (b"garbage", json.dumps({"index": 9, "r": 1, "g": 2, "b": 3}),
                        json.dumps({"index": 1, "r": 300, "g": 0, "b": 0}), json.dumps({"index": True, "r": 1}),
                        json.dumps({"index": 2, "r": 10, "g": 20, "b": 30})):
            await asyncio.to_thread(observer.publish, "picluster/lights/set", payload)
        for name in ("../../etc/passwd", "http://x/y.wav", "bell"):
            await asyncio.to_thread(observer.publish, "picluster/sound/play", json.dumps({"name": name}))
        await wait_until(lambda: lamp.plugin("lights").changes == 1 and speaker.plugin("sound").played)
        state = json.loads((await asyncio.to_thread(observer.wait_for, "picluster/lights/state")).payload)
        result = lamp.plugin("lights").strip.pixels, speaker.plugin("sound").played, state
        for node in (lamp, speaker):
            await node.shutdown()
        return result

    pixels, played, state = asyncio.run(scenario())
    assert pixels == [(0, 0, 0), (0, 0, 0), (10, 20, 30), (0, 0, 0)]
    assert state["pixels"][2] == [10, 20, 30]
    assert played == ["bell"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert sum('plugin "lights"' in e for e in errors) == 4
    assert any("'../../etc/passwd' is not in the sound library" in e for e in errors)
    assert any("'http://x/y.wav' is not in the sound library" in e for e in errors)
