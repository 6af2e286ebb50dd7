"""The `arduino` relay backend: the relay board of firmware/relay_controller, on USB serial.

The board times each press itself (`PRESS <relay> <ms>`), enforces its own
max press and min interval (counted from its own start too: the boot
lockout), and releases a held relay when the host has sent nothing for
1.5 s.  The plugin's rules (max_press, min_interval, the watchdog) stay in
front: a request the daemon refuses never reaches the board, and one the
board refuses is refused with the board's reason (HardwareRefused).

- A press is `PRESS <relay> <ms>`; while any press is held the board's
  thread sends `PING` (`SerialBoard.keepalive`), so a daemon that dies
  mid-press lets go within 1.5 s.
- The release at the press's end waits for the board to release the relay
  (it asks `STATUS`): the board's clock times the press.  A release asked
  before the press's end (the node stopping) is `OFF <relay>` at once.
- A switch is `ON` / `OFF`.
- On every connection, and every restart the board announces, each relay is
  set `OFF` (the board starts idle anyway, unless it did not restart) and the
  plugin is told (`on_idle_forced`), so that its state shows every relay idle.

The connection (opening by the udev name, HELLO, kind and version check,
keepalives, reconnection) is `pidaemon.serial_board`, shared with the lamp.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pidaemon.backends import BackendError, backend_options
from pidaemon.schema import String, settings
from pidaemon.serial_board import (BoardRefused, BoardUnavailable, Hello, PyserialMissing, SerialBoard,
                                   SerialBoardSettings)

from .backends import HardwareRefused, RelayBackend

BOARD_KIND = "relay"
FIRMWARE_MAJORS = (1,)
EARLY = 0.02   # seconds: a release asked this long before a press's end is a release before its time


@settings
class ArduinoSettings(SerialBoardSettings):
    """The `options:` of `backend: arduino`: the relay board's port and timing."""

    port: str = String(default="/dev/picluster-relay",
                       doc="the board's serial port: the stable name udev/91-picluster-arduino.rules gives it")


