"""The relay plugin's `arduino` backend against the relay firmware running in simavr, over MQTT and pyserial.

Everything is real but the board: mosquitto, the daemon (in this process, or
as a child process where it is killed), the relay plugin on its `arduino`
backend, pidaemon.serial_board and pyserial.  The board is the relay
firmware compiled for the ATmega2560 (firmware/build.sh) running in simavr's
library, its UART on a pseudo-terminal (firmware/host/simavr_board.cpp via
tests/support/simulated_board.py), which reports pins 22 (reset, PA0) and
24 (power, PA2) with the simulation's own times.  Durations are read from
those times, never from the wall clock.

The board's stable name (/dev/picluster-relay, made by udev) is a symbolic
link in the test's directory to the pty of whichever board is "plugged in";
unplugging kills the board's process (its pty closes, as a USB port vanishes)
and removes the link, plugging in starts a board and makes the link again.

Presses use a build with RELAY_BOOT_LOCKOUT=0 (as tests/firmware does), so
that a test need not wait out the board's 10 s boot lockout; the shipped
build's lockout has a test of its own.  The wrong board is the lamp's
protocol code behind a pty (firmware/host/lamp_emulator.cpp), kind `lights`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from tests.support.firmware_toolchain import require_gxx, require_simavr
from tests.support.lamp_emulator import LampEmulator, build_lamp_emulator
from tests.support.nodes import make_daemon, node_config, start_node_process, write_config
from tests.support.observer import next_payload
from tests.support.simulated_board import SimulatedBoard, build_harness, build_relay_firmware
from tests.support.usb_socket import UsbSocket
from tests.support.waiting import wait_until

RESET_PIN, POWER_PIN = "A0", "A2"   # the Mega's pins 22 and 24
SILENT_HOST_MS = 1500               # the board releases a held relay after this long without a line
RELAYS = {   # no pins: the board names its relays; the daemon's own bounds stay in front of the board's
    "reset": {"max_press": 2, "default_press": 0.3, "min_interval": 0},
    "power": {"max_press": 6, "default_press": 0.5, "min_interval": 0},
}
NODE = "relay-1"
INFO = f"picluster/nodes/{NODE}/info"
TELEMETRY = f"picluster/nodes/{NODE}/telemetry"


# ---------------------------------------------------------------- boards (built once for the file)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    require_gxx()
    require_simavr()
    return build_harness(tmp_path_factory.mktemp("harness"))


@pytest.fixture(scope="module")
def unlocked_firmware(tmp_path_factory, harness):
    return build_relay_firmware(tmp_path_factory.mktemp("unlocked"), "-DRELAY_BOOT_LOCKOUT=0")


@pytest.fixture(scope="module")
def shipped_firmware(tmp_path_factory, harness):
    return build_relay_firmware(tmp_path_factory.mktemp("shipped"))


@pytest.fixture(scope="module")
def hanging_firmware(tmp_path_factory, harness):
    """A test build whose loop stops 500 ms after each start, so that its watchdog restarts it (as tests/firmware)."""
    return build_relay_firmware(tmp_path_factory.mktemp("hanging"), "-DRELAY_BOOT_LOCKOUT=0 -DRELAY_TEST_HANG_AT_MS=500")


@pytest.fixture(scope="module")
def lamp_program(tmp_path_factory):
    return build_lamp_emulator(tmp_path_factory.mktemp("lamp"))


@pytest.fixture
def boards(harness, lamp_program, tmp_path):
    """Starts boards (stopped at the end of the test) and the stable name to plug them into."""
    started = []

    class Boards:
        socket = UsbSocket(tmp_path / "picluster-relay")

        @staticmethod
        def relay(firmware: Path, power_on: bool = True) -> SimulatedBoard:
            board = SimulatedBoard(harness, firmware, [RESET_PIN, POWER_PIN])
            started.append(board)
            if power_on:   # now: its boot HELLO goes to nobody, so the daemon asks for it (`HELLO`)
                board.power_on()
            return board

        @staticmethod
        def lamp() -> LampEmulator:
            lamp = LampEmulator(lamp_program, "-n", "4")   # a board of another kind (`HELLO lights ...`)
            started.append(lamp)
            return lamp

    yield Boards
    for board in started:
        board.close()


# ---------------------------------------------------------------- the daemon and what it publishes


def arduino_plugins(port: Path, **arduino) -> dict:
    link = {"port": str(port), "hello_wait": 0.3, "timeout": 1.0, "keepalive": 0.4, "reconnect_min": 0.1,
            "reconnect_max": 0.5, **arduino}
    return {"relay": {"backend": "arduino", "required": True, "relays": RELAYS, "options": link},
            "telemetry": {"interval": 0.2}}


def relay_node(broker, port: Path, **arduino):
    return make_daemon(NODE, broker.url, role="relay", plugins=arduino_plugins(port, **arduino))


async def published(observer, topic: str, condition=lambda payload: True, since: int = 0, timeout: float = 15):
    return await asyncio.to_thread(next_payload, observer, topic, condition, since, timeout)


def board_info(condition):
    return lambda info: "relay_board" in info and condition(info["relay_board"])


def readings(condition):
    return lambda telemetry: condition(telemetry["readings"])


async def command(observer, topic: str, payload: dict) -> int:
    """Publish a command; the index of the observer's messages from which its effects appear."""
    since = len(observer.messages)
    await asyncio.to_thread(observer.publish, f"picluster/relays/{topic}", json.dumps(payload).encode(), 1)
    return since


