"""The lamp against a real mosquitto: commands, effects, refusals, the rate limit and the saved state.

The `neopixel` backend runs the real adafruit-circuitpython-neopixel library
under Adafruit Blinka's OS-agnostic board (BLINKA_FORCEBOARD/BLINKA_FORCECHIP,
pin NEOPIXEL), and what the lamp shows is read back from the library's own
buffer: `_post_brightness_buffer` of pixelbuf 2.1.0, the bytes it hands to
`neopixel_write` after brightness, in the strip's colour order.  Blinka's
stand-in `neopixel_write` for that board reads the buffer 3 bytes at a time
(an IndexError for a 4-byte-a-pixel buffer whose length is not a multiple of
3), so GRBW strips here have a multiple of 3 pixels; the lamp of 2022 had 32.
The library itself takes the pixel size from `pixel_order` ("GRBW": 4 bytes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pidaemon.config import ConfigError, config_from_mapping
from pidaemon.daemon import Daemon
from pidaemon.plugins import PluginCatalog
from pidaemon_plugins.lights.backend import StripLayout
from pidaemon_plugins.lights.commands import COMMANDS, CommandReader, Refused
from pidaemon_plugins.lights.lamp import Lamp
from pidaemon_plugins.lights.neopixel_backend import phantom_pixels, uses_bcm283x_driver
from pidaemon_plugins.lights.rate_limit import RateLimit
from tests.support.distributions import write_distribution
from tests.support.nodes import FAKE_FACTS, make_daemon, node_config
from tests.support.observer import Observer
from tests.support.waiting import wait_until
from tests.support.warble_cluster import InProcessCluster, submit

SET, STATE, REFUSED = "picluster/lights/set", "picluster/lights/state", "picluster/lights/refused"


@pytest.fixture
def agnostic_board(monkeypatch):
    """Blinka reads these when `board` is first imported: inside the neopixel backend, lazily."""
    monkeypatch.setenv("BLINKA_FORCEBOARD", "OS_AGNOSTIC_BOARD")
    monkeypatch.setenv("BLINKA_FORCECHIP", "OS_AGNOSTIC")


def configure_only(lamp: Daemon) -> list[str]:
    """Create the node's plugins and run `pidaemon_configure` (no broker): the failures, as the daemon would log them."""
    lamp.load_plugins()
    return [f"{call.plugin}: {call.error}" for call in asyncio.run(lamp.hooks.configure()) if call.error]


def lamp_daemon(broker_url: str, state_dir=None, node_id: str = "lamp", **lights) -> Daemon:
    """A lamp node: the `lights` plugin with these settings (state published at once)."""
    config = node_config(node_id, broker_url, role="lights",
                         plugins={"ping": {}, "lights": {"state_interval": 0, **lights}})
    if state_dir is not None:
        config["node"]["state_dir"] = str(state_dir)
    catalog = PluginCatalog()
    return Daemon(config_from_mapping(config, plugin_schema=catalog.schema), catalog=catalog, facts=dict(FAKE_FACTS))


def neopixel_lamp(broker_url: str, count: int, order: str, **more) -> Daemon:
    return lamp_daemon(broker_url, backend="neopixel", pixels=count, pixel_order=order,
                       options={"pin": "NEOPIXEL"}, **more)


async def send(observer, *commands) -> None:
    for command in commands:
        payload = command if isinstance(command, (bytes, str)) else json.dumps(command)
        await asyncio.to_thread(observer.publish, SET, payload)


def received(observer, topic: str, since: int = 0) -> list[dict]:
    return [json.loads(m.payload) for m in observer.messages[since:] if m.topic == topic]


def strip_bytes(lamp: Daemon) -> bytes:
    """What the NeoPixel library would put on the wire: its buffer after brightness."""
    return bytes(lamp.plugin("lights").backend.strip._post_brightness_buffer)


def wire_bytes(colours, order: str, brightness: float) -> bytes:
    """The bytes a strip of `order` gets for `colours` (r, g, b[, w]) at `brightness`: each part scaled, in order."""
    return bytes(int(dict(zip("RGBW", colour))[part] * brightness) for colour in colours for part in order)


def error_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# ---------------------------------------------------------------- commands and refusals

