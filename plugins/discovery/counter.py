"""The server's announcement counter: it grows with every datagram signed, and never goes back.

Not across restarts of the daemon, nor when the server's clock is set back:
the counter starts above both the highest value reserved in the state file
and the current time in milliseconds.  Values are reserved `block` at a time
(one small write every `block` datagrams, about half an hour at one datagram
every 2 s), so a restart skips at most `block` values.  If the state file
cannot be written, the time floor alone still makes the counter grow across
restarts as long as the clock does (logged once).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

STATE_FILE = "announce-counter"


class AnnouncementCounter:
    def __init__(self, path: Path | None, *, clock: Callable[[], float] = time.time, block: int = 1000,
                 log: logging.Logger | logging.LoggerAdapter | None = None):
        self.path = Path(path) if path is not None else None
        self.block = block
        self.log = log or logging.getLogger("pidaemon.announce")
        self._write_failed = False
        self.value = max(self._read(), int(clock() * 1000))
        self.reserved = self.value  # nothing above `value` is reserved yet

    def next(self) -> int:
        self.value += 1
        if self.value > self.reserved:
            self.reserved = self.value + self.block
            self._write(self.reserved)
        return self.value

    def _read(self) -> int:
        if self.path is None:
            return 0
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as exc:
            self.log.warning("announce: cannot read the counter file %s: %s (starting from the clock)",
                             self.path, exc)
            return 0
        if not text.isascii() or not text.isdigit():
            self.log.warning("announce: the counter file %s holds %r, not a number (starting from the clock)",
                             self.path, text[:40])
            return 0
        return int(text)

    def _write(self, value: int) -> None:
        if self.path is None:
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(temporary, "w", encoding="ascii") as handle:
                handle.write(f"{value}\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            if not self._write_failed:
                self._write_failed = True
                self.log.warning("announce: cannot save the counter in %s: %s (it still grows with the clock)",
                                 self.path, exc.strerror or exc)
