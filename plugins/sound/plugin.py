"""The speaker on the audio Pi: plays the sounds that Warble programs (and any MQTT client) ask for.

Commands (JSON objects, QoS 1, never retained; docs/protocol.md, "Sound"):
`<prefix>/sound/play` `{"name": "bell"}` (`""`: the default sound),
`<prefix>/sound/stop` `{}`, `<prefix>/sound/volume` `{"value": 0.5}`.
Only names of the library (a directory of WAV files) are played, never a
path or URL.  Each sound played is announced on `<prefix>/sound/played` with
its duration; each refused request is answered on `<prefix>/sound/refused`
with the reason; the speaker's state is retained on `<prefix>/sound/state`.

Backends (backends.py): `sim` (no speaker: the sound takes its duration and
is announced), `simpleaudio` (ALSA's default device; the `audio` extra).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path

from pidaemon import hookimpl
from pidaemon.bus import RETAINED_COMMAND, Message, PayloadError, Subscription
from pidaemon.backends import backend_options, check_options
from pidaemon.schema import Any_, Checked, Integer, ListOf, MapOf, Number, String, settings

from .backends import SOUND_BACKENDS, SoundBackend
from .default_sounds import write_default_sounds
from .library import NAME_DOC, NAME_PATTERN, LibraryError, SoundLibrary
from .player import POLICIES, Player, PlayRequest
from .commands import RequestRefused, echoed, read_request, requested_name, requested_volume, shown_payload

COMMANDS = ("play", "stop", "volume")
KEPT_PLAYED = 100   # names of the last sounds played, kept in `played` for tests and the simulator


@settings
class SoundSettings:
    backend: str = Checked(SOUND_BACKENDS.check_name, expected="the name of a sound backend", default="sim",
                           doc="sim: no speaker; simpleaudio: ALSA's default device (the [audio] extra); or one "
                               "installed in the pidaemon.sound_backends entry-point group")
    options: dict = MapOf(Any_(), doc="the backend's own settings (sim: realtime)")
    library: str | None = String(default=None,
                                 doc="directory of WAV files, each played by its name (bell.wav: bell); null: "
                                     "<state_dir>/sounds, where the default sounds are written at first start")
    sounds: tuple[str, ...] | None = ListOf(String(pattern=NAME_PATTERN.pattern, pattern_doc=NAME_DOC),
                                            default=None,
                                            doc="the names that may be played (null: every WAV of the library)")
    default: str = String(pattern=NAME_PATTERN.pattern, pattern_doc=NAME_DOC, default="beep",
                          doc='what {"name": ""} (PLAYSOUND("")) plays')
    queue: str = String(choices=list(POLICIES), default="queue",
                        doc="a request while a sound plays: queue (it waits its turn) or drop (refused)")
    max_queue: int = Integer(min=0, max=1000, default=8, doc="sounds that may wait their turn (policy queue)")
    volume: float = Number(min=0, max=1, default=1.0,
                           doc="volume at start, 0.0 to 1.0 (scales the samples; sound/volume changes it)")
    state_interval: float = Number(min=0, default=0.1, doc="seconds between two publications of sound/state")

    @staticmethod
    def check_whole(values, path, problems):
        check_options(SOUND_BACKENDS, values, path, problems)   # `config check` sees a misspelt option too


class SoundPlugin:
    config_schema = SoundSettings

    def __init__(self, node, config: SoundSettings):
        self.node = node
        self.config = config
        self.library = SoundLibrary({})
        self.backend: SoundBackend | None = None
        self.player: Player | None = None
        self.played: deque[str] = deque(maxlen=KEPT_PLAYED)   # names actually played, oldest first
        self._state_changed = asyncio.Event()
        self._republish = False
        self._stopped = False

    # ------------------------------------------------------------ lifecycle

    @hookimpl
    async def pidaemon_configure(self, node):
        config = self.config
        backend = SOUND_BACKENDS.load(config.backend)
        self.backend = backend(backend_options(backend, config.options, ("plugins", "sound", "options")), node.log)
        directory = Path(config.library).expanduser() if config.library else node.state_dir / "sounds"
        self.library = await asyncio.to_thread(self._load_library, directory)
        self.player = Player(self.backend, policy=config.queue, max_queue=config.max_queue, volume=config.volume,
                             on_started=self._started, on_refused=self._refused_by_player,
                             on_change=self._state_changed.set)
        node.log.info("sound library %s: %s (default %s, backend %s)", directory, ", ".join(self.library),
                      config.default, config.backend)

    def _load_library(self, directory: Path) -> SoundLibrary:
        if not self.config.library:
            written = write_default_sounds(directory)
            if written:
                self.node.log.info("sound library %s: wrote the default sounds %s", directory, ", ".join(written))
        library = SoundLibrary.load(directory, self.node.log.warning, self.backend.problem)
        if self.config.sounds is not None:
            library = library.only(self.config.sounds)
        if self.config.default not in library:
            raise LibraryError(f"the default sound {self.config.default!r} is not in the sound library {directory} "
                               f"(it has: {', '.join(library) or 'none'})")
        return library

    @hookimpl
    def pidaemon_startup(self, node):
        node.supervise(self.player.run, "sound-player")
        node.supervise(self._publish_state, "sound-state")

    @hookimpl
    def pidaemon_connected(self, node):
        self._republish = True   # the retained state again on every connection, changed or not
        self._state_changed.set()

    @hookimpl
    def pidaemon_shutdown(self, node):
        self._stopped = True   # the state task publishes nothing more: the last state below stays
        if self.player is not None:
            for request in self.player.stop():
                self._refuse("play", request.sound.name, "the speaker is shutting down", request.user, request.job)
            state = {**self.state(), "playing": None}   # the retained state outlives the speaker: silent
            node.publish(node.topic("sound", "state"), state, qos=1, retain=True)
        if self.backend is not None:
            self.backend.close()

    @hookimpl
    def pidaemon_info(self, node):
        return {"capabilities": ["sound"], "sounds": list(self.library), "default_sound": self.config.default}

    @hookimpl
    def pidaemon_subscriptions(self, node):
        return [Subscription(node.topic("sound", command), retain_as_published=True) for command in COMMANDS]

    # ------------------------------------------------------------ commands

    @hookimpl
    def pidaemon_message(self, node, message: Message):
        command = message.topic.rsplit("/", 1)[-1]
        request: dict = {}
        if message.retain and not message.payload:
            return   # a retained command being cleared: nothing to do
        try:
            if message.retain:
                raise RequestRefused(RETAINED_COMMAND)
            request = read_request(message, empty_allowed=command == "stop")
            if command == "play":
                self._play(request, message)
            elif command == "stop":
                for dropped in self.player.stop():
                    self._refuse("play", dropped.sound.name, "stopped before it played (sound/stop)",
                                 dropped.user, dropped.job)
                node.log.info("sound stopped (by %s)", echoed(request, "user") or "unknown")
            elif command == "volume":
                self.player.volume = requested_volume(request)
                self._state_changed.set()
                node.log.info("volume %.2f (by %s)", self.player.volume, echoed(request, "user") or "unknown")
        except RequestRefused as refusal:
            self._refuse(command, shown_payload(message), str(refusal), echoed(request, "user"),
                         echoed(request, "job"))
            raise PayloadError(f"{message.topic}: {refusal}") from None

    def _play(self, request: dict, message: Message) -> None:
        name = requested_name(request, self.library, self.config.default)
        play = PlayRequest(self.library[name], echoed(request, "user"), echoed(request, "job"))
        reason = self.player.offer(play)
        if reason is not None:
            self.node.log.info("refused to play %s for job %s of %s: %s", name, play.job, play.user, reason)
            self._refuse("play", shown_payload(message), reason, play.user, play.job)

    # ------------------------------------------------------------ what the speaker says

    def _started(self, request: PlayRequest, volume: float) -> None:
        sound = request.sound
        self.played.append(sound.name)
        self.node.log.info("playing %s (%.2f s, volume %.2f) for job %s of %s", sound.name, sound.duration, volume,
                           request.job, request.user)
        self.node.publish(self.node.topic("sound", "played"),
                          {"name": sound.name, "duration": sound.duration, "volume": volume,
                           "user": request.user, "job": request.job, "time": time.time()}, qos=1)
        self._state_changed.set()

    def _refused_by_player(self, request: PlayRequest, reason: str) -> None:
        self.node.log.warning("could not play %s for job %s of %s: %s", request.sound.name, request.job,
                              request.user, reason)
        self._refuse("play", request.sound.name, reason, request.user, request.job)

    def _refuse(self, command: str, shown_request: str, reason: str, user: str | None, job: str | None) -> None:
        self.node.publish(self.node.topic("sound", "refused"),
                          {"command": command, "request": shown_request, "reason": reason, "user": user, "job": job,
                           "time": time.time()}, qos=1)

    def state(self) -> dict:
        player = self.player
        return {"playing": player.playing.sound.name if player and player.playing else None,
                "queued": len(player.queue) if player else 0,
                "volume": player.volume if player else self.config.volume,
                "sounds": list(self.library), "default": self.config.default}

    async def _publish_state(self) -> None:
        """The retained state after every change, at most once per `state_interval`, and on every connection."""
        last = None
        while True:
            await self._state_changed.wait()
            self._state_changed.clear()
            if self._stopped:
                return
            state = self.state()
            if state != last or self._republish:
                self._republish = False
                self.node.publish(self.node.topic("sound", "state"), state, qos=1, retain=True)
                last = state
            await asyncio.sleep(self.config.state_interval)