BAD_COMMANDS = [   # (payload, what the reason must say)
    (b"garbage", "payload is not JSON"),
    (b"\xff\xfe{", "not UTF-8"),
    (b"[" * 60_000, "will not read"),
    ("[1, 2, 3]", "expected a JSON object"),
    ({"index": 9, "r": 1, "g": 2, "b": 3}, "index must be a whole number from 0 to 3, got 9"),
    ({"index": 1, "r": 300, "g": 0, "b": 0}, "r must be a whole number from 0 to 255, got 300"),
    ({"index": True, "r": 1, "g": 1, "b": 1}, "index must be a whole number from 0 to 3, got True"),
    ({"index": "1", "r": 1, "g": 1, "b": 1}, "got '1'"),
    ({"index": 1.5, "r": 1, "g": 1, "b": 1}, "got 1.5"),
    ({"index": 1, "r": 1, "g": 2}, "b must be a whole number from 0 to 255, got nothing"),
    ({"index": 0, "r": 1, "g": 2, "b": 3, "w": 4}, "this lamp has no white channel"),
    ({"index": 0, "r": 1, "g": 2, "b": 3, "user": ["ada"]}, "user must be a string"),
    ({"command": "explode"}, "unknown command 'explode'"),
    ({"command": "effect", "name": "strobe"}, "unknown effect 'strobe' (effects: chase, pulse"),
    ({"command": "effect"}, "effect needs a name"),
    ({"command": "effect", "name": "chase", "r": 10}, "g must be a whole number"),
    ({"command": "pixels", "pixels": [[0, 1, 2, 3], [1, 2, 3, 4], [7, 0, 0, 0]]}, "pixels[2]: index must be"),
    ({"command": "pixels", "pixels": [[0, 1, 2]]}, "pixels[0]: expected [index, r, g, b]"),
    ({"command": "pixels", "pixels": [[0, 1, 2, 3]] * 5}, "more than the lamp's 4 pixels"),
    ({"command": "pixels", "pixels": "all"}, "pixels must be a non-empty list"),
    ({"command": "fill", "r": -1, "g": 0, "b": 0}, "r must be a whole number from 0 to 255, got -1"),
    ({"command": "brightness", "value": 2}, "brightness value must be a number from 0.0 to 1.0, got 2"),
    ('{"command": "brightness", "value": NaN}', "brightness value must be"),
    ({"command": "brightness", "value": True}, "brightness value must be"),
    ({"command": "clear", "user": "x" * 70_000}, "bytes, more than 65536"),
]


def test_lamp_shows_valid_commands_and_refuses_bad_ones_with_the_reason(broker, observer, caplog):
    async def scenario():
        lamp = lamp_daemon(broker.url, pixels=4)
        await lamp.start()
        assert await lamp.bus.wait_connected(10)
        plugin = lamp.plugin("lights")
        await send(observer, {"index": 2, "r": 10, "g": 20, "b": 30}, {"command": "brightness", "value": 0.5})
        await send(observer, *(payload for payload, _ in BAD_COMMANDS))
        await send(observer, {"index": 3, "r": 0, "g": 0, "b": 9, "user": "ada", "job": "j-1"},
                   {"index": 9, "r": 0, "g": 0, "b": 0, "user": "ada", "job": "j-2"})
        await wait_until(lambda: len(received(observer, REFUSED)) == len(BAD_COMMANDS) + 1, 10, what="every refusal")
        await wait_until(lambda: received(observer, STATE) and received(observer, STATE)[-1]["pixels"][3] == [0, 0, 9],
                         10, what="the last good command in the state")
        result = list(plugin.strip.pixels), plugin.changes, plugin.backend.pixels, received(observer, STATE)[-1]
        answers = {"status": lamp.status()["failed_plugins"], "alive": lamp.bus.connected}
        await lamp.shutdown()
        return result, answers

    (pixels, changes, shown, state), answers = asyncio.run(scenario())
    assert pixels == [(0, 0, 0), (0, 0, 0), (10, 20, 30), (0, 0, 9)]
    assert changes == 3 and shown == pixels              # the sim strip shows the picture
    assert state == {"pixels": [[0, 0, 0], [0, 0, 0], [10, 20, 30], [0, 0, 9]], "brightness": 0.5,
                     "effect": None, "on": True}
    refusals = received(observer, REFUSED)
    for (payload, why), refusal in zip(BAD_COMMANDS, refusals):
        assert why in refusal["reason"], (payload, refusal)
    assert refusals[4]["command"] == {"index": 9, "r": 1, "g": 2, "b": 3}   # what was sent, sent back
    assert refusals[0]["command"] == "garbage"
    assert len(refusals[2]["command"]) < 400                                  # 60 000 brackets, cut
    assert refusals[-1] == {"command": {"index": 9, "r": 0, "g": 0, "b": 0, "user": "ada", "job": "j-2"},
                            "reason": "index must be a whole number from 0 to 3, got 9", "user": "ada", "job": "j-2"}
    assert answers == {"status": [], "alive": True}
    errors = error_lines(caplog)
    assert any('plugin "lights" could not handle a message on picluster/lights/set' in e and "got 300" in e
               for e in errors), errors
    assert not any("crashed" in e for e in errors)
    assert not any(m.retain for m in observer.messages if m.topic == REFUSED)


