"""pidaemon.serial_board against a scripted board on a pseudo-terminal (real pyserial, a real pty).

The board's end of the line is the test: it reads each command line and
answers as the boards' protocol says (docs/protocol.md).  The firmware itself
runs under simavr in tests/hardware/test_relay_arduino.py; here the board
does on cue what the firmware cannot be made to do there: restart in the
middle of a command, stay silent, send lines nobody asked for, announce
another version.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import time
import tty

import pytest

pytest.importorskip("serial", reason="pyserial is not installed (the `serial` extra)")

from pidaemon.serial_board import BoardRefused, BoardRestarted, BoardUnavailable, SerialBoard  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

HELLO = "HELLO relay 1.2.0 relay-a relays=reset boot=power"


class ScriptedBoard:
    """The board's side of a pty: the test reads the host's lines and writes the answers."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)      # no echo before the client opens it (pyserial then sets raw mode itself)
        self.path = os.ttyname(self.slave)   # kept open: the master's reads never fail while the client reopens
        self.pending = b""

    def line(self, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise TimeoutError(f"no line from the host (so far {self.pending!r})")
            self.pending += os.read(self.master, 256)
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode()

    def expect(self, command: str) -> None:
        assert self.line() == command

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def quiet_for(self, seconds: float) -> bool:
        """True if the host sent nothing for `seconds`."""
        return not self.pending and not select.select([self.master], [], [], seconds)[0]

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def scripted():
    board = ScriptedBoard()
    yield board
    board.close()


@pytest.fixture
def client(scripted):
    """A relay-board client on the scripted board, connected (it asked for the HELLO)."""
    connects = []
    board = SerialBoard(scripted.path, "relay", (1,), hello_wait=0.1, timeout=1.0, keepalive=0.1,
                        reconnect_min=0.05, reconnect_max=0.2,
                        on_connect=lambda hello, restarted: connects.append((hello.boot, restarted)))
    board.connects = connects
    board.start()
    scripted.expect("HELLO")
    scripted.send("OK " + HELLO)
    deadline = time.monotonic() + 5
    while not board.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    yield board
    board.stop()


def answer(scripted, command: str, reply: str) -> threading.Thread:
    def board_side():
        scripted.expect(command)
        scripted.send(reply)
    thread = threading.Thread(target=board_side)
    thread.start()
    return thread


def test_the_board_is_checked_and_commands_get_their_answers(client, scripted):
    assert client.status() == {"path": scripted.path, "connected": True, "state": "connected", "kind": "relay",
                               "version": "1.2.0", "id": "relay-a", "boot": "power", "error": None}
    assert client.connects == [("power", False)]
    answer(scripted, "PRESS reset 300", "OK PRESS reset 300")
    assert client.ask("PRESS reset 300") == "PRESS reset 300"
    answer(scripted, "PRESS reset 300", "ERR too-soon reset 9640")
    with pytest.raises(BoardRefused) as refused:
        client.ask("PRESS reset 300")
    assert (refused.value.reason, refused.value.details) == ("too-soon", ("reset", "9640"))

    async def from_the_loop():
        answer(scripted, "PING", "OK PONG")
        return await client.ask_async("PING")

    assert asyncio.run(from_the_loop()) == "PONG"
    with pytest.raises(ValueError, match="printable ASCII"):
        client.ask("PRESS reset\nON power")


def test_lines_that_answer_nothing_asked_are_skipped(client, scripted):
    scripted.send("OK HELLO " + HELLO[6:])   # the late answer to a HELLO, after the board announced itself
    scripted.send("ERR bad-byte")           # and noise between two commands: one is not mistaken for the other
    time.sleep(0.2)

    def board_side():
        scripted.expect("STATUS")
        scripted.send("garbage from a reset")
        scripted.send("OK STATUS silent=0 reset=idle,0")
    thread = threading.Thread(target=board_side)
    thread.start()
    assert client.ask("STATUS") == "STATUS silent=0 reset=idle,0"
    thread.join()


def test_a_restart_mid_command_fails_that_command_and_sets_the_board_up_again(client, scripted):
    answer(scripted, "OFF reset", "HELLO relay 1.2.0 relay-a relays=reset boot=watchdog")
    with pytest.raises(BoardRestarted, match="boot=watchdog"):
        client.ask("OFF reset")
    deadline = time.monotonic() + 5
    while len(client.connects) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.connects == [("power", False), ("watchdog", True)]
    assert client.restarts == 1 and client.connections == 1 and client.connected
    assert client.status()["boot"] == "watchdog"
    answer(scripted, "PING", "OK PONG")
    assert client.ask("PING") == "PONG"   # the same connection goes on


def test_a_restart_announced_right_after_an_answer_is_noticed_at_once(client, scripted):
    """The answer and the restart's HELLO came in one read: before, the HELLO waited for the next bytes
    from the board, so the restart went unnoticed (and the next command failed)."""
    answer(scripted, "PING", "OK PONG\nHELLO relay 1.2.0 relay-a relays=reset boot=watchdog")
    assert client.ask("PING") == "PONG"
    deadline = time.monotonic() + 5
    while len(client.connects) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.connects == [("power", False), ("watchdog", True)]
    answer(scripted, "PING", "OK PONG")
    assert client.ask("PING") == "PONG"


def test_a_board_that_does_not_answer_is_taken_as_gone_and_opened_again(client, scripted):
    with pytest.raises(BoardUnavailable, match="no answer to 'STATUS' within 1 s"):
        client.ask("STATUS")
    scripted.expect("STATUS")  # heard, never answered
    scripted.expect("HELLO")   # opened again: it asks for the HELLO once more
    scripted.send("OK " + HELLO)

    async def reconnected():
        await wait_until(lambda: client.connected, 5, what="reconnected")

    asyncio.run(reconnected())
    assert client.connections == 2 and client.reconnects == 1


def test_keepalives_go_only_while_asked_for(client, scripted):
    assert scripted.quiet_for(0.4)
    client.keepalive(True)
    for _ in range(3):
        scripted.expect("PING")
        scripted.send("OK PONG")
    client.keepalive(False)
    while not scripted.quiet_for(0.3):   # a PING already on its way is answered
        scripted.expect("PING")
        scripted.send("OK PONG")
    assert scripted.quiet_for(0.4)


def test_an_unknown_major_version_is_refused_naming_the_path_and_both_versions(scripted):
    board = SerialBoard(scripted.path, "relay", (1,), hello_wait=1.0, reconnect_min=0.05, reconnect_max=0.2)
    board.start()
    try:
        scripted.send("junk")   # before the port is open: gone with pyserial's flush, or skipped
        time.sleep(0.2)
        scripted.send("HELLO relay 2.0.0 relay-a relays=reset boot=power")

        async def refused():
            await wait_until(lambda: board.state == "refused", 5, what="refused")

        asyncio.run(refused())
        error = board.status()["error"]
        assert scripted.path in error and "relay board with firmware 1.x" in error and "firmware 2.0.0" in error
        with pytest.raises(BoardUnavailable, match="firmware 2.0.0"):
            board.ask("PING")
        assert board.opened == 1 and board.status()["kind"] is None
    finally:
        board.stop()
