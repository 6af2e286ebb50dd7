"""Volume by scaling the samples: simpleaudio (and ALSA's default device) has no volume control of its own.

The scale is linear in amplitude (0.5 is about -6 dB); 1.0 leaves the
samples untouched and 0.0 is silence.  WAV samples are little-endian, signed,
except 8-bit ones, which are unsigned around 128.
"""

from __future__ import annotations

import sys
from array import array


def scale_samples(pcm: bytes, sample_width: int, volume: float) -> bytes:
    """`pcm` with every sample multiplied by `volume` (0.0 to 1.0), rounded to the nearest integer."""
    if volume >= 1.0:
        return pcm
    if sample_width == 1:
        return bytes(128 + round((s - 128) * volume) for s in pcm)
    if sample_width == 3:
        out = bytearray(len(pcm))
        for i in range(0, len(pcm) - len(pcm) % 3, 3):
            value = round(int.from_bytes(pcm[i:i + 3], "little", signed=True) * volume)
            out[i:i + 3] = value.to_bytes(3, "little", signed=True)
        return bytes(out)
    typecode = {2: "h", 4: "i" if array("i").itemsize == 4 else "l"}[sample_width]
    samples = array(typecode, pcm[:len(pcm) - len(pcm) % sample_width])
    if sys.byteorder == "big":
        samples.byteswap()
    scaled = array(typecode, (round(s * volume) for s in samples))
    if sys.byteorder == "big":
        scaled.byteswap()
    return scaled.tobytes()