def test_the_state_is_published_again_when_the_broker_lost_it(broker, observer):
    """A broker restarted without persistence has no retained messages: the lamp's state comes back on reconnection."""

    async def scenario():
        lamp = lamp_daemon(broker.url, pixels=2)
        await lamp.start()
        assert await lamp.bus.wait_connected(10)
        await send(observer, {"command": "fill", "r": 7, "g": 8, "b": 9})
        await wait_until(lambda: any(s["pixels"] == [[7, 8, 9]] * 2 for s in received(observer, STATE)), 10)
        await asyncio.to_thread(broker.restart)
        # The first client after the restart may see the state live; once it has, the broker holds it
        # retained, and the next client to subscribe is given it from there.
        for _ in range(2):
            late = await asyncio.to_thread(Observer, broker.port, [STATE])
            try:
                message = await asyncio.to_thread(late.wait_for, STATE, None, 20)
            finally:
                late.close()
        await lamp.shutdown()
        return json.loads(message.payload), message.retain

    state, retained = asyncio.run(scenario())
    assert retained and state == {"pixels": [[7, 8, 9]] * 2, "brightness": 1.0, "effect": None, "on": True}


# ---------------------------------------------------------------- the real NeoPixel library

@pytest.mark.parametrize("order, count", [("GRB", 8), ("GRBW", 12)])
def test_neopixel_strip_holds_what_the_commands_asked(broker, observer, agnostic_board, order, count):
    white = "W" in order

    def colour(r, g, b, w=0):
        return (r, g, b, w) if white else (r, g, b)

    async def scenario():
        lamp = neopixel_lamp(broker.url, count, order)
        await lamp.start()
        assert await lamp.bus.wait_connected(10)
        neo = lamp.plugin("lights").backend.strip
        seen = {"bpp": neo.bpp, "byteorder": neo.byteorder}
        picture = [colour(0, 0, 0)] * count
        picture[0], picture[1], picture[2] = colour(255, 0, 0), colour(0, 255, 0), colour(0, 0, 255, 7)
        picture[3] = colour(100, 100, 100)   # equal parts: on a GRBW strip still r, g and b, not the white LED
        await send(observer, {"index": 0, "r": 255, "g": 0, "b": 0},
                   {"command": "pixels", "pixels": [[1, 0, 255, 0], [2, 0, 0, 255, *([7] if white else [])],
                                                    [3, 100, 100, 100]]})
        await wait_until(lambda: strip_bytes(lamp) == wire_bytes(picture, order, 1.0), 10, what="the pixels")
        seen["values"] = [tuple(neo[i]) for i in range(4)]     # the library's own reading, before brightness
        await send(observer, {"command": "brightness", "value": 0.5})
        await wait_until(lambda: strip_bytes(lamp) == wire_bytes(picture, order, 0.5), 10, what="half brightness")
        await send(observer, {"command": "fill", "r": 9, "g": 99, "b": 199, **({"w": 50} if white else {})})
        filled = [colour(9, 99, 199, 50)] * count
        await wait_until(lambda: strip_bytes(lamp) == wire_bytes(filled, order, 0.5), 10, what="the fill")
        seen["filled_state"] = (await wait_until(
            lambda: [s for s in received(observer, STATE) if s["pixels"] == [list(c) for c in filled]], 10))[-1]
        await send(observer, {"command": "clear"})
        await wait_until(lambda: strip_bytes(lamp) == bytes(len(order) * count), 10, what="all off")
        await wait_until(lambda: received(observer, STATE)[-1]["on"] is False, 10, what="state off")
        await lamp.shutdown()
        return seen

    seen = asyncio.run(scenario())
    assert seen["bpp"] == len(order) and seen["byteorder"] == order
    assert seen["values"] == [colour(255, 0, 0), colour(0, 255, 0), colour(0, 0, 255, 7), colour(100, 100, 100)]
    assert seen["filled_state"] == {"pixels": [list(colour(9, 99, 199, 50))] * count, "brightness": 0.5,
                                    "effect": None, "on": True}


