"""The relay firmware as compiled for the ATmega2560, running in simavr, talked to over a pseudo-terminal.

The test stands where the daemon stands: it opens the board's serial port with
pyserial, sends protocol lines and reads the replies, and watches pins 22
(reset, PA0) and 24 (power, PA2) of the simulated MCU.  Durations are read
from the simulation's clock (the harness reports each pin change with its
simulated time), never from the wall clock.

The presses use a build with RELAY_BOOT_LOCKOUT=0, so that a test need not
wait out the 10 s lockout after power-on; the shipped build's lockout has its
own test.  The watchdog test uses a build whose loop hangs on purpose.
"""

from __future__ import annotations

import time

import pytest
import serial

from tests.support.firmware_toolchain import require_gxx, require_simavr
from tests.support.simulated_board import SimulatedBoard, build_harness, build_relay_firmware

RESET_PIN, POWER_PIN = "A0", "A2"   # the Mega's pins 22 and 24
HOST_TIMEOUT_MS = 1500              # as set in relay_controller.ino


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    require_gxx()
    require_simavr()
    return build_harness(tmp_path_factory.mktemp("harness"))


@pytest.fixture(scope="module")
def shipped_firmware(tmp_path_factory):
    return build_relay_firmware(tmp_path_factory.mktemp("shipped"))


@pytest.fixture(scope="module")
def unlocked_firmware(tmp_path_factory):
    return build_relay_firmware(tmp_path_factory.mktemp("unlocked"), "-DRELAY_BOOT_LOCKOUT=0")


@pytest.fixture(scope="module")
def hanging_firmware(tmp_path_factory):
    """A test build whose loop stops 500 ms after power-on (RELAY_TEST_HANG_AT_MS), as a hung board's would."""
    return build_relay_firmware(tmp_path_factory.mktemp("hanging"), "-DRELAY_BOOT_LOCKOUT=0 -DRELAY_TEST_HANG_AT_MS=500")


class Host:
    """The daemon's end of the line: pyserial on the board's port."""

    def __init__(self, board: SimulatedBoard):
        self.port = serial.Serial(board.port, 115200, timeout=10)
        board.power_on()
        self.hello = self.read()

    def read(self) -> str:
        line = self.port.readline()
        assert line.endswith(b"\n"), f"no complete line from the board: {line!r}"
        return line.decode("ascii").rstrip("\n")

    def ask(self, command: bytes | str) -> str:
        self.port.write(command if isinstance(command, bytes) else command.encode("ascii") + b"\n")
        return self.read()


@pytest.fixture
def start(harness):
    boards = []

    def start_board(firmware):
        board = SimulatedBoard(harness, firmware, [RESET_PIN, POWER_PIN])
        boards.append(board)
        host = Host(board)
        # setup() drives both outputs idle first thing.
        boot = {(change.pin, change.level) for change in (board.next_change(), board.next_change())}
        assert boot == {(RESET_PIN, 0), (POWER_PIN, 0)}
        return board, host

    yield start_board
    for board in boards:
        board.close()


def test_board_announces_itself_and_keeps_its_boot_lockout(start, shipped_firmware):
    board, host = start(shipped_firmware)
    kind, version, board_id, relays = host.hello.split()[1:5]
    assert host.hello.startswith("HELLO ") and (kind, version) == ("relay", "1.0.0")
    assert board_id == "relay" and relays == "relays=reset,power"
    assert host.ask("PING") == "OK PONG"
    reply = host.ask("PRESS reset").split()
    assert reply[:3] == ["ERR", "too-soon", "reset"] and 9000 < int(reply[3]) <= 10000
    assert host.ask("HELLO") == "OK " + host.hello
    assert board.pending_changes() == []


