"""The relays and their safety rules, for the daemon's plugin and `pidaemon relay press` alike.

Whoever drives the relays goes through a `RelayBoard`, which:

- holds a lock file in the node's state directory (`relays.lock`, an flock
  the kernel drops when the process dies, however it dies) from `open()` to
  `close()`, so that the daemon and the command line never drive the pins
  at the same time;
- sets every relay idle in `open()`, before anything else;
- refuses a press longer than the relay's `max_press`, a press or switch
  change within `min_interval` of the last one (kept in `relays.json` in
  the state directory, so that a restart or the command line does not
  forget it), and a press of a relay already pressed;
- releases a press that outlives its duration from a watchdog thread, even
  when the event loop that should have released it is blocked;
- leaves every relay idle in `close()`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends import RELAY_BACKENDS, HardwareRefused, RelayBackend
from .settings import RelayPluginSettings, RelaySettings

LOCK_FILE = "relays.lock"
HISTORY_FILE = "relays.json"
WATCHDOG_GRACE = 0.25   # seconds past a press's end before the watchdog releases it


class Refused(Exception):
    """A request the relays will not carry out; the message says why."""


class RelaysBusy(Exception):
    """Another process (a running daemon, or `pidaemon relay press`) holds the relays."""


@dataclass
class Press:
    """One press under way: who asked, when (wall clock, for people), and for how long."""

    relay: str
    by: str
    at: float
    duration: float
    started: float                 # time.monotonic() when the relay was energised
    released: float | None = None  # time.monotonic() when it was released


class RelayBoard:
    def __init__(self, settings: RelayPluginSettings, state_dir: Path, log: logging.Logger,
                 backend: RelayBackend | None = None):
        self.relays: dict[str, RelaySettings] = settings.relay_settings()
        self.state_dir = Path(state_dir)
        self.log = log
        self.backend = backend or RELAY_BACKENDS.load(settings.backend)(self.relays, settings, log)
        self.active = {name: False for name in self.relays}
        self.history: dict[str, dict[str, Any]] = {}
        self.presses: dict[str, Press] = {}
        self.watchdog_releases = 0
        self._switched: dict[str, float] = {}   # switch: time.monotonic() of its last change
        self._lock = threading.Lock()   # one backend call at a time: event loop and watchdog
        self._wake = threading.Condition(self._lock)
        self._lock_file: int | None = None
        self._watchdog: threading.Thread | None = None
        self._open = False

    # ------------------------------------------------------------ life

    def open(self, wait: float = 0.0) -> None:
        """Take the relays (waiting up to `wait` s for another holder), set every one idle, start the watchdog.

        Raises RelaysBusy when another process holds them, BackendError when the hardware is unusable.
        """
        self._take_lock(wait)
        try:
            with self._lock:
                self.backend.setup()
        except BaseException:
            self._close_backend()
            self._drop_lock()
            raise
        self.history = self._read_history()
        self._open = True
        self._watchdog = threading.Thread(target=self._watch, name="relay-watchdog", daemon=True)
        self._watchdog.start()

    @property
    def is_open(self) -> bool:
        return self._open

    def close(self) -> None:
        """Every relay idle, the hardware and the lock released.  Safe to call twice."""
        with self._lock:
            was_open, self._open = self._open, False
            self._wake.notify_all()
        if self._watchdog is not None:
            self._watchdog.join(2)
            self._watchdog = None
        if was_open:
            for press in list(self.presses.values()):
                self.end_press(press, closing=True)
            self._close_backend()
            self._drop_lock()

    def _close_backend(self) -> None:
        try:
            with self._lock:
                self.backend.close()
                self.active = {name: False for name in self.relays}
        except Exception as exc:  # the backend's own failure, reported; the lock is still dropped
            self.log.error("relay: the %s backend failed to close: %s: %s", type(self.backend).__name__,
                           type(exc).__name__, exc)

    def _take_lock(self, wait: float) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / LOCK_FILE
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        _owned_like_the_directory(path)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(descriptor)
                    raise RelaysBusy(f"another process holds the relays ({path}): a running pidaemon with the "
                                     f"relay plugin, or a `pidaemon relay press`") from None
                time.sleep(0.05)
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._lock_file = descriptor

    def _drop_lock(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)   # closing the descriptor drops the flock
            self._lock_file = None

    # ------------------------------------------------------------ presses

    def begin_press(self, name: str, duration: float | None, by: str) -> Press:
        """Energise a button relay for `duration` s (None: its default press); raise Refused saying why.

        The caller waits `press.duration` and calls `end_press`; the watchdog
        releases the relay if that does not happen in time.
        """
        relay = self._relay(name, "button", "press it with relays/set (on, off)")
        if duration is None:
            duration = relay.default_press
        if not math.isfinite(duration) or duration <= 0:
            raise Refused(f"duration must be a number of seconds above 0, got {duration}")
        if duration > relay.max_press:
            raise Refused(f"{duration:g} s is longer than {name}'s max_press ({relay.max_press:g} s)")
        with self._lock:
            self._check_ready(name, relay)
            try:
                if self.backend.times_presses:
                    self.backend.press(name, float(duration))
                else:
                    self.backend.drive(name, True)
            except HardwareRefused as refusal:
                raise Refused(str(refusal)) from None
            press = Press(name, by, round(time.time(), 3), float(duration), time.monotonic())
            self.active[name] = True
            self.presses[name] = press
            self._wake.notify_all()
        self.log.info("relay: %s pressed for %g s by %s", name, duration, by)
        self._remember(name, {"by": by, "at": press.at, "duration": press.duration})
        return press

    def end_press(self, press: Press, closing: bool = False) -> dict[str, Any]:
        """Release the press's relay (if the watchdog has not) and return the press as published."""
        with self._lock:
            if self.presses.get(press.relay) is press:
                self._release(press)
        record = {"relay": press.relay, "by": press.by, "at": press.at,
                  "duration": round(press.released - press.started, 3)}
        if closing:
            self.log.warning("relay: %s released after %.3f s: the relays are closing", press.relay,
                             record["duration"])
        self._remember(press.relay, {"by": press.by, "at": press.at, "duration": record["duration"]})
        return record

    def _release(self, press: Press) -> None:
        """With the lock held."""
        self.backend.drive(press.relay, False)
        press.released = time.monotonic()
        self.active[press.relay] = False
        del self.presses[press.relay]

    def set_switch(self, name: str, on: bool, by: str) -> bool:
        """Turn a switch relay on or off; False when it already was.  Raise Refused saying why."""
        relay = self._relay(name, "switch", "press it with relays/press")
        with self._lock:
            if self.active[name] == on:
                return False
            self._check_ready(name, relay)
            try:
                self.backend.drive(name, on)
            except HardwareRefused as refusal:
                raise Refused(str(refusal)) from None
            self.active[name] = on
            self._switched[name] = time.monotonic()
        self.log.info("relay: %s switched %s by %s", name, "on" if on else "off", by)
        self._remember(name, {"by": by, "at": round(time.time(), 3), "state": "on" if on else "off"})
        return True

    def force_idle(self, at: float) -> bool:
        """The hardware set every relay idle by itself at `at` (time.monotonic()): a board that reconnected or
        restarted.  Presses and switch changes from before then are over; True if anything was active."""
        changed = False
        with self._lock:
            for press in [p for p in self.presses.values() if p.started <= at]:
                press.released = at
                del self.presses[press.relay]
                self.active[press.relay] = False
                changed = True
                self.log.warning("relay: %s released after %.3f s: the relay board reconnected or restarted",
                                 press.relay, press.released - press.started)
            for name, relay in self.relays.items():
                if relay.mode == "switch" and self.active[name] and self._switched.get(name, 0.0) <= at:
                    self.active[name] = False
                    changed = True
                    self.log.warning("relay: %s is off: the relay board reconnected or restarted", name)
            self._wake.notify_all()
        return changed

    def _relay(self, name: str, mode: str, other_way: str) -> RelaySettings:
        relay = self.relays.get(name)
        if relay is None:
            raise Refused(f"no relay named {name!r} (relays: {', '.join(self.relays) or 'none'})")
        if relay.mode != mode:
            raise Refused(f"{name} is a {relay.mode}, not a {mode}: {other_way}")
        return relay

    def _check_ready(self, name: str, relay: RelaySettings) -> None:
        """With the lock held: the relays are open, not busy, and past the minimum interval."""
        if not self._open:
            raise Refused("the relays are closed (the node is starting or stopping)")
        if name in self.presses:
            raise Refused(f"{name} is being pressed by {self.presses[name].by}")
        wait = self.wait_before(name, relay)
        if wait > 0:
            raise Refused(f"{name} was used less than its min_interval ({relay.min_interval:g} s) ago: "
                          f"try again in {wait:.1f} s")

    def wait_before(self, name: str, relay: RelaySettings) -> float:
        """Seconds until `name` may be used again (0: now), from the last use's end on the wall clock.

        A last use in the future (the clock was set back, e.g. a Pi without a
        real-time clock before NTP) does not block: it counts as long ago.
        """
        last = self.history.get(name)
        if not last:
            return 0.0
        since = time.time() - (float(last.get("at", 0)) + float(last.get("duration", 0)))
        return relay.min_interval - since if 0 <= since < relay.min_interval else 0.0

    # ------------------------------------------------------------ watchdog

    def _watch(self) -> None:
        """Release every press that outlives its duration by WATCHDOG_GRACE, whatever the event loop does."""
        with self._lock:
            while self._open:
                now = time.monotonic()
                for press in list(self.presses.values()):
                    if now >= press.started + press.duration + WATCHDOG_GRACE:
                        self._release(press)
                        self.watchdog_releases += 1
                        self.log.error("relay: %s outlived its %g s press: released by the watchdog after "
                                       "%.3f s", press.relay, press.duration, press.released - press.started)
                ends = [p.started + p.duration + WATCHDOG_GRACE for p in self.presses.values()]
                self._wake.wait(max(0.01, min(ends) - now) if ends else None)

    # ------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """What `<prefix>/relays/state` holds."""
        relays = {}
        for name, relay in self.relays.items():
            last = self.history.get(name)
            entry: dict[str, Any] = {"active": self.active[name], "mode": relay.mode}
            if relay.mode == "button":
                entry["last_press"] = ({k: last[k] for k in ("by", "at", "duration")}
                                       if last and "duration" in last else None)
            else:
                entry["last_change"] = ({k: last[k] for k in ("by", "at", "state")}
                                        if last and "state" in last else None)
            relays[name] = entry
        return {"relays": relays}

    def _read_history(self) -> dict[str, dict[str, Any]]:
        path = self.state_dir / HISTORY_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self.log.warning("relay: cannot read %s (%s): starting without the last presses, so the first "
                             "press of each relay is not held back by min_interval", path, exc)
            return {}
        history = {}
        for name, last in (data.items() if isinstance(data, dict) else ()):
            if (name in self.relays and isinstance(last, dict) and isinstance(last.get("by"), str)
                    and _is_number(last.get("at")) and _is_number(last.get("duration", 0))):
                history[name] = last
        return history

    def _remember(self, name: str, last: dict[str, Any]) -> None:
        self.history[name] = last
        path = self.state_dir / HISTORY_FILE
        temporary = path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(self.history), encoding="utf-8")
            _owned_like_the_directory(temporary)
            os.replace(temporary, path)
        except OSError as exc:
            self.log.error("relay: cannot save the last presses in %s: %s (min_interval holds until the "
                           "node restarts)", path, exc)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _owned_like_the_directory(path: Path) -> None:
    """A file root creates in the state directory (`sudo pidaemon relay press`) gets the directory's
    owner, so that the daemon, which runs as that user, can still take the lock and read the presses."""
    if os.geteuid() != 0:
        return
    directory = path.parent.stat()
    if directory.st_uid != 0:
        os.chown(path, directory.st_uid, directory.st_gid)