def frames_while(lamp: Daemon, frames: set, test) -> bool:
    """Collect the strip's buffers into `frames`: true once `test(frames)` holds."""
    frames.add(strip_bytes(lamp))
    return test(frames)


def test_effects_run_on_the_node_and_stop_on_the_next_command(broker, observer, agnostic_board):
    count = 6

    def chase_frame(frame: bytes) -> bool:
        """One pixel at full red (GRB bytes 0, 255, 0) and none of the picture's blue."""
        pixels = [frame[i:i + 3] for i in range(0, len(frame), 3)]
        return pixels.count(b"\x00\xff\x00") == 1 and not any(p[2] for p in pixels)

    async def scenario():
        lamp = neopixel_lamp(broker.url, count, "GRB", frame_interval=0.01)
        await lamp.start()
        assert await lamp.bus.wait_connected(10)
        plugin = lamp.plugin("lights")
        seen = {}
        picture = [(0, 0, 200)] + [(0, 0, 0)] * (count - 1)
        await send(observer, {"index": 0, "r": 0, "g": 0, "b": 200})
        await wait_until(lambda: strip_bytes(lamp) == wire_bytes(picture, "GRB", 1), 10, what="the picture")

        mark = len(observer.messages)
        await send(observer, {"command": "effect", "name": "chase", "r": 255, "g": 0, "b": 0})
        await wait_until(lambda: any(s["effect"] == "chase" for s in received(observer, STATE, mark)), 10)
        chased: set[bytes] = set()
        await wait_until(lambda: frames_while(lamp, chased, lambda f: len({x for x in f if chase_frame(x)}) >= 3),
                         10, what="three chase frames")
        seen["chase_frames"] = {f for f in chased if chase_frame(f)}
        task = plugin._effect_task

        # A refused command leaves the effect running.
        await send(observer, {"command": "effect", "name": "strobe"})
        await wait_until(lambda: received(observer, REFUSED), 10)
        seen["after_refusal"] = (plugin.lamp.effect.name, task.done())

        # A brightness dims the running effect; it does not stop it (nor lose its colour).
        mark = len(observer.messages)
        await send(observer, {"command": "brightness", "value": 0.5})
        dimmed = await wait_until(lambda: [s for s in received(observer, STATE, mark) if s["brightness"] == 0.5], 10)
        seen["after_brightness"] = (dimmed[-1]["effect"], plugin.lamp.effect.colour, task.done())
        await send(observer, {"command": "brightness", "value": 1.0})

        mark = len(observer.messages)
        await send(observer, {"index": 1, "r": 0, "g": 255, "b": 0})
        picture[1] = (0, 255, 0)
        await wait_until(lambda: strip_bytes(lamp) == wire_bytes(picture, "GRB", 1), 10, what="the picture back")
        stopped = await wait_until(lambda: received(observer, STATE, mark), 10, what="the state after the effect")
        seen["after_stop"] = (stopped[-1]["effect"], task.done(), plugin._effect_task)

        mark = len(observer.messages)
        await send(observer, {"command": "effect", "name": "pulse"})
        await wait_until(lambda: any(s["effect"] == "pulse" for s in received(observer, STATE, mark)), 10)
        pulsed: set[bytes] = set()
        await wait_until(lambda: frames_while(lamp, pulsed, lambda f: len(f) >= 3), 10, what="three pulse frames")
        seen["pulse_frames"] = pulsed - {wire_bytes(picture, "GRB", 1)}
        task = plugin._effect_task
        mark = len(observer.messages)
        await send(observer, {"command": "effect", "name": None})
        await wait_until(lambda: strip_bytes(lamp) == wire_bytes(picture, "GRB", 1), 10, what="the picture again")
        stopped = await wait_until(lambda: received(observer, STATE, mark), 10, what="the state after the pulse")
        seen["after_pulse"] = (stopped[-1], task.done())
        await lamp.shutdown()
        return seen

    seen = asyncio.run(scenario())
    heads = {frame.index(b"\x00\xff\x00") for frame in seen["chase_frames"]}
    assert len(heads) >= 3                                    # the red pixel moves
    assert seen["after_refusal"] == ("chase", False)
    assert seen["after_brightness"] == ("chase", (255, 0, 0), False)
    assert seen["after_stop"] == (None, True, None)
    # A white pulse: every pixel alike (r = g = b), at two or more levels.
    levels = set()
    for frame in seen["pulse_frames"]:
        assert len(set(frame)) == 1, frame
        levels.add(frame[0])
    assert len(levels) >= 2
    assert seen["after_pulse"] == ({"pixels": [list(p) for p in [(0, 0, 200), (0, 255, 0)] + [(0, 0, 0)] * (count - 2)],
                                    "brightness": 1.0, "effect": None, "on": True}, True)


