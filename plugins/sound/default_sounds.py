"""The default sound library, synthesized by the project itself (MIT, like the rest of pidaemon).

No recording is shipped: each sound of `pidaemon.warble.limits.DEFAULT_SOUNDS`
(the names Warble accepts by default) is computed here from sine waves,
decays and seeded noise, and written as a 16-bit mono WAV with the standard
`wave` module, into the speaker's state directory at its first start.  A file
that exists already (an operator's own `bell.wav`) is kept.
"""

from __future__ import annotations

import math
import os
import random
import struct
import tempfile
import wave
from pathlib import Path
from typing import Callable

from pidaemon.warble.limits import DEFAULT_SOUNDS

RATE = 22050
PEAK = 0.7   # of full scale: headroom for the volume and the amplifier


def _seconds(duration: float) -> range:
    return range(int(duration * RATE))


def _envelope(i: int, n: int, fade: float = 0.005) -> float:
    """Short fades at both ends, so that no sound starts or stops with a click."""
    edge = max(1, int(fade * RATE))
    return min(1.0, i / edge, (n - 1 - i) / edge)


def beep() -> list[float]:
    n = int(0.15 * RATE)
    return [math.sin(2 * math.pi * 880 * i / RATE) * _envelope(i, n) for i in range(n)]


def bell() -> list[float]:
    """A struck bell: inharmonic partials, the higher ones dying first."""
    partials = ((1.0, 1.0), (2.0, 0.6), (2.76, 0.4), (5.4, 0.25))
    n = int(1.2 * RATE)
    return [sum(a * math.exp(-3 * k * i / RATE) * math.sin(2 * math.pi * 523.25 * k * i / RATE)
                for k, a in partials) * _envelope(i, n) for i in range(n)]


def chime() -> list[float]:
    """Two notes, E6 then C6, each decaying."""
    samples: list[float] = []
    for frequency in (1318.5, 1046.5):
        n = int(0.45 * RATE)
        samples += [math.exp(-5 * i / RATE) * math.sin(2 * math.pi * frequency * i / RATE) * _envelope(i, n)
                    for i in range(n)]
    return samples


def applause() -> list[float]:
    """Many short claps of noise at random moments (a fixed seed: the same file every time)."""
    noise = random.Random(2022)
    n = int(1.5 * RATE)
    samples = [0.0] * n
    clap = int(0.012 * RATE)
    for _ in range(220):
        start = noise.randrange(0, n - clap)
        loudness = noise.uniform(0.3, 1.0)
        for j in range(clap):
            samples[start + j] += loudness * noise.uniform(-1, 1) * math.exp(-j / (clap / 4))
    return [s * _envelope(i, n, 0.2) for i, s in enumerate(samples)]


def drum() -> list[float]:
    """A kick: a sine falling from 120 to 50 Hz, quickly damped."""
    n = int(0.4 * RATE)
    phase, samples = 0.0, []
    for i in range(n):
        t = i / RATE
        phase += 2 * math.pi * (50 + 70 * math.exp(-t * 25)) / RATE
        samples.append(math.exp(-t * 9) * math.sin(phase) * _envelope(i, n))
    return samples


def whistle() -> list[float]:
    """A rising whistle with a little vibrato."""
    n = int(0.6 * RATE)
    phase, samples = 0.0, []
    for i in range(n):
        t = i / RATE
        phase += 2 * math.pi * (1800 + 1000 * t + 40 * math.sin(2 * math.pi * 6 * t)) / RATE
        samples.append(math.sin(phase) * _envelope(i, n, 0.03))
    return samples


# One per name of DEFAULT_SOUNDS (a test holds them equal): the speaker plays what Warble accepts.
SYNTHESIZERS: dict[str, Callable[[], list[float]]] = {
    "beep": beep, "bell": bell, "chime": chime, "applause": applause, "drum": drum, "whistle": whistle,
}


def to_pcm16(samples: list[float]) -> bytes:
    """Normalized to PEAK of full scale, as 16-bit little-endian samples."""
    loudest = max(abs(s) for s in samples) or 1.0
    scale = PEAK * 32767 / loudest
    return struct.pack(f"<{len(samples)}h", *(round(s * scale) for s in samples))


def write_wav(path: Path, pcm: bytes, rate: int = RATE, channels: int = 1, sample_width: int = 2) -> None:
    """Write a WAV file whole or not at all (a temporary file renamed into place)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".wav")
    try:
        with os.fdopen(handle, "wb") as file, wave.open(file, "wb") as writer:
            writer.setnchannels(channels)
            writer.setsampwidth(sample_width)
            writer.setframerate(rate)
            writer.writeframes(pcm)
        os.chmod(temporary, 0o644)   # mkstemp's 0600 would hide the library from its operator
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_default_sounds(directory: Path) -> list[str]:
    """Create `directory` and the default sounds it lacks; returns the names written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DEFAULT_SOUNDS:
        path = directory / f"{name}.wav"
        if not path.exists():
            write_wav(path, to_pcm16(SYNTHESIZERS[name]()))
            written.append(name)
    return written
