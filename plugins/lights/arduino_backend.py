"""The `arduino` lamp backend: the lamp board of firmware/light_controller, on USB serial.

The board keeps every pixel's colour and a brightness, and puts them on the
strip on `SHOW` (docs/protocol.md, the boards' serial protocol).  The
backend sends each frame as the fewest command lines the board's 160
characters allow: only the pixels that differ from what the board holds
(`SETN <start> <hex>` runs), or `FILL` with the frame's most common colour
and `SETN` for the rest, whichever takes fewer lines; then `BRIGHT` when the
brightness changed (the board dims: its kept colours are not scaled, so
dimming loses nothing) and `SHOW`.

One thread of the backend's own sends frames; `show()` only hands it the
newest one and never waits on the board.  When the board is gone the latest
frame is kept; on every connection, and every restart the board announces
(its strip is cleared then), the whole frame goes again.

The connection (opening the udev name, HELLO, kind and version check,
reconnection) is `pidaemon.serial_board`, shared with the relay board.  On
top of it the board's `pixels=` and `white=` must match the plugin's
`pixels` and `pixel_order`: a lamp built for another strip is refused, and
left alone until the device at the port changes.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from pidaemon.schema import String, settings
from pidaemon.serial_board import (BoardRefused, BoardUnavailable, Hello, PyserialMissing, SerialBoard,
                                   SerialBoardSettings, WrongBoard)

from .backend import BackendError, Colour, LightsBackend, StripLayout

BOARD_KIND = "lights"
FIRMWARE_MAJORS = (1,)
LONGEST_LINE = 160   # characters of a command line the lamp board takes (without the newline)

log = logging.getLogger("pidaemon.lights.arduino")


@settings
class ArduinoLampSettings(SerialBoardSettings):
    """The `options:` of `backend: arduino`: the lamp board's port and timing (`keepalive` is not used)."""

    port: str = String(default="/dev/picluster-lights",
                       doc="the board's serial port: the stable name udev/91-picluster-arduino.rules gives it")


@dataclass(frozen=True)
class Frame:
    """What the board is to show: one colour per pixel, and the board's brightness (0-255)."""

    pixels: tuple[Colour, ...]
    level: int


def brightness_level(brightness: float) -> int:
    """The plugin's 0.0-1.0 as the board's `BRIGHT` 0-255."""
    return max(0, min(255, round(brightness * 255)))


def frame_lines(shown: Frame | None, wanted: Frame, longest: int = LONGEST_LINE) -> list[str]:
    """The command lines that take a board holding `shown` (None: unknown) to `wanted`, ending with SHOW.

    An empty list when the board already shows `wanted`.
    """
    lines = pixel_lines(None if shown is None else shown.pixels, wanted.pixels, longest)
    if shown is None or shown.level != wanted.level:
        lines.append(f"BRIGHT {wanted.level}")
    return [*lines, "SHOW"] if lines else []


def pixel_lines(held: Sequence[Colour] | None, wanted: Sequence[Colour], longest: int) -> list[str]:
    """The fewest lines (then the fewest characters) that make the board's pixels `wanted`."""
    everything = range(len(wanted))
    candidates = [setn_lines(wanted, [i for i in everything if held is None or held[i] != wanted[i]], longest)]
    if held is None or candidates[0]:
        common = Counter(wanted).most_common(1)[0][0]
        fill = "FILL " + " ".join(map(str, common))
        candidates.append([fill, *setn_lines(wanted, [i for i in everything if wanted[i] != common], longest)])
    return min(candidates, key=lambda lines: (len(lines), sum(map(len, lines))))


def setn_lines(wanted: Sequence[Colour], indexes: Sequence[int], longest: int) -> list[str]:
    """`SETN` lines covering the pixels at `indexes` (ascending), as few as `longest` allows.

    Each line starts at the first pixel not yet covered and runs to the last
    one that still fits, taking the unchanged pixels between along: fewer
    lines are fewer round trips to the board.
    """
    lines = []
    k = 0
    while k < len(indexes):
        start = indexes[k]
        prefix = f"SETN {start} "
        room = (longest - len(prefix)) // (2 * len(wanted[start]))   # pixels this line holds
        last = start
        while k < len(indexes) and indexes[k] < start + room:
            last = indexes[k]
            k += 1
        lines.append(prefix + "".join(f"{part:02x}" for colour in wanted[start:last + 1] for part in colour))
    return lines