def test_the_lamp_shows_its_last_state_again_after_a_restart(broker, observer, agnostic_board, tmp_path):
    count, state_dir = 6, tmp_path / "lamp-state"

    async def scenario():
        first = neopixel_lamp(broker.url, count, "GRBW", state_dir=state_dir)
        await first.start()
        assert await first.bus.wait_connected(10)
        await send(observer, {"command": "pixels", "pixels": [[0, 255, 0, 0], [5, 0, 0, 0, 200]]},
                   {"command": "brightness", "value": 0.25})
        await wait_until(lambda: first.plugin("lights").lamp.brightness == 0.25, 10)
        await send(observer, {"command": "pixels", "pixels": [[0, 255, 0, 0], [5, 0, 0, 0, 200]]},
                   {"command": "effect", "name": "pulse", "r": 0, "g": 0, "b": 255})
        await wait_until(lambda: first.plugin("lights").lamp.effect is not None, 10)
        await first.shutdown()
        saved = json.loads((state_dir / "lights.json").read_text())
        leftovers = sorted(p.name for p in state_dir.iterdir() if p.name.startswith("lights"))

        mark = len(observer.messages)
        second = neopixel_lamp(broker.url, count, "GRBW", state_dir=state_dir)
        await second.start()
        assert await second.bus.wait_connected(10)
        plugin = second.plugin("lights")
        state = (await wait_until(lambda: received(observer, STATE, mark), 10, what="the state republished"))[-1]
        frames: set[bytes] = set()
        await wait_until(lambda: frames_while(second, frames, lambda f: len(f - {bytes(4 * count)}) >= 2), 10,
                         what="pulse frames after the restart")
        await send(observer, {"command": "clear"})
        await wait_until(lambda: strip_bytes(second) == bytes(4 * count), 10, what="cleared")
        await second.shutdown()
        return saved, leftovers, state, frames, plugin.lamp.saved()

    saved, leftovers, state, frames, final = asyncio.run(scenario())
    picture = [[255, 0, 0, 0]] + [[0, 0, 0, 0]] * 4 + [[0, 0, 0, 200]]
    assert leftovers == ["lights.json"]                      # written by rename: no temporary file left
    assert saved == {"version": 1, "pixels": picture, "brightness": 0.25,
                     "effect": {"name": "pulse", "colour": [0, 0, 255, 0]}}
    assert state == {"pixels": picture, "brightness": 0.25, "effect": "pulse", "on": True}
    for frame in frames - {bytes(4 * count)}:                # the blue pulse, restarted, at a quarter brightness
        pixels = {frame[i:i + 4] for i in range(0, len(frame), 4)}
        assert len(pixels) == 1 and next(iter(pixels))[:2] == b"\x00\x00" and next(iter(pixels))[2] <= 255 // 4
    assert final == {"pixels": [[0, 0, 0, 0]] * count, "brightness": 0.25, "effect": None}


@pytest.mark.parametrize("content, why", [
    ("{not json", "cannot read it"),
    ('{"version": 1, "pixels": [[1, 2, 300]], "brightness": 1, "effect": null}', "colour 0: b must be"),
    ('{"version": 1, "pixels": [], "brightness": 7, "effect": null}', "brightness value must be"),
    ('{"version": 1, "pixels": [], "brightness": 1, "effect": {"name": "x", "colour": [1, 1, 1]}}', "unknown effect"),
    ("[]", "not a version 1 lamp state"),
])
def test_a_damaged_saved_state_is_named_and_the_lamp_starts_dark(tmp_path, caplog, content, why):
    (tmp_path / "lights.json").write_text(content)
    lamp = lamp_daemon("mqtt://127.0.0.1:1", state_dir=tmp_path, pixels=3)
    assert configure_only(lamp) == []
    assert lamp.plugin("lights").lamp.pixels == [(0, 0, 0)] * 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"lights: {tmp_path / 'lights.json'}: " in w and why in w and "starting dark" in w
               for w in warnings), warnings


