"""Building the firmware's code for the firmware tests: on the host with g++, for the boards with firmware/build.sh.

Everything is built into the test's temporary directory; nothing is kept
between runs or written into the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
PROTOCOL_SOURCES = FIRMWARE / "libraries" / "PiClusterSerial" / "src"
HOST_TESTS = FIRMWARE / "tests"
BUILD_SCRIPT = FIRMWARE / "build.sh"
ARDUINO_PACKAGES = "arduino-builder arduino-core-avr gcc-avr arduino-ctags"
SIMAVR_HEADERS = Path("/usr/include/simavr")
SIMAVR_LIBRARY = Path("/usr/lib") / f"{os.uname().machine}-linux-gnu" / "libsimavr.so.2"
WARNINGS = ["-Wall", "-Wextra", "-Werror"]


def require_gxx() -> str:
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed: the board protocols' host tests need it (apt-get install g++)")
    return gxx


def require_arduino_builder() -> None:
    tools = ("arduino-builder", "arduino-ctags", "avr-g++", "avr-size")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: the board builds need apt-get install {ARDUINO_PACKAGES}")


def require_simavr() -> None:
    if not (SIMAVR_HEADERS / "sim_avr.h").is_file() or not SIMAVR_LIBRARY.is_file():
        pytest.skip(f"simavr's library is not installed ({SIMAVR_HEADERS}, {SIMAVR_LIBRARY}): "
                    "apt-get install libsimavr-dev")


def host_compile(output: Path, sources: list[Path], include_dirs: list[Path], flags: list[str] = (),
                 libraries: list[Path] = ()) -> Path:
    """Compiles and links `sources` into the program `output` with g++; fails the test with g++'s messages."""
    command = [require_gxx(), "-std=c++17", *WARNINGS, *flags, *(f"-I{d}" for d in include_dirs),
               *map(str, sources), *map(str, libraries), "-o", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"g++ failed:\n{' '.join(command)}\n{result.stderr}"
    return output


def protocol_sources(directory: Path = PROTOCOL_SOURCES) -> list[Path]:
    return sorted(directory.glob("*.cpp"))


def board_build(sketch: str, out: Path, fqbn: str | None = None, env: dict | None = None) -> str:
    """Runs firmware/build.sh for `sketch` into `out`; returns its output (the size report at the end)."""
    command = ["bash", str(BUILD_SCRIPT), sketch, str(out), *([fqbn] if fqbn else [])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output}"
    return output
