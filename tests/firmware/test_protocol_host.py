"""The boards' protocol code (firmware/libraries/PiClusterSerial), compiled with g++ and tested on the host.

The C++ checks in firmware/tests drive the relay and lamp protocols with an
injected clock: every command, malformed input, over-long lines, every bound,
and the release of a held relay when the host falls silent.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.support.firmware_toolchain import (HOST_TESTS, PROTOCOL_SOURCES, WARNINGS, host_compile, protocol_sources,
                                              require_gxx)

TEST_SOURCES = sorted(HOST_TESTS.glob("*.cpp"))


def run_checks(program) -> subprocess.CompletedProcess:
    return subprocess.run([str(program)], capture_output=True, text=True, timeout=60)


def test_every_host_check_passes(tmp_path):
    """Run under AddressSanitizer and UBSan too, so that a read past a buffer on a long line fails the run."""
    program = host_compile(tmp_path / "protocol_tests", [*protocol_sources(), *TEST_SOURCES],
                           [PROTOCOL_SOURCES, HOST_TESTS],
                           ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
    result = run_checks(program)
    summary = re.search(r"^(\d+) checks, (\d+) failed$", result.stdout, re.MULTILINE)
    assert summary, f"no summary line in the checks' output:\n{result.stdout}{result.stderr}"
    failed_lines = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert result.returncode == 0 and summary.group(2) == "0" and not failed_lines, result.stdout
    names = [line[5:] for line in result.stdout.splitlines() if line.startswith("ok  ")]
    # Both boards' suites ran, including the silent-host and over-long-line cases.
    assert any(name.startswith("relay: silent host") for name in names), names
    assert any(name.startswith("lights: survives over-long") for name in names), names
    assert int(summary.group(1)) > 100


def test_checks_fail_when_the_silent_host_release_is_broken(tmp_path):
    """The checks can fail: with the silent-host release taken out of a copy of the code, they say so."""
    broken = tmp_path / "broken"
    shutil.copytree(PROTOCOL_SOURCES, broken)
    relay = broken / "relay_protocol.cpp"
    text = relay.read_text()
    assert "now_ms - last_heard_ms_ >= host_timeout_ms_" in text
    relay.write_text(text.replace("now_ms - last_heard_ms_ >= host_timeout_ms_", "false"))
    program = host_compile(tmp_path / "broken_tests", [*protocol_sources(broken), *TEST_SOURCES], [broken, HOST_TESTS],
                           ["-Wno-unused-parameter"])
    result = run_checks(program)
    assert result.returncode == 1
    assert "FAIL relay: silent host releases a press" in result.stdout
    assert "FAIL relay: boot, HELLO, PING" not in result.stdout


def test_protocol_code_is_plain_cxx11_without_arduino_headers(tmp_path):
    """What the boards compile (gnu++11 in the Arduino AVR core) also builds as strict C++11 with only C headers."""
    gxx = require_gxx()
    for source in protocol_sources():
        command = [gxx, "-std=c++11", "-pedantic", *WARNINGS, "-c", str(source), "-o", str(tmp_path / "out.o")]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{source.name}:\n{result.stderr}"
    for path in sorted(PROTOCOL_SOURCES.iterdir()):
        for line in path.read_text().splitlines():
            if line.startswith("#include <"):
                assert line in ("#include <stdint.h>", "#include <string.h>"), f"{path.name}: {line}"