def test_a_saved_state_fits_a_lamp_that_changed(tmp_path):
    """Fewer pixels: the extra ones dropped; a white channel added: w 0."""
    (tmp_path / "lights.json").write_text(json.dumps(
        {"version": 1, "pixels": [[1, 2, 3], [4, 5, 6], [7, 8, 9]], "brightness": 0.5, "effect": None}))
    lamp = lamp_daemon("mqtt://127.0.0.1:1", state_dir=tmp_path, pixels=2, pixel_order="GRBW")
    assert configure_only(lamp) == []
    assert lamp.plugin("lights").lamp.pixels == [(1, 2, 3, 0), (4, 5, 6, 0)]


# ---------------------------------------------------------------- the rate limit

def test_a_flood_from_one_user_is_refused_with_a_reply_and_others_get_through(broker, observer, caplog):
    flood = [{"index": i % 8, "r": i + 1, "g": 0, "b": 0, "user": "flood", "job": "f"} for i in range(40)]

    async def scenario():
        # No refill to speak of while the test runs (one token in 100 s): what gets through is the burst.
        lamp = lamp_daemon(broker.url, pixels=8, rate_limit={"burst": 5, "per_second": 0.01})
        await lamp.start()
        assert await lamp.bus.wait_connected(10)
        plugin = lamp.plugin("lights")
        # A bad command over the limit counts against it too: no reply of its own to flood the bus with.
        await send(observer, *flood, {"index": 99, "user": "flood"},
                   {"index": 7, "r": 0, "g": 255, "b": 0, "user": "ada"})
        await wait_until(lambda: plugin.changes + plugin.rate_limited == 42, 10, what="every command handled")
        await wait_until(lambda: received(observer, REFUSED), 10, what="a refusal")
        result = list(plugin.lamp.pixels), plugin.changes, plugin.rate_limited + plugin.refused, lamp.bus.connected
        await lamp.shutdown()
        return result

    pixels, changes, limited, connected = asyncio.run(scenario())
    assert changes == 6 and limited == 36 and connected
    assert pixels == [(1, 0, 0), (2, 0, 0), (3, 0, 0), (4, 0, 0), (5, 0, 0), (0, 0, 0), (0, 0, 0), (0, 255, 0)]
    refusals = received(observer, REFUSED)
    assert refusals[0] == {"command": flood[5], "user": "flood", "job": "f", "refused": 1,
                           "reason": "rate limit: user 'flood' sent more than 5 commands at once (then 0.01 a second)"}
    assert all(r["user"] == "flood" and r["reason"].startswith("rate limit") for r in refusals)
    assert sum(r["refused"] for r in refusals) <= 36         # replies come at most once a second per user
    warnings = [r.getMessage() for r in caplog.records if "rate limit" in r.getMessage()]
    assert len(warnings) == 1                                # and the log says it once


def test_token_bucket_allows_a_burst_then_the_rate():
    now = [100.0]
    limit = RateLimit(burst=3, per_second=2, clock=lambda: now[0])
    assert [limit.allow("ada") for _ in range(4)] == [True, True, True, False]
    assert limit.allow("bob") and limit.allow(None)          # each user has a bucket of their own
    now[0] += 0.5                                            # one token back
    assert [limit.allow("ada") for _ in range(2)] == [True, False]
    now[0] += 60                                             # never more than the burst
    assert [limit.allow("ada") for _ in range(4)] == [True, True, True, False]


def test_a_warble_program_lighting_the_whole_lamp_gets_through_the_default_limit(broker, observer, tmp_path):
    """`FOR(i=0;i<24;i++){LIGHTS(i,0,255,0)}`: 24 commands from one user at once, on the default 24-pixel sim lamp."""

    async def scenario():
        lamp = lamp_daemon(broker.url, state_interval=0.2)
        await lamp.start()
        async with InProcessCluster(broker.url, tmp_path, workers=1) as cluster:
            await submit(observer, {"id": "green", "user": "ada", "source": "FOR(i=0;i<24;i++){LIGHTS(i,0,255,0)}"})
            await wait_until(lambda: (job := cluster.service.get("green")) and job["state"] == "done", 30,
                             what="the job done")
            plugin = lamp.plugin("lights")
            await wait_until(lambda: plugin.changes == 24, 10, what="24 pixels set")
            state = (await wait_until(lambda: [s for s in received(observer, STATE) if s["pixels"][23] == [0, 255, 0]],
                                      10))[-1]
            result = cluster.service.get("green")["result"]["status"], list(plugin.lamp.pixels), plugin.rate_limited, state
        await lamp.shutdown()
        return result

    status, pixels, limited, state = asyncio.run(scenario())
    assert status == "ok"
    assert pixels == [(0, 255, 0)] * 24 and limited == 0
    assert state["pixels"] == [[0, 255, 0]] * 24
    assert received(observer, REFUSED) == []