def held_ms(board: SimulatedBoard, pin: str) -> float:
    """How long the board's next press of `pin` lasted, in the simulation's milliseconds."""
    pressed = board.wait_for(pin, 1)
    return board.wait_for(pin, 0).at_ms - pressed.at_ms


# ---------------------------------------------------------------- tests


def test_a_press_over_mqtt_drives_the_pin_for_its_duration_and_keepalives_hold_a_long_one(broker, observer, boards,
                                                                                          unlocked_firmware):
    board = boards.relay(unlocked_firmware)
    boards.socket.plug(board)

    async def scenario():
        node = relay_node(broker, boards.socket.path)
        await node.start()
        try:
            info = await published(observer, INFO, board_info(lambda b: b["connected"]))
            telemetry = await published(observer, TELEMETRY, readings(lambda r: r["relay_board_connected"] == 1))
            since = await command(observer, "press", {"relay": "reset", "duration": 0.3, "user": "ada"})
            short = await published(observer, "picluster/relays/pressed", since=since)
            # Longer than the board's silent-host timeout: only the keepalives keep it held to the end.
            since = await command(observer, "press", {"relay": "power", "duration": 2.5, "user": "ada"})
            long = await published(observer, "picluster/relays/pressed", since=since)
            state = await published(observer, "picluster/relays/state", since=since,
                                    condition=lambda s: not s["relays"]["power"]["active"])
            return info, telemetry, short, long, state
        finally:
            await node.shutdown()

    info, telemetry, short, long, state = asyncio.run(scenario())
    assert info["relay_board"] == {"path": str(boards.socket.path), "connected": True, "state": "connected",
                                   "kind": "relay", "version": "1.0.0", "id": "relay", "boot": "power", "error": None}
    assert "relay" in info["capabilities"] and {"name": "reset", "mode": "button"} in info["relays"]
    assert telemetry["readings"]["relay_board_reconnects"] == 0
    assert telemetry["readings"]["relay_board_restarts"] == 0
    # The board timed each press (millis() on an AVR steps by about 1 ms, sometimes 2).
    assert 297 <= held_ms(board, RESET_PIN) <= 303
    assert 2497 <= held_ms(board, POWER_PIN) <= 2503
    assert short["relay"] == "reset" and short["by"] == "ada" and short["duration"] >= 0.3
    assert long["relay"] == "power" and long["duration"] >= 2.5   # the daemon waited for the board's release
    assert state["relays"]["power"]["last_press"]["duration"] == long["duration"]
    assert board.pending_changes() == []   # and nothing else moved