class ArduinoStrip(LightsBackend):
    """The lamp on the lamp Arduino; `options` hold its port and timing (ArduinoLampSettings).

    `board` is the SerialBoard; `connections` counts the boards accepted (their
    strip matched the layout) and `frames_shown` the frames the board showed.
    """

    name = "arduino"
    config_schema = ArduinoLampSettings

    def __init__(self, layout: StripLayout, options: ArduinoLampSettings):
        super().__init__(layout, options)
        self.connections = 0
        self.frames_shown = 0
        self._lock = threading.Lock()     # the frames and the board's news, between the three threads
        self._wake = threading.Event()    # a new frame, a (re)connected board, or close()
        self._wanted: Frame | None = None
        self._shown: Frame | None = None  # what the board holds and shows (None: not known)
        self._ready = False               # a board that matches the layout is connected
        self._epoch = 0                   # counts connections and restarts: lines sent before one may be lost
        self._closing = False
        self._accepted: Hello | None = None
        self._waiting_logged = False
        self.board = SerialBoard.from_settings(options.port, options, BOARD_KIND, FIRMWARE_MAJORS,
                                               max_line=LONGEST_LINE, on_connect=self._connected,
                                               on_change=self._status_changed, log=log)
        try:
            self.board.start()   # connects in the background: a board plugged in later is found then
        except PyserialMissing as exc:
            raise BackendError(f"the arduino backend needs pyserial: {exc}") from None
        self._sender = threading.Thread(target=self._send_frames, name=f"lights-arduino:{options.port}", daemon=True)
        self._sender.start()

    # ------------------------------------------------------------ LightsBackend

    def show(self, pixels: Sequence[Colour], brightness: float) -> None:
        """Hand the frame to the sending thread (the newest frame wins); never waits on the board."""
        with self._lock:
            self._wanted = Frame(tuple(tuple(colour) for colour in pixels), brightness_level(brightness))
        self._wake.set()

    def close(self) -> None:
        """The strip off (if the board is there) and the port released."""
        with self._lock:
            self._closing = True
        self._wake.set()
        self._sender.join(self.board.timeout + 1)
        if self.board.connected:
            for line in ("CLEAR", "SHOW"):
                try:
                    self.board.ask(line)
                except (BoardUnavailable, BoardRefused) as exc:
                    log.warning("lights (arduino): cannot turn the lamp off: %s", exc)
                    break
        self.board.stop()
        self._sender.join(self.board.timeout + 1)

    def info(self) -> dict[str, Any]:
        """`lights_board`: the port, the connection, and the last accepted board's HELLO."""
        status = self.board.status()
        hello = self._accepted
        status.update({"kind": None, "version": None, "id": None, "boot": None, "pixels": None, "white": None}
                      if hello is None else
                      {"kind": hello.kind, "version": hello.version, "id": hello.id, "boot": hello.boot,
                       "pixels": int(hello.fields["pixels"]), "white": hello.fields["white"] == "1"})
        return {"lights_board": status}

    def telemetry(self) -> dict[str, Any]:
        return {"lights_board_connected": int(self._ready and self.board.connected),
                "lights_board_reconnects": max(0, self.connections - 1),
                "lights_board_restarts": self.board.restarts}

    # ------------------------------------------------------------ the sending thread

    def _send_frames(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                if self._closing:
                    return
                wanted, shown, epoch, ready = self._wanted, self._shown, self._epoch, self._ready
            if wanted is None or not ready or wanted == shown:
                continue
            try:
                for line in frame_lines(shown, wanted):
                    self.board.ask(line)
            except BoardUnavailable as exc:   # gone, silent or restarted: the frame goes again once it is back
                self._forget_shown()
                if not self._waiting_logged:
                    log.info("lights (arduino): the lamp's frame waits for the board: %s", exc)
                    self._waiting_logged = True
                continue
            except BoardRefused as exc:       # a bug of ours or the firmware's: said, not retried until a new frame
                self._forget_shown()
                log.error("lights (arduino): %s; the frame is not shown", exc)
                continue
            self._waiting_logged = False
            with self._lock:
                self.frames_shown += 1
                if self._epoch == epoch:
                    self._shown = wanted
                else:   # the board (re)connected or restarted meanwhile: what it holds is not known
                    self._shown = None
                    self._wake.set()

    def _forget_shown(self) -> None:
        with self._lock:
            self._shown = None

    # ------------------------------------------------------------ the board's thread

    def _connected(self, hello: Hello, restarted: bool) -> None:
        """A board (re)connected or restarted: check its strip, and have the whole frame sent again."""
        self._check_strip(hello)
        with self._lock:
            self._accepted = hello
            self._shown = None
            self._epoch += 1
            self._ready = True
            if not restarted:
                self.connections += 1
        self._wake.set()

    def _check_strip(self, hello: Hello) -> None:
        """WrongBoard (left alone until the device changes) if the board's strip is not the configured one."""
        pixels, white = hello.fields.get("pixels", ""), hello.fields.get("white")
        expected = f"{self.layout.count} pixels {'with' if self.layout.has_white else 'without'} a white channel"
        if pixels.isdigit() and int(pixels) == self.layout.count and white == ("1" if self.layout.has_white else "0"):
            return
        announced = (f"pixels={pixels or '(none)'} white={white if white is not None else '(none)'}")
        raise WrongBoard(f"{self.board.path}: expected a lamp board with {expected} (pixels: {self.layout.count}, "
                         f"pixel_order: {self.layout.pixel_order}), but the board (id {hello.id}, firmware "
                         f"{hello.version}) announced {announced}: set `pixels` and `pixel_order` to the strip's, or "
                         f"flash the board for this strip; left alone until the device at {self.board.path} changes")

    def _status_changed(self) -> None:
        if not self.board.connected:
            with self._lock:
                self._ready = False
                self._shown = None
        self.on_status_changed()
