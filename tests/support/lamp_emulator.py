"""The lamp board's protocol code behind a pseudo-terminal (firmware/host/lamp_emulator.cpp), for tests.

`build_lamp_emulator` compiles the emulator with g++ (the test is skipped
when g++ is missing); `LampEmulator` runs one: `port` is its pty, and
`frames` receives every frame its strip is shown (one `RRGGBB[WW]` hex string
per SHOW, the board's brightness applied), read from the emulator's stdout
while a daemon holds the pty.
"""

from __future__ import annotations

import queue
import subprocess
import threading
from pathlib import Path

from tests.support.firmware_toolchain import FIRMWARE, PROTOCOL_SOURCES, host_compile, protocol_sources


def build_lamp_emulator(directory: Path) -> Path:
    return host_compile(directory / "lamp_emulator", [*protocol_sources(), FIRMWARE / "host" / "lamp_emulator.cpp"],
                        [PROTOCOL_SOURCES])


class LampEmulator:
    """One running emulator: `lamp_emulator OPTIONS...` (-n PIXELS, -w, -b BRIGHTNESS, -i ID, -s)."""

    def __init__(self, program: Path, *options: str):
        self.process = subprocess.Popen([str(program), *options], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        self.port = self.process.stdout.readline().split()[1]
        self.frames: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read_frames, daemon=True).start()

    def _read_frames(self) -> None:
        for line in self.process.stdout:
            if line.startswith("FRAME "):
                self.frames.put(line.split()[1])

    def start(self) -> None:
        """Start the board (its HELLO) when it was run with -s."""
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def frame(self, timeout: float = 10) -> str:
        """The next frame shown (a bound on failure only)."""
        return self.frames.get(timeout=timeout)

    def close(self) -> None:
        """Stop it: its pty closes, as a board's USB port vanishes when it is unplugged."""
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


def expected_frame(pixels, level: int, white: bool) -> str:
    """The emulator's FRAME line for `pixels` (r, g, b[, w]) at the board's brightness `level` (0-255)."""
    parts = 4 if white else 3
    return "".join(f"{(value * level + 127) // 255:02x}" for colour in pixels for value in tuple(colour)[:parts])