class ArduinoRelays(RelayBackend):
    """Relays on the relay Arduino; the plugin's `options` hold its port and timing (ArduinoSettings)."""

    config_schema = ArduinoSettings
    times_presses = True

    def setup(self) -> None:
        self.held: dict[str, tuple[int, float]] = {}   # relay: (ms asked, time.monotonic() of the board's OK)
        self._held_lock = threading.Lock()
        link = backend_options(ArduinoRelays, self.settings.options, ("plugins", "relay", "options"))
        self.board = SerialBoard.from_settings(link.port, link, BOARD_KIND, FIRMWARE_MAJORS,
                                               on_connect=self._connected, on_change=self._status_changed,
                                               log=self.log)
        try:
            self.board.start()   # connects in the background: a board plugged in later is found then
        except PyserialMissing as exc:
            raise BackendError(f"the arduino backend needs pyserial: {exc}") from None

    # ------------------------------------------------------------ RelayBackend

    def press(self, name: str, duration: float) -> None:
        ms = max(1, round(duration * 1000))
        self._ask(f"PRESS {name} {ms}", name)
        with self._held_lock:
            self.held[name] = (ms, time.monotonic())
            self.board.keepalive(True)

    def drive(self, name: str, active: bool) -> None:
        if active:                       # a switch: buttons are pressed with press()
            self._ask(f"ON {name}", name)
        elif (held := self.held.get(name)) is not None:
            self._end_press(name, *held)
        elif self.relays[name].mode == "switch":
            self._ask(f"OFF {name}", name)   # the board may refuse it within the switch's min interval
        else:
            self._off(name)

    def close(self) -> None:
        board = getattr(self, "board", None)
        if board is None:
            return
        if board.connected:
            for name in self.relays:
                self._off(name)
        board.stop()

    def info(self) -> dict[str, Any]:
        board = getattr(self, "board", None)   # None until setup() (the relays held by `pidaemon relay press`)
        return {"relay_board": board.status()} if board is not None else {}

    def telemetry(self) -> dict[str, Any]:
        board = getattr(self, "board", None)
        if board is None:
            return {}
        return {"relay_board_connected": int(board.connected), "relay_board_reconnects": board.reconnects,
                "relay_board_restarts": board.restarts}

    # ------------------------------------------------------------ presses

    def _end_press(self, name: str, ms: int, started: float) -> None:
        try:
            if time.monotonic() < started + ms / 1000 - EARLY:
                self._off(name)   # before its time: the node is stopping
            else:
                self._wait_for_board(name, ms)
        finally:
            with self._held_lock:
                if self.held.get(name) == (ms, started):
                    del self.held[name]
                if not self.held:
                    self.board.keepalive(False)

    def _wait_for_board(self, name: str, ms: int) -> None:
        """Until the board has released `name` itself; OFF if it still holds it a press's length later."""
        deadline = time.monotonic() + ms / 1000 + self.board.timeout
        while True:
            try:
                state, left = self._status().get(name, ("idle", 0))
            except (BoardUnavailable, BoardRefused) as exc:
                self.log.warning("relay (arduino): cannot see %s released: %s (the board releases a held relay by "
                                 "itself after 1.5 s without a line from the host)", name, exc)
                return
            if state != "on":
                return
            if left > ms or time.monotonic() >= deadline:
                self.log.warning("relay (arduino): the board still held %s after its %d ms press: released with OFF",
                                 name, ms)
                self._off(name)
                return
            time.sleep(min(left / 1000 + 0.002, 0.2))

    def _status(self) -> dict[str, tuple[str, int]]:
        """Each relay's state on the board: `STATUS silent=0 reset=on,740 power=idle,8200`."""
        relays = {}
        for word in self.board.ask("STATUS").split()[1:]:
            key, _, value = word.partition("=")
            state, _, left = value.partition(",")
            if key != "silent" and left.isdigit():
                relays[key] = (state, int(left))
        return relays

    def _off(self, name: str) -> None:
        """Release `name` (always allowed for a button); a failure is logged, never raised."""
        try:
            self.board.ask(f"OFF {name}")
        except BoardUnavailable as exc:
            self.log.warning("relay (arduino): cannot release %s: %s (the board releases a held button by itself "
                             "after 1.5 s without a line from the host)", name, exc)
        except BoardRefused as exc:
            self.log.error("relay (arduino): the board refused to release %s: %s", name, exc.line)

    def _ask(self, command: str, name: str) -> str:
        try:
            return self.board.ask(command)
        except BoardRefused as refusal:
            raise HardwareRefused(self._reason(name, refusal)) from None
        except BoardUnavailable as exc:
            raise HardwareRefused(f"the relay board cannot carry it out: {exc}") from None

    def _reason(self, name: str, refusal: BoardRefused) -> str:
        details, line = refusal.details, refusal.line
        if refusal.reason == "too-soon" and len(details) > 1 and details[1].isdigit():
            return (f"the relay board refuses {name} for another {int(details[1]) / 1000:.1f} s: its own min "
                    f"interval, which also runs from the board's start (boot lockout) ({line})")
        if refusal.reason == "busy":
            return f"the relay board is already pressing {name} ({line})"
        if refusal.reason == "out-of-range" and len(details) > 1:
            return (f"the relay board allows {name} {details[1]} ms ({line}): lower its max_press in the "
                    "configuration to match")
        if refusal.reason == "unknown-relay":
            return f"the relay board has no relay {name} (it has {', '.join(self._board_relays()) or 'none'}) ({line})"
        if refusal.reason == "wrong-mode" and len(details) > 1:
            return (f"the relay board has {name} as a {details[1]}, the configuration as a "
                    f"{self.relays[name].mode} ({line})")
        return f"the relay board refused {refusal.command!r}: {line}"

    # ------------------------------------------------------------ the board's thread

    def _board_relays(self) -> list[str]:
        hello = self.board.hello
        return [name for name in hello.fields.get("relays", "").split(",") if name] if hello else []

    def _connected(self, hello: Hello, restarted: bool) -> None:
        """Every relay idle on a board that (re)connected or restarted, and the plugin told so."""
        on_board = self._board_relays()
        missing = [name for name in self.relays if name not in on_board]
        if missing:
            self.log.error("relay (arduino): the board at %s has the relays %s, not %s of the configuration: their "
                           "requests are refused", self.board.path, ", ".join(on_board) or "none", ", ".join(missing))
        for name in self.relays:
            if name in on_board:
                self._off(name)
        with self._held_lock:
            self.held.clear()
            self.board.keepalive(False)
        self.on_idle_forced(time.monotonic())

    def _status_changed(self) -> None:
        self.on_status_changed()
