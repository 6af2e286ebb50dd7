"""The boards' sketches compiled for the AVR with the distribution's Arduino toolchain (firmware/build.sh).

The relay sketch needs only the Arduino core and is built as it will be
flashed.  The lamp sketch needs the Adafruit NeoPixel library, which CI cannot
download: it is built here against a stand-in header with the same calls (no
pixel output), which checks the sketch and the protocol code for the AVR but
not the real library.
"""

from __future__ import annotations

import os
import re

from tests.support.firmware_toolchain import FIRMWARE, board_build, require_arduino_builder

MEGA_FLASH = 253952   # the ATmega2560's flash less the 8 KiB bootloader
MEGA_RAM = 8192


def sizes(output: str) -> tuple[int, int]:
    """Flash and RAM bytes from avr-size's report at the end of build.sh's output."""
    program = re.search(r"^Program:\s+(\d+) bytes", output, re.MULTILINE)
    data = re.search(r"^Data:\s+(\d+) bytes", output, re.MULTILINE)
    assert program and data, output
    return int(program.group(1)), int(data.group(1))


def own_warnings(output: str) -> list[str]:
    """Compiler warnings in the firmware's own files (the Arduino core's are not ours to fix)."""
    return [line for line in output.splitlines()
            if "warning:" in line and (str(FIRMWARE) in line or ".ino" in line or "PiClusterSerial" in line)]


def test_relay_sketch_builds_for_the_atmega2560(tmp_path):
    require_arduino_builder()
    output = board_build("relay_controller", tmp_path / "relay")
    flash, ram = sizes(output)
    print(f"relay_controller on the ATmega2560: flash {flash} bytes, RAM {ram} bytes")
    assert 0 < flash < MEGA_FLASH
    assert 0 < ram < MEGA_RAM // 4, "the stack and the serial buffers need the rest"
    assert "Device: atmega2560" in output
    assert own_warnings(output) == []
    hex_lines = (tmp_path / "relay" / "relay_controller.hex").read_text().splitlines()
    assert hex_lines[0].startswith(":") and hex_lines[-1] == ":00000001FF"  # an Intel HEX file avrdude can flash


NEOPIXEL_STANDIN = """
// Stand-in for the Adafruit NeoPixel library in the build test: the calls the
// lamp sketch makes, doing nothing.  Not the real library.
#pragma once
#include <stdint.h>
#define NEO_GRB 0x52
#define NEO_GRBW 0xD2
#define NEO_RGB 0x06
#define NEO_KHZ800 0x0000
class Adafruit_NeoPixel {
 public:
  Adafruit_NeoPixel(uint16_t n, int16_t pin, uint16_t type) : n_(n), pin_(pin), type_(type) {}
  void begin() {}
  void show() {}
  void setPixelColor(uint16_t, uint8_t, uint8_t, uint8_t, uint8_t) {}
 private:
  uint16_t n_;
  int16_t pin_;
  uint16_t type_;
};
"""


def test_lamp_sketch_builds_for_the_atmega2560_against_a_neopixel_standin(tmp_path):
    require_arduino_builder()
    library = tmp_path / "libraries" / "Adafruit_NeoPixel"
    library.mkdir(parents=True)
    (library / "Adafruit_NeoPixel.h").write_text(NEOPIXEL_STANDIN)
    env = {**os.environ, "ARDUINO_LIBRARIES": str(tmp_path / "libraries")}
    output = board_build("light_controller", tmp_path / "lamp", env=env)  # the lamp's board is a Mega too
    flash, ram = sizes(output)
    print(f"light_controller on the ATmega2560 (NeoPixel stand-in): flash {flash} bytes, RAM {ram} bytes")
    assert "Device: atmega2560" in output
    assert 0 < flash < MEGA_FLASH
    # The real library also takes 4 bytes a pixel from the heap at start-up.
    assert ram + 32 * 4 < MEGA_RAM // 4
    assert own_warnings(output) == []