def test_the_board_goes_idle_when_the_daemon_is_killed_mid_press(broker, observer, boards, unlocked_firmware,
                                                                 tmp_path):
    board = boards.relay(unlocked_firmware)
    boards.socket.plug(board)
    config = node_config(NODE, broker.url, role="relay", plugins=arduino_plugins(boards.socket.path))
    config["node"]["state_dir"] = str(tmp_path / "state")
    daemon = start_node_process(write_config(tmp_path / "relay.yaml", config))
    try:
        next_payload(observer, INFO, board_info(lambda b: b["connected"]))
        since = len(observer.messages)
        observer.publish("picluster/relays/press", json.dumps({"relay": "power", "duration": 6}).encode(), 1)
        pressed = board.wait_for(POWER_PIN, 1)
        next_payload(observer, "picluster/relays/state", lambda s: s["relays"]["power"]["active"], since)
        time.sleep(1.8)   # the daemon's keepalives hold it past the silent-host timeout (checked below)
        assert board.pending_changes() == [], "the relay was released while the daemon was alive"
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        released = board.wait_for(POWER_PIN, 0)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
    # Released by the board, the host being silent, well before the 6 s the daemon would have held it.
    assert SILENT_HOST_MS <= released.at_ms - pressed.at_ms < 6000 - 100


def test_a_board_of_another_kind_is_refused_until_the_right_one_is_plugged_in(broker, observer, boards,
                                                                              unlocked_firmware):
    lamp = boards.lamp()
    boards.socket.plug(lamp)

    async def scenario():
        node = relay_node(broker, boards.socket.path)
        await node.start()
        try:
            refused = await published(observer, INFO, board_info(lambda b: b["state"] == "refused"))
            since = await command(observer, "press", {"relay": "reset", "duration": 0.2, "user": "ada"})
            refusal = await published(observer, "picluster/relays/refused", since=since)
            serial_board = node.plugin("relay").board.backend.board
            await asyncio.sleep(1)   # ten reconnect pauses: the lamp is not opened again (which would reset it)
            opened = serial_board.opened
            board = boards.relay(unlocked_firmware)
            boards.socket.plug(board)
            info = await published(observer, INFO, board_info(lambda b: b["connected"]))
            since = await command(observer, "press", {"relay": "reset", "duration": 0.2, "user": "ada"})
            pressed = await published(observer, "picluster/relays/pressed", since=since)
            return refused["relay_board"], refusal, opened, info["relay_board"], pressed, board
        finally:
            await node.shutdown()

    refused, refusal, opened, info, pressed, board = asyncio.run(scenario())
    error = refused["error"]
    assert refused["connected"] is False and refused["kind"] is None
    assert str(boards.socket.path) in error and "expected a relay board" in error
    assert "a lights board with firmware 1.0.0" in error
    assert refusal["by"] == "ada" and "expected a relay board" in refusal["reason"] and "lights" in refusal["reason"]
    assert opened == 1
    assert lamp.frames.get(timeout=5) == "000000" * 4 and lamp.frames.empty()   # only its own start-up clear
    assert info["connected"] is True and info["kind"] == "relay" and info["error"] is None
    assert pressed["relay"] == "reset" and 197 <= held_ms(board, RESET_PIN) <= 203


def test_an_unplugged_board_is_found_again_and_the_relays_are_idle_after_it(broker, observer, boards,
                                                                            unlocked_firmware):
    first = boards.relay(unlocked_firmware)
    boards.socket.plug(first)

    async def scenario():
        node = relay_node(broker, boards.socket.path)
        await node.start()
        try:
            await published(observer, INFO, board_info(lambda b: b["connected"]))
            since = await command(observer, "press", {"relay": "power", "duration": 5, "user": "ada"})
            await published(observer, "picluster/relays/state", lambda s: s["relays"]["power"]["active"], since)
            await asyncio.to_thread(first.wait_for, POWER_PIN, 1)
            boards.socket.unplug()
            gone = await published(observer, INFO, board_info(lambda b: not b["connected"]), since)
            since = await command(observer, "press", {"relay": "reset", "duration": 0.2, "user": "ada"})
            unplugged = await published(observer, "picluster/relays/refused", since=since)
            second = boards.relay(unlocked_firmware)
            boards.socket.plug(second)
            back = await published(observer, INFO, board_info(lambda b: b["connected"]), since)
            idle = await published(observer, "picluster/relays/state", lambda s: not s["relays"]["power"]["active"],
                                   since)
            ended = [record["relay"] for record in node.plugin("relay").pressed]   # presses over by their own time
            telemetry = await published(observer, TELEMETRY, readings(lambda r: r["relay_board_reconnects"] == 1),
                                        since)
            since = await command(observer, "press", {"relay": "reset", "duration": 0.2, "user": "ada"})
            pressed = await published(observer, "picluster/relays/pressed", since=since)
            return gone["relay_board"], unplugged, back["relay_board"], idle, ended, telemetry, pressed, second
        finally:
            await node.shutdown()

    gone, unplugged, back, idle, ended, telemetry, pressed, second = asyncio.run(scenario())
    # Gone (the read failed, or the port cannot be opened again by then); the last board's HELLO is kept.
    assert gone["connected"] is False and str(boards.socket.path) in gone["error"] and gone["version"] == "1.0.0"
    assert "not connected" in unplugged["reason"] and str(boards.socket.path) in unplugged["reason"]
    assert back["connected"] is True and back["error"] is None
    # The daemon set power idle when the board came back, well before its 5 s press would have ended.
    assert idle["relays"]["power"]["active"] is False and ended == []
    assert telemetry["readings"]["relay_board_connected"] == 1
    assert pressed["relay"] == "reset" and 197 <= held_ms(second, RESET_PIN) <= 203


