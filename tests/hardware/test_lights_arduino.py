"""The lamp plugin's `arduino` backend against the lamp board's protocol code, over MQTT and pyserial.

Everything is real but the board: mosquitto, the daemon with the lights
plugin on its `arduino` backend, pidaemon.serial_board and pyserial.  The
board is the lamp firmware's protocol code (firmware/libraries/PiClusterSerial)
compiled for the host behind a pseudo-terminal (firmware/host/lamp_emulator.cpp,
tests/support/lamp_emulator.py), with only the strip emulated: the emulator
prints every frame SHOW puts on the strip, the board's brightness applied,
and that is what the tests read while the daemon holds the pty.

The board's stable name (/dev/picluster-lights, made by udev) is a symbolic
link in the test's directory (tests/support/usb_socket.py); unplugging kills
the emulator, so its pty closes as a USB port vanishes.  Where the emulator
cannot do it, a stand-in written here plays the board on a pty: a board of
another kind (announcing itself as the relay board does), and a board
restarted by its watchdog.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import queue
import struct
import termios
import threading
import time
import tty

import pytest

from pidaemon.config import ConfigError
from pidaemon_plugins.lights.arduino_backend import LONGEST_LINE, Frame, frame_lines
from pidaemon_plugins.lights.effects import chase
from tests.support.lamp_emulator import LampEmulator, build_lamp_emulator, expected_frame
from tests.support.nodes import make_daemon
from tests.support.observer import next_payload
from tests.support.usb_socket import UsbSocket

NODE = "lamp-1"
INFO = f"picluster/nodes/{NODE}/info"
TELEMETRY = f"picluster/nodes/{NODE}/telemetry"
SET, STATE = "picluster/lights/set", "picluster/lights/state"
RELAY_HELLO = "HELLO relay 1.0.0 relay relays=reset,power boot=power"


@pytest.fixture(scope="module")
def emulator_program(tmp_path_factory):
    return build_lamp_emulator(tmp_path_factory.mktemp("lamp"))   # skips the file's tests without g++


class StandInBoard:
    """A board written here, on a pty: answers `HELLO` with `hello`, and keeps a lamp's pixels as the lamp board does.

    It takes FILL, SETN (RGB), CLEAR, BRIGHT and SHOW, answers each `OK`, and
    puts each frame shown on `shown`; `restart()` does what a board restarted
    by its watchdog does: forgets its pixels and announces itself, unasked.
    What the real lamp firmware cannot be made to do behind its emulator.
    """

    def __init__(self, hello: str):
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._slave = slave   # kept open, so that the pty lives while the daemon reopens it
        self.hello = hello
        self.count = int(dict(w.partition("=")[::2] for w in hello.split() if "=" in w).get("pixels", 0))
        self.pixels = [(0, 0, 0)] * self.count
        self.level = 255
        self.heard: queue.Queue[str] = queue.Queue()
        self.shown: queue.Queue[tuple] = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._answer, daemon=True).start()

    def _answer(self) -> None:
        buffer = b""
        while True:
            try:
                data = os.read(self.master, 256)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                text = line.decode("ascii", "replace").strip()
                self.heard.put(text)
                with self._lock:
                    os.write(self.master, (self._reply(text.split()) + "\n").encode())

    def _reply(self, words: list[str]) -> str:
        name = words[0].upper()
        if name == "HELLO":
            return f"OK {self.hello}"
        if name == "FILL":
            self.pixels = [tuple(map(int, words[1:4]))] * self.count
        elif name == "CLEAR":
            self.pixels = [(0, 0, 0)] * self.count
        elif name == "SETN":
            data = words[2]
            for k in range(len(data) // 6):
                self.pixels[int(words[1]) + k] = tuple(int(data[6 * k + j:6 * k + j + 2], 16) for j in (0, 2, 4))
        elif name == "BRIGHT":
            self.level = int(words[1])
        elif name == "SHOW":
            self.shown.put((tuple(self.pixels), self.level))
        return f"OK {name}"

    def unread(self) -> int:
        """Bytes sent to the host that it has not read yet."""
        return struct.unpack("i", fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0"))[0]

    def restart(self, boot: str) -> None:
        """Restart once the host has read every answer, so that the HELLO comes on its own.

        (pidaemon.serial_board reads an unasked HELLO that arrives in the same
        read as an answer only at the next line: reported in the lamp helper's report.)
        """
        wait_until_sync(lambda: self.unread() == 0, what="the host reading the board's answers")
        with self._lock:
            self.pixels = [(0, 0, 0)] * self.count
            self.level = 255
            self.shown.put((tuple(self.pixels), self.level))   # a board clears its strip when it starts
            self.hello = self.hello.replace("boot=power", f"boot={boot}")
            os.write(self.master, f"{self.hello}\n".encode())

    def close(self) -> None:
        for descriptor in (self._slave, self.master):
            try:
                os.close(descriptor)
            except OSError:
                pass


@pytest.fixture
def boards(request, tmp_path):
    """Starts boards (stopped at the end of the test) and the stable name to plug them into."""
    started = []

    class Boards:
        socket = UsbSocket(tmp_path / "picluster-lights")

        @staticmethod
        def lamp(pixels: int, white: bool = False) -> LampEmulator:
            program = request.getfixturevalue("emulator_program")   # built (or skipped) on first use
            lamp = LampEmulator(program, "-n", str(pixels), *(["-w"] if white else []), "-i", "lamp-test")
            started.append(lamp)
            assert lamp.frame() == expected_frame([(0, 0, 0, 0)] * pixels, 255, white)   # its own start-up clear
            return lamp

        @staticmethod
        def stand_in(hello: str) -> StandInBoard:
            board = StandInBoard(hello)
            started.append(board)
            return board

    yield Boards
    for board in started:
        board.close()


def wait_until_sync(condition, timeout: float = 10, what: str = "") -> None:
    """Poll `condition` from a thread (a bound on failure only)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.01)


