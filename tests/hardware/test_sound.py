"""The speaker (plugin `sound`) against a real mosquitto: the library, the queue, volume, refusals.

The simpleaudio backend is the real library, built against ALSA, playing into
ALSA's `file` plugin: a daemon run as a child process with HOME pointing at a
temporary `.asoundrc` that makes ALSA's default device write the raw PCM it
receives into a file, which the test compares with the WAV's samples.  (A
child process, because alsa-lib reads `~/.asoundrc` once per process.)  The
queue tests use the `sim` backend, which takes each sound's duration without
a speaker: a long sound keeps it busy until the test stops it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import struct
import wave
from pathlib import Path

import pytest

from pidaemon.config import ConfigError
from pidaemon.warble import RecordingEffects, WarbleError, compile_program
from pidaemon.warble.limits import DEFAULT_SOUNDS
from pidaemon_plugins.sound.default_sounds import SYNTHESIZERS, write_default_sounds, write_wav
from pidaemon_plugins.sound.volume import scale_samples
from tests.support.distributions import write_distribution
from tests.support.nodes import make_daemon, node_config, start_node_process, write_config
from tests.support.observer import Observer
from tests.support.waiting import wait_until
from tests.support.warble_cluster import InProcessCluster, submit

PLAY, STOP, VOLUME = "picluster/sound/play", "picluster/sound/stop", "picluster/sound/volume"
PLAYED, REFUSED, STATE = "picluster/sound/played", "picluster/sound/refused", "picluster/sound/state"


def pcm16(samples) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def payloads(observer, topic) -> list[dict]:
    return [json.loads(m.payload) for m in list(observer.messages) if m.topic == topic]


def last_state(observer) -> dict | None:
    states = payloads(observer, STATE)
    return states[-1] if states else None


async def publish(observer, topic, payload) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload)
    await asyncio.to_thread(observer.publish, topic, data)


# ---------------------------------------------------------------- the library and the samples

def test_the_default_library_holds_what_warble_accepts(tmp_path):
    assert set(SYNTHESIZERS) == set(DEFAULT_SOUNDS)
    mine = tmp_path / "sounds" / "bell.wav"
    mine.parent.mkdir()
    write_wav(mine, pcm16([7] * 800), rate=8000)
    written = write_default_sounds(tmp_path / "sounds")
    assert sorted(written) == sorted(set(DEFAULT_SOUNDS) - {"bell"})   # an operator's own bell is kept
    assert write_default_sounds(tmp_path / "sounds") == []
    for name in DEFAULT_SOUNDS:
        with wave.open(str(tmp_path / "sounds" / f"{name}.wav"), "rb") as reader:
            frames = reader.readframes(reader.getnframes())
            if name == "bell":
                assert frames == pcm16([7] * 800)
                continue
            assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 22050)
            samples = struct.unpack(f"<{len(frames) // 2}h", frames)
            assert 0.05 < len(samples) / 22050 < 2 and max(map(abs, samples)) > 10000   # a sound, not silence


@pytest.mark.parametrize("width, samples, volume, expected", [
    (2, [1000, -1000, 32767, -32768, 3], 0.5, [500, -500, 16384, -16384, 2]),
    (2, [1000, -1000, 32767], 0.0, [0, 0, 0]),
    (2, [1000, -1000, 32767], 1.0, [1000, -1000, 32767]),
    (1, [0, 128, 255, 100], 0.5, [64, 128, 192, 114]),       # 8-bit WAV samples are unsigned around 128
    (3, [-8388608, 8388607, 1000], 0.25, [-2097152, 2097152, 250]),
    (4, [-2 ** 31, 2 ** 31 - 1, -6], 0.5, [-2 ** 30, 2 ** 30, -3]),
])
def test_volume_scales_the_samples(width, samples, volume, expected):
    def encode(values):
        if width == 1:
            return bytes(values)
        return b"".join(v.to_bytes(width, "little", signed=True) for v in values)
    assert scale_samples(encode(samples), width, volume) == encode(expected)


def test_playsound_of_nothing_asks_for_the_default_sound():
    """The 2022 blog's own example, with its phone's typographic quote, is valid Warble."""
    effects = RecordingEffects()
    result = compile_program("#pi{PLAYSOUND(\u201d\");}").run(effects=effects)
    assert result.status == "ok", result.error
    assert effects.events == [("PLAYSOUND", ("",))]
    for refused in ('PLAYSOUND("../beep")', 'PLAYSOUND("http://x/y.wav")', 'PLAYSOUND("nope")'):
        result = compile_program(refused).run(effects=effects)
        assert result.status == "error" and "PLAYSOUND" in result.error.message
    with pytest.raises(WarbleError):
        compile_program("PLAYSOUND()")


# ---------------------------------------------------------------- queue, drop, stop, volume (sim backend)

def long_and_short_library(directory: Path) -> dict[str, float]:
    """`long` (10 minutes: it plays until stopped) and `tick`, and their durations."""
    directory.mkdir()
    write_wav(directory / "long.wav", bytes([128]) * 600_000, rate=1000, sample_width=1)
    write_wav(directory / "tick.wav", pcm16([0, 100, 0, -100] * 550), rate=22050)
    (directory / "notes.txt").write_text("not a sound")
    write_wav(directory / "Not-A-Name.wav", pcm16([0] * 10), rate=22050)
    return {"long": 600.0, "tick": 2200 / 22050}


def speaker(broker, library: Path, **settings):
    sound = {"backend": "sim", "library": str(library), "default": "tick", "state_interval": 0, **settings}
    return make_daemon("speaker", broker.url, role="audio", plugins={"sound": sound})


def test_queue_policy_max_queue_stop_and_volume(broker, observer, tmp_path, caplog):
    durations = long_and_short_library(tmp_path / "lib")

    async def scenario():
        node = speaker(broker, tmp_path / "lib", queue="queue", max_queue=2, volume=0.8)
        await node.start()
        assert await node.bus.wait_connected(10)
        try:
            await publish(observer, PLAY, {"name": "long", "user": "ada", "job": "j1"})
            await wait_until(lambda: payloads(observer, PLAYED), 10, what="long played")
            for job in ("j2", "j3", "j4"):
                await publish(observer, PLAY, {"name": "tick", "user": "bob", "job": job})
            await wait_until(lambda: payloads(observer, REFUSED), 10, what="the third tick refused")
            await wait_until(lambda: (last_state(observer) or {}).get("queued") == 2, 10, what="two queued")
            full = payloads(observer, REFUSED)
            # Volume: out of bounds or not a number is refused; 0.25 applies from the next sound on.
            for bad in ({"value": 1.5}, {"value": -0.1}, {"value": True}, {"value": "loud"}, {}):
                await publish(observer, VOLUME, bad)
            await publish(observer, VOLUME, {"value": 0.25, "user": "op"})
            await wait_until(lambda: last_state(observer)["volume"] == 0.25, 10, what="volume 0.25")
            await publish(observer, STOP, b"")
            await wait_until(lambda: last_state(observer)["playing"] is None and last_state(observer)["queued"] == 0,
                             10, what="stopped")
            await publish(observer, PLAY, {"name": "", "user": "cy", "job": "j5"})
            await wait_until(lambda: len(payloads(observer, PLAYED)) == 2, 10, what="the default played")
            return full, list(node.plugin("sound").played), node.info()
        finally:
            await node.shutdown()

    full, played_names, info = asyncio.run(scenario())
    played = payloads(observer, PLAYED)
    assert played_names == ["long", "tick"]
    assert [(p["name"], p["user"], p["job"], p["volume"]) for p in played] == \
        [("long", "ada", "j1", 0.8), ("tick", "cy", "j5", 0.25)]
    assert [p["duration"] for p in played] == pytest.approx([durations["long"], durations["tick"]])
    assert [(r["job"], r["reason"]) for r in full] == [("j4", "the queue is full (2 sounds waiting)")]
    refused = payloads(observer, REFUSED)
    volume_reasons = [r["reason"] for r in refused if r["command"] == "volume"]
    assert volume_reasons == ['"value" must be a number from 0.0 to 1.0, got 1.5',
                              '"value" must be a number from 0.0 to 1.0, got -0.1',
                              '"value" must be a number from 0.0 to 1.0, got True',
                              "\"value\" must be a number from 0.0 to 1.0, got 'loud'",
                              '"value" must be a number from 0.0 to 1.0, got None']
    stopped = [(r["job"], r["reason"]) for r in refused if "stopped" in r["reason"]]
    assert stopped == [("j2", "stopped before it played (sound/stop)"), ("j3", "stopped before it played (sound/stop)")]
    assert info["sounds"] == ["long", "tick"] and info["default_sound"] == "tick" and "sound" in info["capabilities"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("skipped Not-A-Name.wav" in w for w in warnings)
    # What a client that comes later reads: the retained state the speaker left at its shutdown.
    newcomer = Observer(broker.port, topics=[STATE])
    try:
        retained = newcomer.wait_for(STATE)
    finally:
        newcomer.close()
    assert retained.retain and json.loads(retained.payload) == {
        "playing": None, "queued": 0, "volume": 0.25, "sounds": ["long", "tick"], "default": "tick"}


def test_drop_policy_refuses_while_playing(broker, observer, tmp_path):
    long_and_short_library(tmp_path / "lib")

    async def scenario():
        node = speaker(broker, tmp_path / "lib", queue="drop")
        await node.start()
        assert await node.bus.wait_connected(10)
        try:
            await publish(observer, PLAY, {"name": "long", "job": "j1"})
            await wait_until(lambda: payloads(observer, PLAYED), 10, what="long played")
            await publish(observer, PLAY, {"name": "tick", "job": "j2"})
            await wait_until(lambda: payloads(observer, REFUSED), 10, what="tick refused")
            await publish(observer, STOP, {})
            await wait_until(lambda: last_state(observer)["playing"] is None, 10, what="stopped")
            await publish(observer, PLAY, {"name": "tick", "job": "j3"})
            await wait_until(lambda: len(payloads(observer, PLAYED)) == 2, 10, what="tick played")
        finally:
            await node.shutdown()

    asyncio.run(scenario())
    assert [p["job"] for p in payloads(observer, PLAYED)] == ["j1", "j3"]
    assert [(r["job"], r["reason"]) for r in payloads(observer, REFUSED)] == \
        [("j2", "the speaker is playing long (queue policy: drop)")]


def test_bad_requests_are_refused_with_a_reason_and_the_speaker_plays_on(broker, observer, tmp_path, caplog):
    long_and_short_library(tmp_path / "lib")
    bad = [(PLAY, {"name": "../../etc/passwd"}), (PLAY, {"name": "http://x/y.wav"}), (PLAY, {"name": "Tick"}),
           (PLAY, {"name": 5}), (PLAY, {}), (PLAY, b"garbage"), (PLAY, b"\xff\xfe"), (PLAY, b"[1, 2]"),
           (PLAY, {"name": "x" * 100_000, "user": "u" * 1000}), (STOP, b"{{"), (VOLUME, b"")]

    async def scenario():
        node = speaker(broker, tmp_path / "lib", options={"realtime": False})
        await node.start()
        assert await node.bus.wait_connected(10)
        try:
            for topic, payload in bad:
                await publish(observer, topic, payload)
            await publish(observer, PLAY, {"name": "tick", "user": "ada", "job": "ok"})
            await wait_until(lambda: payloads(observer, PLAYED), 10, what="tick played")
            await wait_until(lambda: len(payloads(observer, REFUSED)) == len(bad), 10, what="every bad one refused")
            return node.plugin("sound").played, node.info()["plugins"]["sound"]["state"]
        finally:
            await node.shutdown()

    played, plugin_state = asyncio.run(scenario())
    assert list(played) == ["tick"] and plugin_state == "running"
    refused = payloads(observer, REFUSED)
    assert [r["command"] for r in refused] == ["play"] * 9 + ["stop", "volume"]
    reasons = [r["reason"] for r in refused]
    assert reasons[0].startswith("'../../etc/passwd' is not in the sound library (sounds: long, tick;")
    assert reasons[1].startswith("'http://x/y.wav' is not in the sound library")
    assert reasons[2].startswith("'Tick' is not in the sound library")
    assert reasons[3] == '"name" must be a string, got int'
    assert reasons[4].startswith('a play request needs "name"')
    assert reasons[5].startswith("payload is not JSON")
    assert reasons[6].startswith("payload is not UTF-8")
    assert reasons[7] == "expected a JSON object, got list"
    assert reasons[8].startswith("'xxxx") and len(reasons[8]) < 200 and refused[8]["user"] is None
    assert len(refused[8]["request"]) == 200
    assert reasons[9].startswith("payload is not JSON")
    assert reasons[10].startswith("payload is not JSON")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any('plugin "sound"' in e and "'../../etc/passwd' is not in the sound library" in e for e in errors)
    assert any('plugin "sound"' in e and "'http://x/y.wav' is not in the sound library" in e for e in errors)


def test_a_library_without_what_the_config_names_fails_the_plugin_saying_so(broker, tmp_path):
    long_and_short_library(tmp_path / "lib")

    async def scenario():
        nodes = [speaker(broker, tmp_path / "lib", default="bell"),
                 speaker(broker, tmp_path / "lib", sounds=["tick", "gong"]),
                 speaker(broker, tmp_path / "nowhere")]
        errors = []
        for node in nodes:
            await node.start()
            errors.append(node.info()["plugins"]["sound"].get("error", ""))
            await node.shutdown()
        return errors

    errors = asyncio.run(scenario())
    assert "the default sound 'bell' is not in the sound library" in errors[0]
    assert "not in the sound library: gong (it has: long, tick)" in errors[1]
    assert f"the sound library {tmp_path / 'nowhere'} is not a directory" in errors[2]


# ---------------------------------------------------------------- PLAYSOUND("") through the cluster

def test_a_program_playing_nothing_plays_the_default_sound(broker, observer, tmp_path):
    async def scenario():
        async with InProcessCluster(broker.url, tmp_path, workers=1):
            node = make_daemon("speaker", broker.url, role="audio",
                               plugins={"sound": {"default": "chime", "options": {"realtime": False}}})
            await node.start()
            assert await node.bus.wait_connected(10)
            try:
                await submit(observer, "#pi{PLAYSOUND(\u201d\");}")
                await wait_until(lambda: payloads(observer, PLAYED), 30, what="the default sound played")
                # The speaker's default library is what the workers' Warble accepts by default.
                assert node.info()["sounds"] == sorted(DEFAULT_SOUNDS)
                return node.state_dir / "sounds" / "chime.wav"
            finally:
                await node.shutdown()

    chime = asyncio.run(scenario())
    (request,) = payloads(observer, PLAY)
    (played,) = payloads(observer, PLAYED)
    assert request["name"] == "" and request["node"] == "worker-1"
    assert played["name"] == "chime" and played["job"] == request["job"] and played["user"] == "anonymous"
    with wave.open(str(chime), "rb") as reader:
        assert played["duration"] == pytest.approx(reader.getnframes() / reader.getframerate())


# ---------------------------------------------------------------- simpleaudio into ALSA's file plugin

def test_simpleaudio_writes_the_samples_to_alsa(broker, observer, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "alsa-out.raw"
    (home / ".asoundrc").write_text(f'pcm.!default {{ type file slave.pcm "null" file "{out}" format "raw" }}\n')
    library = tmp_path / "lib"
    library.mkdir()
    tone = [(i * 4 % 4000) - 2000 for i in range(4410)]                       # 16-bit mono, multiples of 4
    write_wav(library / "tone.wav", pcm16(tone), rate=22050)
    stereo = bytes((128 + (i * 2 % 120) - 60) for i in range(1600))           # 8-bit stereo, even around 128
    write_wav(library / "stereo.wav", stereo, rate=8000, channels=2, sample_width=1)
    write_wav(library / "odd_rate.wav", pcm16([0] * 100), rate=1000)           # simpleaudio cannot play 1000 Hz
    config = node_config("speaker", broker.url, role="audio", plugins={"sound": {
        "backend": "simpleaudio", "library": str(library), "default": "tone", "state_interval": 0}})
    process = start_node_process(write_config(tmp_path / "speaker.yaml", config), env={"HOME": str(home)})

    async def played_into_alsa(request, expected: bytes, count: int):
        await publish(observer, PLAY, request)
        await wait_until(lambda: len(payloads(observer, PLAYED)) == count, 20, what=f"{request} played")
        await wait_until(lambda: out.exists() and out.read_bytes() == expected, 10, what=f"{request} in ALSA's file")

    async def scenario():
        state = await asyncio.to_thread(observer.wait_for, STATE, None, 30)
        await played_into_alsa({"name": ""}, pcm16(tone), 1)
        await publish(observer, VOLUME, {"value": 0.5})
        await wait_until(lambda: last_state(observer)["volume"] == 0.5, 10, what="volume 0.5")
        await played_into_alsa({"name": "tone"}, pcm16([s // 2 for s in tone]), 2)
        await played_into_alsa({"name": "stereo"}, bytes(128 + (b - 128) // 2 for b in stereo), 3)
        return json.loads(state.payload)

    try:
        first_state = asyncio.run(scenario())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    played = payloads(observer, PLAYED)
    assert [(p["name"], p["volume"]) for p in played] == [("tone", 1.0), ("tone", 0.5), ("stereo", 0.5)]
    assert [p["duration"] for p in played] == pytest.approx([4410 / 22050, 4410 / 22050, 800 / 8000])
    assert first_state["sounds"] == ["stereo", "tone"] and first_state["default"] == "tone"
    log = process.log_path.read_text()
    assert "skipped odd_rate.wav: simpleaudio cannot play 1000 Hz" in log
    assert process.returncode == 0, log


def test_simpleaudio_without_a_device_refuses_saying_why(broker, observer, tmp_path):
    """ALSA's default device is a sound card that does not exist: each play is refused with ALSA's reason."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text("pcm.!default { type hw card 99 }\n")
    library = tmp_path / "lib"
    library.mkdir()
    write_wav(library / "tone.wav", pcm16([0, 400, 0, -400] * 100), rate=22050)
    config = node_config("speaker", broker.url, role="audio", plugins={"sound": {
        "backend": "simpleaudio", "library": str(library), "default": "tone", "state_interval": 0}})
    process = start_node_process(write_config(tmp_path / "speaker.yaml", config), env={"HOME": str(home)})

    async def scenario():
        await asyncio.to_thread(observer.wait_for, STATE, None, 30)
        for job in ("j1", "j2"):
            await publish(observer, PLAY, {"name": "tone", "job": job})
        await wait_until(lambda: len(payloads(observer, REFUSED)) == 2, 20, what="both refused")
        await wait_until(lambda: last_state(observer)["playing"] is None, 10, what="idle again")

    try:
        asyncio.run(scenario())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(15)
    assert payloads(observer, PLAYED) == []
    refused = payloads(observer, REFUSED)
    assert [r["job"] for r in refused] == ["j1", "j2"]
    assert all(r["reason"].startswith("the speaker could not play tone: ALSA refused to play it:") for r in refused)
    assert process.returncode == 0, process.log_path.read_text()