def test_press_drives_its_pin_for_its_duration(start, unlocked_firmware):
    board, host = start(unlocked_firmware)
    assert host.ask("PRESS reset 300") == "OK PRESS reset 300"
    pressed = board.wait_for(RESET_PIN, 1)
    released = board.wait_for(RESET_PIN, 0)
    # Simulated time (simavr's cycle count, not this machine's clock): the same on a loaded machine.
    # millis() on an AVR steps by about 1 ms, sometimes 2.
    assert 297 <= released.at_ms - pressed.at_ms <= 303
    assert host.ask("PRESS 1 200") == "OK PRESS power 200"  # power by number
    pressed = board.wait_for(POWER_PIN, 1)
    released = board.wait_for(POWER_PIN, 0)
    assert 197 <= released.at_ms - pressed.at_ms <= 203
    status = host.ask("STATUS").split()
    assert status[:3] == ["OK", "STATUS", "silent=0"] and status[3].startswith("reset=idle,")
    assert host.ask("PRESS reset").startswith("ERR too-soon reset ")  # its min interval, on the board
    assert board.pending_changes() == []


def test_board_lets_go_when_the_host_falls_silent(start, unlocked_firmware):
    board, host = start(unlocked_firmware)
    assert host.ask("PRESS power 5000") == "OK PRESS power 5000"
    pressed = board.wait_for(POWER_PIN, 1)
    released = board.wait_for(POWER_PIN, 0)  # the host says nothing more
    assert HOST_TIMEOUT_MS - 3 <= released.at_ms - pressed.at_ms <= HOST_TIMEOUT_MS + 3
    assert host.ask("STATUS").split()[2] == "silent=1"


def test_held_relay_stays_while_the_host_keeps_talking(start, unlocked_firmware):
    board, host = start(unlocked_firmware)
    assert host.ask("ON reset") == "OK ON reset 2000"
    board.wait_for(RESET_PIN, 1)
    for _ in range(3):
        time.sleep(0.1)
        assert host.ask("PING") == "OK PONG"
    assert host.ask("STATUS").split()[3].startswith("reset=on,")
    assert board.pending_changes() == [], "released while the host was talking"
    assert host.ask("OFF reset") == "OK OFF reset"
    board.wait_for(RESET_PIN, 0)
    assert host.ask("STATUS").split()[2] == "silent=0"


def test_malformed_and_over_long_lines_change_nothing(start, unlocked_firmware):
    board, host = start(unlocked_firmware)
    assert host.ask(b"PRESS reset 10" + b" " * 200 + b"\n") == "ERR too-long max=64"
    assert host.ask("PRESS reset 2001") == "ERR out-of-range reset 1..2000"
    assert host.ask(b"PRESS reset\x00 10\n") == "ERR bad-byte"
    assert host.ask("PRESS reset ten") == "ERR bad-number ten"
    assert host.ask("REBOOT") == "ERR unknown-command REBOOT"
    assert host.ask("PING") == "OK PONG"
    assert board.pending_changes() == []


def test_watchdog_restarts_a_hung_board_with_its_relays_idle(start, hanging_firmware):
    board, host = start(hanging_firmware)
    assert host.ask("PRESS power 6000") == "OK PRESS power 6000"
    pressed = board.wait_for(POWER_PIN, 1)
    # The loop stops at 500 ms: no more replies, no silent-host release.  The host keeps talking all the while.
    host.port.timeout = 0.2
    lines, partial = [], b""
    for _ in range(100):  # the board restarts about 1.5 s after power-on, in the simulation's time
        time.sleep(0.1)
        host.port.write(b"PING\n")
        partial += host.port.readline()
        if partial.endswith(b"\n") or not partial:  # nothing within the timeout: recorded as ""
            lines.append(partial.decode("ascii"))
            partial = b""
        if lines[-1:] and lines[-1].startswith("HELLO"):
            break
    assert lines[-1].split()[-1] == "boot=watchdog", lines
    assert "" in lines, "the board answered all along: it never hung"
    released = board.wait_for(POWER_PIN, 0)
    # Well before the press's end, and about the watchdog's 1 s after the hang (500 ms).
    assert 1000 <= released.at_ms - pressed.at_ms <= 3000
