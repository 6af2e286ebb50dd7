"""A board's compiled firmware running in simavr, its UART on a pseudo-terminal (firmware/host/simavr_board.cpp).

`SimulatedBoard` starts the harness, gives the serial port's path for pyserial
and collects the watched pins' changes with their simulated times, so that a
test sees what the board's outputs did in the board's own clock.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.support.firmware_toolchain import (FIRMWARE, SIMAVR_HEADERS, SIMAVR_LIBRARY, board_build, host_compile,
                                              require_arduino_builder)

HARNESS_SOURCE = FIRMWARE / "host" / "simavr_board.cpp"


def build_harness(directory: Path) -> Path:
    return host_compile(directory / "simavr_board", [HARNESS_SOURCE], [], ["-isystem", str(SIMAVR_HEADERS)],
                        [SIMAVR_LIBRARY])


@dataclass(frozen=True)
class PinChange:
    pin: str      # port and bit, "A0"
    level: int
    at_ms: float  # simulated time since power-on


class SimulatedBoard:
    def __init__(self, harness: Path, firmware: Path, pins: list[str]):
        watch = [arg for pin in pins for arg in ("-w", pin)]
        self.process = subprocess.Popen([str(harness), str(firmware), *watch, "-s"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.changes: queue.Queue[PinChange] = queue.Queue()
        self.stopped: str | None = None
        self.port = self._read_port()
        threading.Thread(target=self._read_events, daemon=True).start()

    def _read_port(self) -> str:
        for line in self.process.stdout:  # simavr's own "Loaded ..." lines come first
            if line.startswith("PTY "):
                return line.split()[1]
        raise RuntimeError(f"the simavr harness ended without a port (exit status {self.process.wait()})")

    def _read_events(self) -> None:
        for line in self.process.stdout:
            words = line.split()
            if words[:1] == ["PIN"]:
                self.changes.put(PinChange(words[1], int(words[2]), float(words[3])))
            elif words[:1] == ["STOPPED"]:
                self.stopped = words[1]

    def power_on(self) -> None:
        """Starts the MCU (call it after opening the port, to read the boot announcement)."""
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def next_change(self, timeout: float = 10.0) -> PinChange:
        return self.changes.get(timeout=timeout)

    def wait_for(self, pin: str, level: int, timeout: float = 10.0) -> PinChange:
        """The first change of `pin` to `level`; fails if another pin goes active on the way."""
        while True:
            change = self.next_change(timeout)
            if change.pin == pin and change.level == level:
                return change
            assert change.level == 0 or change.pin == pin, f"unexpected {change} while waiting for {pin}={level}"

    def pending_changes(self) -> list[PinChange]:
        changes = []
        while not self.changes.empty():
            changes.append(self.changes.get_nowait())
        return changes

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def build_relay_firmware(directory: Path, flags: str = "") -> Path:
    """The relay sketch built for the ATmega2560 into `directory` (`flags`: -D settings of a test build)."""
    require_arduino_builder()
    board_build("relay_controller", directory, env={**os.environ, "FIRMWARE_FLAGS": flags})
    return directory / "relay_controller.elf"