def test_a_backend_from_another_distribution_plays_with_its_own_options(broker, observer, tmp_path, monkeypatch,
                                                                       caplog):
    """A backend registered in the `pidaemon.sound_backends` entry-point group, as a pip-installed one is:
    chosen by name, its `options:` checked against its own schema, given the samples at the volume."""
    site = write_distribution(tmp_path / "site", "speaker-recorder",
                              {"pidaemon.sound_backends": {"recorder": "speaker_recorder:RecordingOutput"}},
                              {"speaker_recorder": '''
        from pidaemon.schema import String, settings
        from pidaemon_plugins.sound.backends import Playback, SoundBackend
        from pidaemon_plugins.sound.volume import scale_samples


        @settings
        class RecorderOptions:
            label: str = String(default="desk")


        class Done(Playback):
            async def finished(self):
                pass

            def stop(self):
                pass


        class RecordingOutput(SoundBackend):
            name = "recorder"
            config_schema = RecorderOptions
            played = []

            def start(self, sound, volume):
                self.played.append((self.options.label, sound.name,
                                    scale_samples(sound.pcm(), sound.sample_width, volume)))
                return Done()
    '''})
    monkeypatch.syspath_prepend(str(site))
    long_and_short_library(tmp_path / "lib")

    async def scenario():
        node = speaker(broker, tmp_path / "lib", backend="recorder", options={"label": "shelf"}, volume=0.5)
        await node.start()
        assert await node.bus.wait_connected(10)
        played = type(node.plugin("sound").backend).played
        await publish(observer, PLAY, {"name": "tick"})
        await wait_until(lambda: played, 10, what="the sound recorded")
        await node.shutdown()
        misspelt = speaker(broker, tmp_path / "lib", backend="recorder", options={"lable": "shelf"})
        await misspelt.start()
        failed = misspelt.status()["failed_plugins"]
        await misspelt.shutdown()
        return played[0], failed

    (label, name, pcm), failed = asyncio.run(scenario())
    assert (label, name) == ("shelf", "tick")
    assert pcm == pcm16([0, 50, 0, -50] * 550)
    assert failed == ["sound"]
    assert any('plugins.sound.options.lable: unknown key; did you mean "label"?' in r.getMessage()
               for r in caplog.records)
    with pytest.raises(ConfigError, match=r"plugins\.sound\.backend: expected the name of a sound backend, got "
                                          r'"pulseaudio" \(installed: recorder, sim, simpleaudio\)'):
        make_daemon("speaker", broker.url, role="audio", plugins={"sound": {"backend": "pulseaudio"}})


