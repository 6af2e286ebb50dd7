"""The speaker's sound library: a directory of WAV files, each played by its plain name.

A sound's name is its file name without `.wav` (`bell.wav` is `bell`).  Names
are checked where they enter (NAME_PATTERN); a request is looked up in the
library's own table, so no text from a message ever becomes a path.
"""

from __future__ import annotations

import re
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

NAME_PATTERN = re.compile(r"[a-z0-9_]{1,64}")
NAME_DOC = "a sound name (1 to 64 of a-z, 0-9, _)"


@dataclass(frozen=True)
class Sound:
    """One WAV file of the library, described by its header (the samples are read when played)."""

    name: str
    path: Path
    channels: int
    sample_width: int   # bytes per sample: 1 (unsigned), 2, 3 or 4 (signed little-endian)
    rate: int           # frames per second
    frames: int

    @property
    def duration(self) -> float:
        """Seconds, from the WAV's frame count and rate."""
        return self.frames / self.rate

    def pcm(self) -> bytes:
        """The samples as stored in the file (blocking: call it from a thread)."""
        with wave.open(str(self.path), "rb") as reader:
            return reader.readframes(reader.getnframes())


class LibraryError(Exception):
    """The library cannot be used as configured (missing directory, default sound not in it)."""


def read_sound(name: str, path: Path) -> Sound:
    """The Sound of one file; raises wave.Error, EOFError or OSError for a file that is not a PCM WAV."""
    with wave.open(str(path), "rb") as reader:
        sound = Sound(name, path, reader.getnchannels(), reader.getsampwidth(), reader.getframerate(),
                      reader.getnframes())
    if sound.rate <= 0 or not 1 <= sound.sample_width <= 4:
        raise wave.Error(f"{sound.sample_width * 8}-bit samples at {sound.rate} Hz")
    return sound


class SoundLibrary(Mapping[str, Sound]):
    """The playable sounds of a directory, by name; files that cannot be played are skipped, with a warning."""

    def __init__(self, sounds: Mapping[str, Sound]):
        self._sounds = dict(sorted(sounds.items()))

    @classmethod
    def load(cls, directory: Path, warn: Callable[[str], None],
             playable: Callable[[Sound], str | None] = lambda sound: None) -> "SoundLibrary":
        """Read every `*.wav` of `directory`; `playable(sound)` says why a backend cannot play one, or None."""
        if not directory.is_dir():
            raise LibraryError(f"the sound library {directory} is not a directory")
        sounds = {}
        for path in sorted(directory.iterdir()):
            if path.suffix.lower() != ".wav":
                continue
            if not NAME_PATTERN.fullmatch(path.stem):
                warn(f"sound library: skipped {path.name}: its name is not {NAME_DOC}")
                continue
            try:
                sound = read_sound(path.stem, path)
            except (wave.Error, EOFError, OSError) as exc:
                warn(f"sound library: skipped {path.name}: not a PCM WAV file ({exc})")
                continue
            problem = playable(sound)
            if problem:
                warn(f"sound library: skipped {path.name}: {problem}")
                continue
            sounds[sound.name] = sound
        return cls(sounds)

    def only(self, names) -> "SoundLibrary":
        """The library reduced to `names`; raises LibraryError naming those it lacks."""
        missing = [name for name in names if name not in self._sounds]
        if missing:
            raise LibraryError(f"not in the sound library: {', '.join(missing)} (it has: {', '.join(self) or 'none'})")
        return SoundLibrary({name: self._sounds[name] for name in names})

    def __getitem__(self, name: str) -> Sound:
        return self._sounds[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sounds)

    def __len__(self) -> int:
        return len(self._sounds)