# ---------------------------------------------------------------- backends

def test_a_backend_from_another_distribution_drives_the_lamp(broker, observer, tmp_path, monkeypatch, caplog):
    """A backend registered in the `pidaemon.lights_backends` entry-point group, as a pip-installed one is."""
    site = write_distribution(tmp_path / "site", "lamp-recorder",
                              {"pidaemon.lights_backends": {"recorder": "lamp_recorder:RecordingStrip"}},
                              {"lamp_recorder": '''
        from pidaemon.schema import String, settings
        from pidaemon_plugins.lights import LightsBackend


        @settings
        class RecorderOptions:
            label: str = String(default="desk")


        class RecordingStrip(LightsBackend):
            name = "recorder"
            config_schema = RecorderOptions
            frames = []

            def show(self, pixels, brightness):
                self.frames.append((self.options.label, list(pixels), brightness))
    '''})
    monkeypatch.syspath_prepend(str(site))

    async def scenario():
        lamp = lamp_daemon(broker.url, pixels=2, backend="recorder", options={"label": "shelf"})
        await lamp.start()
        assert await lamp.bus.wait_connected(10)
        frames = type(lamp.plugin("lights").backend).frames
        await send(observer, {"index": 1, "r": 1, "g": 2, "b": 3})
        await wait_until(lambda: frames and frames[-1][1][1] == (1, 2, 3), 10, what="the frame recorded")
        await lamp.shutdown()
        misspelt = lamp_daemon(broker.url, pixels=2, backend="recorder", options={"lable": "shelf"})
        await misspelt.start()
        failed = misspelt.status()["failed_plugins"]
        await misspelt.shutdown()
        return frames[-1], failed

    frame, failed = asyncio.run(scenario())
    assert frame == ("shelf", [(0, 0, 0), (1, 2, 3)], 1.0)
    assert failed == ["lights"]
    assert any('plugins.lights.options.lable: unknown key; did you mean "label"?' in e for e in error_lines(caplog))
    with pytest.raises(ConfigError) as error:
        make_daemon("lamp", broker.url, role="lights", plugins={"lights": {"backend": "dmx"}})
    assert "plugins.lights.backend: expected the name of a lights backend" in str(error.value)
    assert "installed: arduino, neopixel, recorder, sim" in str(error.value)


def test_settings_of_the_lamp_are_checked_before_it_runs(agnostic_board, broker, caplog):
    with pytest.raises(ConfigError) as error:
        make_daemon("lamp", broker.url, role="lights",
                    plugins={"lights": {"pixel_order": "GRBB", "rate_limit": {"burst": 0}, "brightness": 2}})
    for problem in ("plugins.lights.pixel_order: expected a colour order", "plugins.lights.rate_limit.burst",
                    "plugins.lights.brightness"):
        assert problem in str(error.value)

    async def scenario():   # D18 is the pin on a Pi; the OS-agnostic board has none of that name
        lamp = lamp_daemon(broker.url, backend="neopixel", pixels=3, options={"pin": "D18"})
        await lamp.start()
        status = lamp.status()
        await lamp.shutdown()
        return status

    assert asyncio.run(scenario())["failed_plugins"] == ["lights"]
    assert any('plugin "lights"' in e and 'the board has no pin "D18" (board pins: ' in e and "NEOPIXEL" in e
               for e in error_lines(caplog)), error_lines(caplog)


def test_without_the_library_the_neopixel_backend_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "neopixel", None)      # what Python does for a module that is not installed
    lamp = lamp_daemon("mqtt://127.0.0.1:1", state_dir=tmp_path, backend="neopixel", pixels=3)
    [failure] = configure_only(lamp)
    assert failure.startswith("lights: the neopixel backend needs adafruit-circuitpython-neopixel "
                              "(pip install 'pidaemon[pi]'): import of neopixel halted")


