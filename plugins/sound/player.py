"""The speaker's queue: one sound at a time, in order; what comes while it plays waits or is refused.

Policy `queue`: a request that comes while a sound plays waits, up to
`max_queue` of them (more are refused: the queue is full).  Policy `drop`: it
is refused.  `stop` ends the sound playing and empties the queue.  The player
knows nothing of MQTT: the plugin hears of every sound started, refused and
every change through the callbacks it gives.
"""

from __future__ import annotations

import asyncio
import wave
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .backends import Playback, SoundBackend, SoundBackendError
from .library import Sound

POLICIES = ("queue", "drop")


@dataclass(frozen=True)
class PlayRequest:
    sound: Sound
    user: str | None = None   # who asked, echoed in `played` and `refused`
    job: str | None = None


class Player:
    def __init__(self, backend: SoundBackend, *, policy: str, max_queue: int, volume: float,
                 on_started: Callable[[PlayRequest, float], None],
                 on_refused: Callable[[PlayRequest, str], None],
                 on_change: Callable[[], None]):
        if policy not in POLICIES:
            raise ValueError(f"queue policy must be one of {POLICIES}, got {policy!r}")
        self.backend = backend
        self.policy = policy
        self.max_queue = max_queue
        self.volume = volume
        self.on_started, self.on_refused, self.on_change = on_started, on_refused, on_change
        self.playing: PlayRequest | None = None
        self.queue: deque[PlayRequest] = deque()
        self._playback: Playback | None = None
        self._stop_requested = False   # stop() came while the backend was starting the sound
        self._wakeup = asyncio.Event()

    @property
    def busy(self) -> bool:
        return self.playing is not None or bool(self.queue)

    def offer(self, request: PlayRequest) -> str | None:
        """Take a request (None), or say why it is refused."""
        if self.busy and self.policy == "drop":
            return f"the speaker is playing {self._current_name()} (queue policy: drop)"
        if self.busy and len(self.queue) >= self.max_queue:
            return f"the queue is full ({self.max_queue} sounds waiting)"
        self.queue.append(request)
        self._wakeup.set()
        self.on_change()
        return None

    def stop(self) -> list[PlayRequest]:
        """End the sound playing and empty the queue; returns the requests that will not play."""
        dropped = list(self.queue)
        self.queue.clear()
        if self._playback is not None:
            self._playback.stop()
        elif self.playing is not None:
            self._stop_requested = True
        self.on_change()
        return dropped

    async def run(self) -> None:
        """Play the queue, for ever (a supervised task)."""
        while True:
            while not self.queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            request = self.queue.popleft()
            self.playing, self._stop_requested = request, False
            try:
                await self._play(request)
            finally:
                self.playing, self._playback = None, None
                self.on_change()

    async def _play(self, request: PlayRequest) -> None:
        volume = self.volume
        try:
            playback = await asyncio.to_thread(self.backend.start, request.sound, volume)
        except (SoundBackendError, OSError, wave.Error, EOFError) as exc:
            self.on_refused(request, f"the speaker could not play {request.sound.name}: {exc}")
            return
        if self._stop_requested:
            playback.stop()
            self.on_refused(request, "stopped before it played")
            return
        self._playback = playback
        self.on_started(request, volume)
        await playback.finished()

    def _current_name(self) -> str:
        current = self.playing or (self.queue[0] if self.queue else None)
        return current.sound.name if current else "nothing"