def lamp_node(broker, port, pixels: int, order: str = "GRB"):
    link = {"port": str(port), "hello_wait": 0.3, "timeout": 1.0, "reconnect_min": 0.1, "reconnect_max": 0.5}
    return make_daemon(NODE, broker.url, role="lights", plugins={
        "lights": {"backend": "arduino", "pixels": pixels, "pixel_order": order, "state_interval": 0,
                   "frame_interval": 0.05, "options": link},
        "telemetry": {"interval": 0.2}})


async def published(observer, topic: str, condition=lambda payload: True, since: int = 0) -> dict:
    return await asyncio.to_thread(next_payload, observer, topic, condition, since)


def lamp_board(condition):
    return lambda info: "lights_board" in info and condition(info["lights_board"])


def readings(condition):
    return lambda telemetry: condition(telemetry["readings"])


async def send(observer, command: dict) -> int:
    """Publish a lamp command; the index of the observer's messages from which its effects appear."""
    since = len(observer.messages)
    await asyncio.to_thread(observer.publish, SET, json.dumps(command).encode(), 1)
    return since


def frames_until(lamp: LampEmulator, wanted: str, timeout: float = 15) -> list[str]:
    """The frames the board shows up to and including `wanted` (TimeoutError, with the last ones, if it never does)."""
    seen = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1] != wanted:
        try:
            seen.append(lamp.frames.get(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            raise TimeoutError(f"the board never showed {wanted}; last frames: {seen[-3:]}") from None
    return seen


async def shows(lamp: LampEmulator, pixels, level: int, white: bool = False) -> list[str]:
    return await asyncio.to_thread(frames_until, lamp, expected_frame(pixels, level, white))


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("order, count", [("GRB", 30), ("GRBW", 20)])   # more pixels than one SETN line holds
def test_commands_over_mqtt_reach_the_board_and_its_presence_is_reported(broker, observer, boards, order, count):
    white = "W" in order
    dark = (0,) * len(order)
    lamp = boards.lamp(count, white)
    boards.socket.plug(lamp)
    rainbow = [(i * 8, 255 - i * 8, i, i % 7)[:len(order)] for i in range(count)]   # every pixel different

    async def scenario():
        node = lamp_node(broker, boards.socket.path, count, order)
        await node.start()
        try:
            info = await published(observer, INFO, lamp_board(lambda b: b["connected"]))
            telemetry = await published(observer, TELEMETRY, readings(lambda r: r["lights_board_connected"] == 1))
            await shows(lamp, [dark] * count, 255, white)   # the lamp's picture at start: dark, brightness 1.0
            picture = [dark] * count

            await send(observer, {"index": 3, "r": 0, "g": 255, "b": 0, **({"w": 9} if white else {})})
            picture[3] = (0, 255, 0, 9)[:len(order)]
            await shows(lamp, picture, 255, white)

            await send(observer, {"command": "pixels", "pixels": [[i, *colour] for i, colour in enumerate(rainbow)]})
            await shows(lamp, rainbow, 255, white)

            await send(observer, {"command": "brightness", "value": 0.5})
            await shows(lamp, rainbow, 128, white)   # the board dims; the colours it keeps are not scaled

            fill = (10, 20, 30, 40)[:len(order)]
            await send(observer, {"command": "fill", "r": 10, "g": 20, "b": 30, **({"w": 40} if white else {})})
            await shows(lamp, [fill] * count, 128, white)
            # The same fill again changes nothing on the board: not sent, not shown.
            await send(observer, {"command": "fill", "r": 10, "g": 20, "b": 30, **({"w": 40} if white else {})})
            since = await send(observer, {"index": 0, "r": 1, "g": 2, "b": 3})
            await published(observer, STATE, lambda s: s["pixels"][0][:3] == [1, 2, 3], since)
            after_repeat = await shows(lamp, [(1, 2, 3, 0)[:len(order)]] + [fill] * (count - 1), 128, white)

            await send(observer, {"command": "effect", "name": "chase", "r": 200, "g": 100, "b": 0})
            effect_frames = [await asyncio.to_thread(lamp.frame) for _ in range(4)]
            await send(observer, {"command": "clear"})
            await shows(lamp, [dark] * count, 128, white)
            return info["lights_board"], telemetry["readings"], after_repeat, effect_frames
        finally:
            await node.shutdown()

    info, readings_, after_repeat, effect_frames = asyncio.run(scenario())
    assert info == {"path": str(boards.socket.path), "connected": True, "state": "connected", "kind": "lights",
                    "version": "1.0.0", "id": "lamp-test", "boot": "power", "error": None, "pixels": count,
                    "white": white}
    assert readings_["lights_board_reconnects"] == 0 and readings_["lights_board_restarts"] == 0
    assert len(after_repeat) == 1   # the repeated fill brought no frame of its own
    steps = {expected_frame(chase(step, count, (200, 100, 0, 0)[:len(order)]), 128, white) for step in range(count)}
    assert all(frame in steps for frame in effect_frames), effect_frames   # the node plays it, the board shows it
    assert len(set(effect_frames)) >= 2                                       # and it moves


WRONG_BOARDS = {   # (what is plugged in, what the error must say)
    "fewer pixels": (lambda boards: boards.lamp(5), "expected a lamp board with 6 pixels without a white channel"),
    "a white channel": (lambda boards: boards.lamp(6, white=True), "announced pixels=6 white=1"),
    "the relay board": (lambda boards: boards.stand_in(RELAY_HELLO),
                        "but it announced a relay board with firmware 1.0.0"),
}


@pytest.mark.parametrize("case", list(WRONG_BOARDS))
def test_a_board_for_another_strip_or_of_another_kind_is_refused_and_the_right_one_shows_the_lamp(
        broker, observer, boards, case):
    plug_wrong, why = WRONG_BOARDS[case]
    wrong = plug_wrong(boards)
    boards.socket.plug(wrong)

    async def scenario():
        node = lamp_node(broker, boards.socket.path, 6)
        await node.start()
        try:
            refused = await published(observer, INFO, lamp_board(lambda b: b["state"] == "refused"))
            telemetry = await published(observer, TELEMETRY, readings(lambda r: True))
            since = await send(observer, {"command": "fill", "r": 0, "g": 0, "b": 77})   # taken; the frame waits
            state = await published(observer, STATE, lambda s: s["pixels"][0] == [0, 0, 77], since)
            right = await asyncio.to_thread(boards.lamp, 6)
            boards.socket.plug(right)
            back = await published(observer, INFO, lamp_board(lambda b: b["connected"]), since)
            await shows(right, [(0, 0, 77)] * 6, 255)    # without a new command
            return refused["lights_board"], telemetry["readings"], state, back["lights_board"], node.status()
        finally:
            await node.shutdown()

    refused, readings_, state, back, status = asyncio.run(scenario())
    assert refused["connected"] is False and refused["kind"] is None and refused["pixels"] is None
    assert str(boards.socket.path) in refused["error"] and why in refused["error"], refused["error"]
    assert readings_["lights_board_connected"] == 0
    assert state["on"] is True and status["failed_plugins"] == []
    assert back["kind"] == "lights" and back["pixels"] == 6 and back["white"] is False and back["error"] is None
    if isinstance(wrong, LampEmulator):   # left alone: shown nothing after its own start-up clear
        assert wrong.frames.empty()
    else:
        assert [wrong.heard.get(timeout=1) for _ in range(wrong.heard.qsize())] == ["HELLO"]


def test_an_unplugged_lamp_is_found_again_and_shows_the_current_frame(broker, observer, boards):
    first = boards.lamp(4)
    boards.socket.plug(first)

    async def scenario():
        node = lamp_node(broker, boards.socket.path, 4)
        await node.start()
        try:
            await published(observer, INFO, lamp_board(lambda b: b["connected"]))
            await send(observer, {"command": "pixels", "pixels": [[0, 255, 0, 0], [2, 0, 0, 255]]})
            await send(observer, {"command": "brightness", "value": 0.2})
            await shows(first, [(255, 0, 0), (0, 0, 0), (0, 0, 255), (0, 0, 0)], 51)
            since = len(observer.messages)
            boards.socket.unplug()
            gone = await published(observer, INFO, lamp_board(lambda b: not b["connected"]), since)
            # A command while the board is away: taken, and its frame kept for the board.
            since = await send(observer, {"index": 3, "r": 9, "g": 9, "b": 9})
            await published(observer, STATE, lambda s: s["pixels"][3] == [9, 9, 9], since)
            second = await asyncio.to_thread(boards.lamp, 4)
            boards.socket.plug(second)
            back = await published(observer, INFO, lamp_board(lambda b: b["connected"]), since)
            frames = await shows(second, [(255, 0, 0), (0, 0, 0), (0, 0, 255), (9, 9, 9)], 51)
            telemetry = await published(observer, TELEMETRY, readings(lambda r: r["lights_board_reconnects"] == 1),
                                        since)
            return gone["lights_board"], back["lights_board"], frames, telemetry["readings"], node.status(), second
        finally:
            await node.shutdown()

    gone, back, frames, readings_, status, second = asyncio.run(scenario())
    # Gone; the last board's HELLO is kept for the info.
    assert gone["state"] == "waiting" and str(boards.socket.path) in gone["error"] and gone["version"] == "1.0.0"
    assert back["connected"] is True and back["error"] is None
    assert len(frames) == 1   # the new board's first frame is the lamp as it is, sent whole
    assert readings_["lights_board_connected"] == 1 and readings_["lights_board_restarts"] == 0
    assert status["failed_plugins"] == []
    assert second.frame() == "000000" * 4   # the node stopped: the lamp went dark


def test_a_frame_goes_to_the_board_in_the_fewest_lines_that_fit():
    """The lines the backend sends (checked on the board by the tests above): only what changed, in few lines."""
    dark = Frame(((0, 0, 0),) * 30, 255)
    one = Frame(dark.pixels[:7] + ((0, 255, 0),) + dark.pixels[8:], 255)
    assert frame_lines(None, dark) == ["FILL 0 0 0", "BRIGHT 255", "SHOW"]
    assert frame_lines(dark, one) == ["SETN 7 00ff00", "SHOW"]
    assert frame_lines(one, one) == []
    assert frame_lines(one, Frame(one.pixels, 128)) == ["BRIGHT 128", "SHOW"]
    two_apart = Frame(one.pixels[:20] + ((1, 2, 3),) + one.pixels[21:], 255)
    assert frame_lines(one, two_apart) == ["SETN 20 010203", "SHOW"]
    ends = Frame(((9, 9, 9),) + dark.pixels[1:-1] + ((9, 9, 9),), 255)   # 30 apart: two lines, or FILL and one
    assert len(frame_lines(dark, ends)) == 3
    for count, parts in ((1024, 3), (1024, 4), (19, 4), (25, 3)):
        colours = tuple(tuple((i * 7 + p) % 256 for p in range(parts)) for i in range(count))
        lines = frame_lines(None, Frame(colours, 10))
        assert all(len(line) <= LONGEST_LINE for line in lines)
        assert lines[-2:] == ["BRIGHT 10", "SHOW"]
        assert all(len(line) + 2 * parts > LONGEST_LINE for line in lines[:-3])   # each full but the last
        shown = [None] * count
        for line in lines:
            if line.startswith("SETN"):
                _, start, data = line.split()
                for k in range(len(data) // (2 * parts)):
                    chunk = data[k * 2 * parts:(k + 1) * 2 * parts]
                    shown[int(start) + k] = tuple(int(chunk[j:j + 2], 16) for j in range(0, len(chunk), 2))
        assert tuple(shown) == colours


def test_a_board_that_restarted_is_sent_the_whole_frame_again(broker, observer, boards):
    """The stand-in board restarts (its watchdog) while connected: it forgets its pixels and says HELLO, unasked."""
    board = boards.stand_in("HELLO lights 1.0.0 stand-in pixels=4 white=0 boot=power")
    boards.socket.plug(board)
    picture = ((0, 0, 0), (200, 0, 0), (0, 0, 0), (0, 7, 0))

    def shows(wanted):
        while (frame := board.shown.get(timeout=15)) != wanted:
            pass
        return frame

    async def scenario():
        node = lamp_node(broker, boards.socket.path, 4)
        await node.start()
        try:
            await published(observer, INFO, lamp_board(lambda b: b["connected"]))
            await send(observer, {"command": "pixels", "pixels": [[1, 200, 0, 0], [3, 0, 7, 0]]})
            await send(observer, {"command": "brightness", "value": 0.6})
            await asyncio.to_thread(shows, (picture, 153))
            since = len(observer.messages)
            await asyncio.to_thread(board.restart, "watchdog")
            cleared = await asyncio.to_thread(board.shown.get, True, 15)
            again = await asyncio.to_thread(shows, (picture, 153))   # without a new command
            info = await published(observer, INFO, lamp_board(lambda b: b["boot"] == "watchdog"), since)
            telemetry = await published(observer, TELEMETRY, readings(lambda r: r["lights_board_restarts"] == 1),
                                        since)
            return cleared, again, info["lights_board"], telemetry["readings"]
        finally:
            await node.shutdown()

    cleared, again, info, readings_ = asyncio.run(scenario())
    assert cleared == (((0, 0, 0),) * 4, 255)
    assert again == (picture, 153)
    assert info["connected"] is True and info["id"] == "stand-in"
    assert readings_["lights_board_reconnects"] == 0 and readings_["lights_board_connected"] == 1


def test_the_boards_options_are_checked_with_their_place(broker, tmp_path):
    """By `pidaemon config check` already (before: only when the plugin started)."""
    with pytest.raises(ConfigError) as error:
        make_daemon(NODE, broker.url, role="lights", plugins={"lights": {
            "backend": "arduino", "pixels": 4, "options": {"port": str(tmp_path / "none"), "timout": 2, "baud": 12}}})
    assert 'plugins.lights.options.timout: unknown key; did you mean "timeout"?' in str(error.value)
    assert "plugins.lights.options.baud" in str(error.value)