def test_a_retained_request_is_refused_at_start_and_while_connected(broker, observer, tmp_path):
    """Before: a retained play was played at every start of the speaker."""
    long_and_short_library(tmp_path / "lib")

    async def scenario():
        await asyncio.to_thread(observer.publish, PLAY, json.dumps({"name": "tick", "user": "retained"}), 1, True)
        node = speaker(broker, tmp_path / "lib", options={"realtime": False})
        await node.start()
        assert await node.bus.wait_connected(10)
        await wait_until(lambda: len(payloads(observer, REFUSED)) == 1, 10, what="refused at start")
        await asyncio.to_thread(observer.publish, VOLUME, json.dumps({"value": 0.1}), 1, True)
        await wait_until(lambda: len(payloads(observer, REFUSED)) == 2, 10, what="refused while connected")
        await asyncio.to_thread(observer.publish, PLAY, b"", 1, True)     # cleared: nothing to do
        await publish(observer, PLAY, {"name": "tick", "user": "ada"})
        await wait_until(lambda: payloads(observer, PLAYED), 10, what="the plain request played")
        volume = node.plugin("sound").player.volume
        await node.shutdown()
        return volume

    volume = asyncio.run(scenario())
    assert [p["user"] for p in payloads(observer, PLAYED)] == ["ada"] and volume == 1.0
    reasons = [p["reason"] for p in payloads(observer, REFUSED)]
    assert len(reasons) == 2 and all("retained command is refused" in reason for reason in reasons)


def test_a_built_in_backends_options_are_checked_by_config_check(broker):
    """Before: `pidaemon config check` said ok, and only `pidaemon run` refused the misspelt option."""
    with pytest.raises(ConfigError, match=r'plugins\.sound\.options\.realtme: unknown key; did you mean "realtime"\?'):
        make_daemon("speaker", broker.url, role="audio", plugins={"sound": {"options": {"realtme": False}}})
    with pytest.raises(ConfigError, match=r'plugins\.sound\.options: the "simpleaudio" backend takes no options'):
        make_daemon("speaker", broker.url, role="audio", plugins={"sound": {"backend": "simpleaudio",
                                                                            "options": {"device": "hw:1"}}})
