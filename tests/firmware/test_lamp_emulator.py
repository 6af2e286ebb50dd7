"""The lamp board's protocol code behind a pseudo-terminal (firmware/host/lamp_emulator.cpp), talked to with pyserial.

The lamp sketch cannot be built here with the real Adafruit NeoPixel library,
so the daemon's side of the lamp protocol is tried against the same protocol
sources compiled for the host, with an emulated strip that prints each frame
it is shown.  This is the fallback the issue names for a board that cannot
run in simavr; the relay board does run there (test_relay_simavr.py).
"""

from __future__ import annotations

import pytest
import serial

from tests.support.lamp_emulator import LampEmulator, build_lamp_emulator


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    return build_lamp_emulator(tmp_path_factory.mktemp("lamp"))


class EmulatedLamp(LampEmulator):
    """The emulator with this test holding its port (pyserial)."""

    def __init__(self, program, *options: str):
        super().__init__(program, *options, "-s")
        self.port_path = self.port
        self.port = self.open()
        self.start()

    def open(self):
        return serial.Serial(self.port_path, 115200, timeout=10)

    def read(self) -> str:
        line = self.port.readline()
        assert line.endswith(b"\n"), f"no complete line from the lamp: {line!r}"
        return line.decode("ascii").rstrip("\n")

    def ask(self, command: bytes | str) -> str:
        self.port.write(command if isinstance(command, bytes) else command.encode("ascii") + b"\n")
        return self.read()

    def close(self):
        self.port.close()
        super().close()


@pytest.fixture
def lamp(emulator):
    started = EmulatedLamp(emulator, "-n", "4", "-w", "-b", "128", "-i", "lamp-top")
    yield started
    started.close()


def test_lamp_announces_itself_and_clears_the_strip(lamp):
    assert lamp.read() == "HELLO lights 1.0.0 lamp-top pixels=4 white=1 boot=power"
    assert lamp.frame() == "00000000" * 4


def test_a_frame_reaches_the_strip_on_show_with_the_brightness(lamp):
    lamp.read(), lamp.frame()
    assert lamp.ask("SET 0 255 0 0 0") == "OK SET 0"
    assert lamp.ask("SETN 1 00ff000000000aff") == "OK SETN 1 2"
    assert lamp.ask("SHOW") == "OK SHOW"
    assert lamp.frame() == "80000000" + "00800000" + "00000580" + "00000000"  # 128/255 of each part, rounded
    assert lamp.ask("BRIGHT 255") == "OK BRIGHT 255"
    assert lamp.ask("FILL 1 2 3") == "OK FILL"
    assert lamp.ask("SHOW") == "OK SHOW"
    assert lamp.frame() == "01020300" * 4


def test_lamp_keeps_its_state_through_bad_lines_and_a_reopened_port(lamp):
    lamp.read(), lamp.frame()
    assert lamp.ask("FILL 10 20 30 40") == "OK FILL"
    assert lamp.ask("SHOW") == "OK SHOW"
    shown = lamp.frame()
    assert lamp.ask(b"FILL 255 255 255" + b" " * 300 + b"\n") == "ERR too-long max=160"
    assert lamp.ask(b"FILL 255 255 255\x00\n") == "ERR bad-byte"
    assert lamp.ask("SET 4 1 1 1") == "ERR out-of-range index 0..3"
    assert lamp.ask("SETN 0 ffffffffzz") == "ERR bad-args hex-length"
    assert lamp.ask("BRIGHT 300") == "ERR out-of-range brightness 0..255"
    assert lamp.ask("GET 2") == "OK GET 2 10 20 30 40"
    # The host goes away and comes back (the daemon restarting): the lamp has forgotten nothing.
    lamp.port.close()
    lamp.port = lamp.open()
    assert lamp.ask("STATUS") == "OK STATUS pixels=4 white=1 bright=128 lit=4 pending=0"
    assert lamp.ask("SHOW") == "OK SHOW"
    assert lamp.frame() == shown
    assert lamp.frames.empty()