def test_a_press_during_the_shipped_boards_boot_lockout_is_refused_with_the_reason(broker, observer, boards,
                                                                                   shipped_firmware):
    board = boards.relay(shipped_firmware, power_on=False)
    boards.socket.plug(board)

    async def scenario():
        node = relay_node(broker, boards.socket.path, hello_wait=10)
        await node.start()
        try:
            serial_board = node.plugin("relay").board.backend.board
            await wait_until(lambda: serial_board.state == "hello", 10, what="the daemon waiting for a HELLO")
            board.power_on()   # as a Mega restarts when its port is opened: its own HELLO reaches the daemon
            info = await published(observer, INFO, board_info(lambda b: b["connected"]))
            since = await command(observer, "press", {"relay": "reset", "duration": 0.3, "user": "ada"})
            refusal = await published(observer, "picluster/relays/refused", since=since)
            return info["relay_board"], serial_board.hello.line, refusal, list(node.plugin("relay").pressed)
        finally:
            await node.shutdown()

    info, hello, refusal, pressed = asyncio.run(scenario())
    assert hello == "HELLO relay 1.0.0 relay relays=reset,power boot=power"   # announced, not asked for
    assert info["boot"] == "power" and info["version"] == "1.0.0"
    reason = refusal["reason"]
    assert "boot lockout" in reason and "ERR too-soon reset" in reason and refusal["by"] == "ada"
    assert pressed == []
    boot_idle = {(change.pin, change.level) for change in board.pending_changes()}
    assert boot_idle == {(RESET_PIN, 0), (POWER_PIN, 0)}   # set idle at boot; never pressed


def test_a_board_restarted_by_its_watchdog_is_reported_and_stays_connected(broker, observer, boards,
                                                                           hanging_firmware):
    """The board hangs 500 ms (simulated) after each start; its watchdog restarts it with a HELLO nobody asked for."""
    board = boards.relay(hanging_firmware, power_on=False)
    boards.socket.plug(board)

    async def scenario():
        node = relay_node(broker, boards.socket.path, hello_wait=10)
        await node.start()
        try:
            serial_board = node.plugin("relay").board.backend.board
            await wait_until(lambda: serial_board.state == "hello", 10, what="the daemon waiting for a HELLO")
            board.power_on()
            first = await published(observer, INFO, board_info(lambda b: b["connected"]))
            restarted = await published(observer, INFO, board_info(lambda b: b["boot"] == "watchdog"))
            telemetry = await published(observer, TELEMETRY, readings(lambda r: r["relay_board_restarts"] >= 1))
            return first["relay_board"], restarted["relay_board"], telemetry["readings"]
        finally:
            await node.shutdown()

    first, restarted, readings_ = asyncio.run(scenario())
    assert first["boot"] == "power"
    assert restarted["connected"] is True and restarted["version"] == "1.0.0"   # the same port, not reopened
    assert readings_["relay_board_reconnects"] == 0 and readings_["relay_board_connected"] == 1