def test_a_state_that_cannot_be_saved_is_said_once_and_the_lamp_goes_on(broker, observer, tmp_path, caplog):
    (tmp_path / "lights.json").mkdir()   # neither readable nor replaceable as a file

    async def scenario():
        lamp = lamp_daemon(broker.url, state_dir=tmp_path, pixels=2, save_interval=0)
        await lamp.start()
        assert await lamp.bus.wait_connected(10)
        for value in (10, 20, 30):
            await send(observer, {"command": "fill", "r": value, "g": 0, "b": 0})
        await wait_until(lambda: lamp.plugin("lights").lamp.pixels == [(30, 0, 0)] * 2, 10)
        await lamp.shutdown()
        return lamp.status()["failed_plugins"]

    assert asyncio.run(scenario()) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("lights: cannot save the lamp's state in" in w for w in warnings) == 1, warnings
    assert any("cannot read it: IsADirectoryError" in w for w in warnings), warnings


json_values = st.recursive(st.none() | st.booleans() | st.integers(-300, 300) | st.floats(allow_nan=True)
                           | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=4), max_leaves=20)
command_fields = st.sampled_from(["command", "index", "r", "g", "b", "w", "pixels", "value", "name", "user", "job"])
commands = st.dictionaries(command_fields, json_values | st.sampled_from(list(COMMANDS) + ["chase", "pulse"]),
                           max_size=7)


@settings(max_examples=400, deadline=None)
@given(payload=commands | json_values, white=st.booleans())
def test_any_json_is_a_command_or_refused_with_a_reason(payload, white):
    """Nothing that parses as JSON makes the reader fail in another way, and what it accepts fits the lamp."""
    reader = CommandReader(4, white)
    try:
        request = reader.read(payload)
    except Refused as refusal:
        assert str(refusal)
        return
    lamp = Lamp(StripLayout(4, "GRBW" if white else "GRB"))
    lamp.apply(request.command)
    assert len(lamp.pixels) == 4 and all(len(p) == (4 if white else 3) and all(0 <= c <= 255 for c in p)
                                         for p in lamp.pixels)
    assert 0 <= lamp.brightness <= 1 and json.dumps(lamp.state(), allow_nan=False)


@pytest.mark.parametrize("count, order, bcm283x, extra", [
    (24, "GRBW", True, 1), (32, "GRBW", True, 0), (24, "GRB", True, 0), (24, "GRBW", False, 0)])
def test_a_w_strip_of_3k_pixels_gets_a_dark_extra_pixel_for_the_pi_driver(count, order, bcm283x, extra):
    """Blinka's bcm283x driver drives a buffer whose length divides by 3 as RGB (its source, not a Pi, says so)."""
    assert phantom_pixels(StripLayout(count, order), bcm283x) == extra
    if extra:
        assert (4 * (count + extra)) % 3 != 0


def test_the_os_agnostic_board_is_not_taken_for_a_pi(agnostic_board):
    assert uses_bcm283x_driver() is False    # so the tests above drive exactly the pixels they name


def test_a_retained_command_is_refused_at_start_and_while_connected(broker, observer, tmp_path):
    """Before: a retained fill was applied, and again at every start of the lamp."""
    async def scenario():
        await asyncio.to_thread(observer.publish, SET, json.dumps({"command": "fill", "r": 1, "g": 2, "b": 3}), 1,
                                True)
        lamp = lamp_daemon(broker.url, pixels=2)
        await lamp.start()
        assert await lamp.bus.wait_connected(10)
        plugin = lamp.plugin("lights")
        await wait_until(lambda: plugin.refused == 1, 10, what="the retained fill refused at start")
        await asyncio.to_thread(observer.publish, SET, json.dumps({"index": 0, "r": 9, "g": 9, "b": 9}), 1, True)
        await wait_until(lambda: plugin.refused == 2, 10, what="the retained pixel refused while connected")
        await asyncio.to_thread(observer.publish, SET, b"", 1, True)            # cleared: nothing to do
        await send(observer, {"index": 1, "r": 4, "g": 5, "b": 6})
        await wait_until(lambda: plugin.changes == 1, 10, what="the plain command applied")
        pixels, refused = list(plugin.lamp.pixels), plugin.refused
        await lamp.shutdown()
        return pixels, refused

    pixels, refused = asyncio.run(scenario())
    assert pixels == [(0, 0, 0), (4, 5, 6)] and refused == 2
    reasons = [r["reason"] for r in received(observer, REFUSED)]
    assert len(reasons) == 2 and all("retained command is refused" in reason for reason in reasons)
