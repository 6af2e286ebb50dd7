"""How the speaker makes sound: one small interface, one class per kind of output.

The plugin's `backend:` setting names the class (`SOUND_BACKENDS`,
pidaemon/backends.py: a built-in or one a distribution registers in the
`pidaemon.sound_backends` entry-point group).  A backend is created when the
plugin is configured; `start` runs in a worker thread, so it may read the WAV
file and scale its samples without holding up the daemon's event loop.  A
backend with options of its own declares them as `config_schema`; it receives
the plugin's `options:` mapping checked against it (`options: {realtime:
false}` for `sim`), or None when it has none.

Adding an output (another DAC, a network speaker): subclass SoundBackend and
Playback in your distribution and register the class; docs/plugins.md has an
example.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from pidaemon.backends import BackendError, Backends
from pidaemon.schema import Boolean, settings

from .library import Sound
from .volume import scale_samples


class SoundBackendError(BackendError):
    """The output cannot play (library missing, device refused): the message says what to do."""


class Playback:
    """One sound on its way out of the speaker."""

    async def finished(self) -> None:
        """Return when the sound has ended, or has been stopped."""
        raise NotImplementedError

    def stop(self) -> None:
        """End the sound now (called on the event loop; finished() then returns soon)."""
        raise NotImplementedError


class SoundBackend:
    """The interface every backend implements.

    - `__init__(options, log)`: import the output's library here, not at the
      top of the module (a worker never imports simpleaudio), and raise
      SoundBackendError saying what to install when it is missing: the plugin
      then fails to start, naming the reason, and the node keeps running.
    - `problem(sound)`: why this output cannot play a WAV of the library, or
      None. Checked when the library loads: such a file is skipped, with a
      warning that names it.
    - `start(sound, volume)`: begin playing at `volume` (0.0 to 1.0) and
      return a Playback at once. Runs in a worker thread. Raises
      SoundBackendError when the output refuses: the request is then refused
      with that reason.
    - `close()`: at shutdown, after the last playback was stopped.
    """

    name: ClassVar[str]
    config_schema: ClassVar[type | None] = None   # a @settings class for the plugin's `options:`, or None

    def __init__(self, options: Any, log: logging.Logger | logging.LoggerAdapter):
        self.options = options
        self.log = log

    def problem(self, sound: Sound) -> str | None:
        return None

    def start(self, sound: Sound, volume: float) -> Playback:
        raise NotImplementedError

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- sim: no speaker

@settings
class SimSettings:
    realtime: bool = Boolean(default=True, doc="wait each sound's duration as a speaker would (false: at once)")


class SimPlayback(Playback):
    def __init__(self, duration: float):
        self.duration = duration
        self._stopped = False
        self._wakeup: asyncio.Event | None = None   # made on the event loop, by finished()

    async def finished(self) -> None:
        if self.duration <= 0 or self._stopped:
            return
        self._wakeup = asyncio.Event()
        try:
            await asyncio.wait_for(self._wakeup.wait(), self.duration)
        except TimeoutError:
            pass

    def stop(self) -> None:
        self._stopped = True
        if self._wakeup is not None:
            self._wakeup.set()


class SimBackend(SoundBackend):
    """No speaker: a sound takes its WAV's duration (or no time), and is announced like a real one."""

    name = "sim"
    config_schema = SimSettings

    def start(self, sound: Sound, volume: float) -> Playback:
        realtime = self.options.realtime if self.options is not None else True
        return SimPlayback(sound.duration if realtime else 0.0)


# ---------------------------------------------------------------- simpleaudio: ALSA

# The rates simpleaudio accepts (others: "Weird sample rates are not supported").
SIMPLEAUDIO_RATES = frozenset({8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000, 192000})


class SimpleaudioPlayback(Playback):
    def __init__(self, play_object):
        self.play_object = play_object

    async def finished(self) -> None:
        await asyncio.to_thread(self.play_object.wait_done)

    def stop(self) -> None:
        self.play_object.stop()


class SimpleaudioBackend(SoundBackend):
    """ALSA's default device through simpleaudio (the `audio` extra), the samples scaled for the volume."""

    name = "simpleaudio"

    def __init__(self, options: Any, log):
        super().__init__(options, log)
        try:
            import simpleaudio
        except ImportError as exc:
            raise SoundBackendError(f"backend simpleaudio needs the simpleaudio package ({exc}): "
                                    "pip install 'pidaemon[audio]' (it builds against libasound2-dev)") from None
        self.simpleaudio = simpleaudio

    def problem(self, sound: Sound) -> str | None:
        if sound.channels not in (1, 2):
            return f"simpleaudio plays mono or stereo, not {sound.channels} channels"
        if sound.rate not in SIMPLEAUDIO_RATES:
            return f"simpleaudio cannot play {sound.rate} Hz (rates: {', '.join(map(str, sorted(SIMPLEAUDIO_RATES)))})"
        return None

    def start(self, sound: Sound, volume: float) -> Playback:
        pcm = scale_samples(sound.pcm(), sound.sample_width, volume)
        try:
            play_object = self.simpleaudio.play_buffer(pcm, sound.channels, sound.sample_width, sound.rate)
        except Exception as exc:   # simpleaudio raises ValueError, or a bare Exception carrying ALSA's error
            raise SoundBackendError(f"ALSA refused to play it: {exc}") from None
        return SimpleaudioPlayback(play_object)


SOUND_BACKENDS = Backends("sound", "pidaemon.sound_backends", SoundBackend, {
    "sim": f"{__name__}:SimBackend",
    "simpleaudio": f"{__name__}:SimpleaudioBackend",   # imports simpleaudio only when created
})
