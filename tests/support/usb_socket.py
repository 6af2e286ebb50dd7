"""A board's stable device name in a test, as udev makes /dev/picluster-relay or /dev/picluster-lights.

The name is a symbolic link in the test's directory to the pty of whichever
board is plugged in.  Unplugging removes the link and stops the board (its
pty closes, so the daemon's reads fail, as when a USB port vanishes);
plugging makes the link to another board's pty.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol


class Board(Protocol):
    port: str

    def close(self) -> None: ...


class UsbSocket:
    def __init__(self, path: Path):
        self.path = path
        self.board: Board | None = None

    def plug(self, board: Board) -> None:
        self.board = board
        new = self.path.with_name(self.path.name + ".new")
        new.symlink_to(board.port)
        os.replace(new, self.path)

    def unplug(self) -> None:
        self.path.unlink(missing_ok=True)
        if self.board is not None:
            self.board.close()
            self.board = None
