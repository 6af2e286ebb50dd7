"""A client for the cluster's serial boards (the relay and lamp Arduinos of firmware/), shared by their plugins.

The boards speak one line protocol (docs/protocol.md, the boards' serial
protocol): a board announces itself when it starts with
`HELLO <kind> <version> <id> key=value... boot=<cause>` and answers every
command line with one line, `OK ...` or `ERR <reason> ...`.  A `SerialBoard`:

- opens the board by its path (the stable udev names `/dev/picluster-relay`
  and `/dev/picluster-lights`) with pyserial, imported only then (the
  `serial` extra);
- reads the board's HELLO, or asks for it (`HELLO`) when none comes within
  `hello_wait` seconds, as with a board that does not restart when its port
  is opened;
- checks the announced kind and major version: another board is refused
  (`WrongBoard`, naming the path, what was expected and what was announced)
  and left alone, not opened again (which would restart it), until the
  device at the path changes;
- sends one command at a time and returns its one answer line: `ask()` from
  any thread, `await ask_async()` from the event loop;
- sends `PING` while its owner asks for keepalives (`keepalive(True)`: the
  relay board releases a held relay after 1.5 s without a line);
- notices when the board goes away (a read or write error, the port closing,
  no answer within `timeout`) or restarts (a HELLO nobody asked for), and
  reconnects with a backoff from `reconnect_min` to `reconnect_max` seconds.

pyserial blocks, so each board has a thread of its own, the only code that
touches the port.  The event loop never waits on the port: `ask_async`
awaits a future that the board's thread completes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import re
import select
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .schema import Integer, Number, settings

PYSERIAL_HINT = "pip install 'pidaemon[serial]' (pyserial)"
LONGEST_LINE = 256                 # bytes a board may send without a newline before they are dropped
HELLO_WORD = re.compile(r"[A-Za-z0-9_.+\-]{1,32}")
PING_ANSWER = "PONG"


@settings
class SerialBoardSettings:
    """How a plugin talks to its board; the plugin's own settings add `port` (its udev name) to these."""

    baud: int = Integer(min=1200, max=2_000_000, default=115200, doc="the boards' firmware uses 115200")
    timeout: float = Number(min=0.05, max=30, default=1.0,
                            doc="seconds to wait for the answer to one command; a board that does not answer "
                                "in time is taken as gone and opened again")
    hello_wait: float = Number(min=0, max=30, default=2.5,
                               doc="seconds to wait for the board's HELLO after opening its port (a Mega restarts "
                                   "when its port is opened: about 2 s) before asking for it")
    keepalive: float = Number(min=0.05, max=1.0, default=0.5,
                              doc="seconds between PINGs while the plugin keeps the line alive (the relay board "
                                  "releases a held relay after 1.5 s without a line)")
    reconnect_min: float = Number(min=0.05, max=600, default=0.5,
                                  doc="seconds before the first new attempt after the board went away")
    reconnect_max: float = Number(min=0.05, max=3600, default=30,
                                  doc="longest pause between two attempts (the pause doubles up to it)")


class SerialBoardError(Exception):
    """Base of this module's errors."""


class PyserialMissing(SerialBoardError):
    """pyserial is not installed."""


class BoardUnavailable(SerialBoardError):
    """The board cannot take a command now: absent, gone, silent, or still being connected; says why."""


class BoardRestarted(BoardUnavailable):
    """The board announced a restart before answering: the command's answer is lost."""


class WrongBoard(BoardUnavailable):
    """The device at the path is not the expected board: another kind, an unknown major version, or no HELLO."""


class BoardRefused(SerialBoardError):
    """The board answered `ERR <reason> <details...>` to `command`."""

    def __init__(self, command: str, line: str):
        words = line.split()
        self.command = command
        self.line = line
        self.reason = words[1] if len(words) > 1 else ""
        self.details = tuple(words[2:])
        super().__init__(f"the board refused {command!r}: {line}")


@dataclass(frozen=True)
class Hello:
    """What a board announced: `HELLO relay 1.0.0 relay relays=reset,power boot=power`."""

    kind: str
    version: str
    major: int
    id: str
    boot: str
    fields: Mapping[str, str]
    line: str

    @classmethod
    def parse(cls, line: str) -> Hello:
        """From a `HELLO ...` or `OK HELLO ...` line; ValueError saying what is wrong."""
        words = line.split()
        if words[:1] == ["OK"]:
            words = words[1:]
        if len(words) < 4 or words[0] != "HELLO":
            raise ValueError("not `HELLO <kind> <version> <id> key=value...`")
        kind, version, board_id = words[1:4]
        for word in (kind, version, board_id):
            if not HELLO_WORD.fullmatch(word):
                raise ValueError(f"{word[:40]!r} is not a word of the protocol")
        match = re.fullmatch(r"(\d{1,4})\.\d{1,4}\.\d{1,4}", version)
        if not match:
            raise ValueError(f"version {version!r} is not MAJOR.MINOR.PATCH")
        fields = {}
        for word in words[4:]:
            key, equals, value = word.partition("=")
            if equals:
                fields[key] = value
        return cls(kind, version, int(match.group(1)), board_id, fields.get("boot", "unknown"), fields, line)


def require_pyserial() -> Any:
    """The `serial` module (pyserial); PyserialMissing saying what to install."""
    try:
        import serial
    except ImportError as exc:
        raise PyserialMissing(f"pyserial is missing ({exc}): {PYSERIAL_HINT}") from None
    return serial


def device_identity(path: str) -> tuple | None:
    """What changes when another device appears at `path` (udev recreates the link and node on a replug)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return os.path.realpath(path), status.st_dev, status.st_ino, status.st_rdev, status.st_ctime_ns


@dataclass
class _Command:
    text: str
    timeout: float
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class SerialBoard:
    """One board on one serial port, connected and kept connected by a thread of its own.

    `kind` and `majors` are what the board must announce (`relay`, (1,)).
    Callbacks, both called in the board's thread:

    - `on_connect(hello, restarted)`: after each connection (restarted False)
      and each restart the board announced while connected (True), before any
      queued command is sent; it may call `ask()` (to set the board to a known
      state).  Raising BoardUnavailable drops the connection.
    - `on_change()`: `status()` changed (connected, gone, refused, restarted);
      must return at once.
    """

    def __init__(self, path: str, kind: str, majors: Iterable[int] = (1,), *, baud: int = 115200,
                 timeout: float = 1.0, hello_wait: float = 2.5, keepalive: float = 0.5,
                 reconnect_min: float = 0.5, reconnect_max: float = 30.0, max_line: int = 64,
                 on_connect: Callable[[Hello, bool], None] | None = None,
                 on_change: Callable[[], None] | None = None, log: logging.Logger | logging.LoggerAdapter | None = None):
        self.path = str(path)
        self.kind = kind
        self.majors = tuple(majors)
        self.baud = baud
        self.timeout = timeout
        self.hello_wait = hello_wait
        self.keepalive_interval = keepalive
        self.reconnect_min = reconnect_min
        self.reconnect_max = max(reconnect_max, reconnect_min)
        self.max_line = max_line
        self.on_connect = on_connect
        self.on_change = on_change
        self.log = log or logging.getLogger("pidaemon.serial_board")
        self.hello: Hello | None = None       # the last accepted board's announcement
        self.connected = False
        self.state = "stopped"                # stopped, opening, hello, connected, waiting, refused
        self.error: str | None = None         # why the board is not connected (None while it is)
        self.connections = 0                  # successful connections since start
        self.restarts = 0                     # restarts the board announced while connected
        self.opened = 0                       # times the port was opened (each may restart a Mega)
        self._commands: queue.Queue[_Command] = queue.Queue()
        self._queue_lock = threading.Lock()   # "connected" and the queue change together
        self._stopping = threading.Event()
        self._settled = threading.Event()     # the first attempt to connect has ended, either way
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._link: Any = None
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._keepalive = False
        self._last_sent = 0.0
        self._restart: Hello | None = None
        self._refused_identity: tuple | None = None
        self._last_logged: str | None = None

    @classmethod
    def from_settings(cls, port: str, settings: SerialBoardSettings, kind: str, majors: Iterable[int] = (1,),
                      **kw) -> SerialBoard:
        return cls(port, kind, majors, baud=settings.baud, timeout=settings.timeout, hello_wait=settings.hello_wait,
                   keepalive=settings.keepalive, reconnect_min=settings.reconnect_min,
                   reconnect_max=settings.reconnect_max, **kw)

    # ------------------------------------------------------------ for the owner

    def start(self) -> None:
        """Start the board's thread (it connects in the background); PyserialMissing if pyserial is absent."""
        require_pyserial()
        if self._thread is not None:
            return
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"serial-board:{self.path}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Close the port and end the thread; queued commands fail with BoardUnavailable.  Safe to call twice."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._wake()
        if thread is not threading.current_thread():
            thread.join(self.timeout + 2 if timeout is None else timeout)
        self._thread = None
        if thread.is_alive():
            return   # still in an exchange: it ends at its timeout; its wake-up pipe stays open until then
        for descriptor in (self._wake_r, self._wake_w):
            try:
                os.close(descriptor)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def ask(self, command: str, timeout: float | None = None) -> str:
        """Send `command` and return the board's answer after `OK ` ("" for a bare `OK`).

        Blocks the calling thread (never call it on the event loop: use
        `ask_async`).  Raises BoardRefused for an `ERR` answer and
        BoardUnavailable when the board is not connected or does not answer
        within `timeout` (the board's own timeout by default).  Before the
        first attempt to connect has ended, the command waits for it.
        """
        timeout = self.timeout if timeout is None else timeout
        if threading.current_thread() is self._thread and self._link is not None:
            self._check_command(command)
            return self._exchange(self._link, command, timeout)
        future = self.submit(command, timeout)
        try:
            return future.result(self.hello_wait + 2 * self.timeout + timeout + 5)
        except concurrent.futures.TimeoutError:
            raise BoardUnavailable(f"{self.path}: the board's thread did not answer {command!r}") from None

    async def ask_async(self, command: str, timeout: float | None = None) -> str:
        """`ask` for the event loop: it waits without blocking the loop."""
        return await asyncio.wrap_future(self.submit(command, self.timeout if timeout is None else timeout))

    def submit(self, command: str, timeout: float | None = None) -> concurrent.futures.Future:
        """Queue `command`; the future gets the answer (or BoardRefused, BoardUnavailable)."""
        self._check_command(command)
        item = _Command(command, self.timeout if timeout is None else timeout)
        with self._queue_lock:
            if self._thread is None or self._stopping.is_set():
                item.future.set_exception(BoardUnavailable(f"{self.path}: the board's client is stopped"))
            elif not self.connected and self._settled.is_set():
                item.future.set_exception(BoardUnavailable(self._why_unavailable()))
            else:
                self._commands.put(item)
        self._wake()
        return item.future

    def keepalive(self, enabled: bool) -> None:
        """Send PING whenever no line went to the board for `keepalive` seconds (True) or stop (False)."""
        self._keepalive = enabled
        self._wake()

    def status(self) -> dict[str, Any]:
        """For the node's info: the path, whether connected, the last accepted board's HELLO, and why not connected."""
        hello = self.hello
        return {"path": self.path, "connected": self.connected, "state": self.state,
                "kind": hello.kind if hello else None, "version": hello.version if hello else None,
                "id": hello.id if hello else None, "boot": hello.boot if hello else None, "error": self.error}

    @property
    def reconnects(self) -> int:
        return max(0, self.connections - 1)

    # ------------------------------------------------------------ the board's thread

    def _run(self) -> None:
        delay = self.reconnect_min
        while not self._stopping.is_set():
            identity = device_identity(self.path)
            if self._refused_identity is not None and identity == self._refused_identity:
                self._stopping.wait(self.reconnect_min)   # the refused device is still there: leave it alone
                continue
            self._refused_identity = None
            refused, message = False, None
            try:
                link = self._open()
                try:
                    identity = device_identity(self.path)
                    self._connect(link)
                    delay = self.reconnect_min
                    self._serve(link)
                finally:
                    self._close(link)
            except WrongBoard as exc:
                refused, message = True, str(exc)
                self._refused_identity = identity
            except BoardUnavailable as exc:
                message = str(exc)
            except PyserialMissing as exc:
                message = str(exc)
            except Exception as exc:  # a bug here must not end the thread: the board would be gone for good
                self.log.exception("serial board %s: unexpected error", self.path)
                message = f"{type(exc).__name__}: {exc}"
            if self._stopping.is_set():
                break
            self._lost(message or "the connection ended", refused)
            self._stopping.wait(delay)
            delay = min(delay * 2, self.reconnect_max)
        self._lost("stopped", False, stopping=True)

    def _open(self) -> Any:
        serial = require_pyserial()
        self._set_state("opening")
        try:
            link = serial.Serial(self.path, self.baud, timeout=0, write_timeout=self.timeout, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise BoardUnavailable(f"cannot open {self.path}: {exc}") from None
        self.opened += 1
        self._buffer.clear()
        self._lines.clear()
        return link

    def _close(self, link: Any) -> None:
        self._link = None
        try:
            link.close()
        except Exception as exc:  # a port that vanished may fail to close; it is closed for us either way
            self.log.debug("serial board %s: closing: %s", self.path, exc)

    def _connect(self, link: Any) -> None:
        self._set_state("hello")
        seen: list[str] = []
        hello = self._await_hello(link, time.monotonic() + self.hello_wait, seen)
        if hello is None:
            self._send(link, "HELLO")
            hello = self._await_hello(link, time.monotonic() + self.timeout, seen)
        if hello is None:
            if seen:
                raise WrongBoard(f"{self.path}: expected a {self.kind} board, but the device there sent no HELLO "
                                 f"(its last line: {seen[-1]!r}); left alone until the device at {self.path} changes")
            raise BoardUnavailable(f"{self.path}: no HELLO within {self.hello_wait + self.timeout:g} s, nor an answer "
                                   "to HELLO: the board's firmware is not running")
        self._check(hello)
        self._link = link
        self.hello = hello
        self._restart = None
        with self._queue_lock:
            self.connected = True
            self.connections += 1
        self.error = None
        self._set_state("connected")
        self._last_logged = None
        self.log.info("serial board %s connected: %s %s, id %s, boot=%s", self.path, hello.kind, hello.version,
                      hello.id, hello.boot)
        self._warn_about_boot(hello)
        self._call_on_connect(hello, restarted=False)
        self._settled.set()
        self._changed()

    def _await_hello(self, link: Any, deadline: float, seen: list[str]) -> Hello | None:
        while True:
            line = self._next_line(link, deadline)
            if line is None:
                return None
            if line.startswith(("HELLO ", "OK HELLO ")):
                return self._parse_hello(line)
            seen.append(line[:80])

    def _parse_hello(self, line: str) -> Hello:
        try:
            return Hello.parse(line)
        except ValueError as exc:
            raise WrongBoard(f"{self.path}: expected a {self.kind} board, but it announced {line[:80]!r} ({exc}); "
                             f"left alone until the device at {self.path} changes") from None

    def _check(self, hello: Hello) -> None:
        if hello.kind != self.kind or hello.major not in self.majors:
            majors = " or ".join(f"{major}.x" for major in self.majors)
            raise WrongBoard(f"{self.path}: expected a {self.kind} board with firmware {majors}, but it announced a "
                             f"{hello.kind} board with firmware {hello.version} (id {hello.id}); left alone until "
                             f"the device at {self.path} changes")

    def _serve(self, link: Any) -> None:
        """Serve queued commands and keepalives until stopped; BoardUnavailable when the board goes away."""
        while not self._stopping.is_set():
            if self._restart is not None:
                self._restarted(self._restart)
                continue
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                command = None
            if command is not None:
                self._carry_out(link, command)
                continue
            while self._lines:   # read along with an answer: a restart's HELLO must not wait for more bytes
                self._unasked(self._lines.pop(0))
            if self._restart is not None:
                continue
            wait = None
            if self._keepalive:
                due = self._last_sent + self.keepalive_interval
                if time.monotonic() >= due:
                    self._ping(link)
                    continue
                wait = due - time.monotonic()
            if self._wait(link, wait):
                self._read(link)
                while self._lines:
                    self._unasked(self._lines.pop(0))

    def _carry_out(self, link: Any, command: _Command) -> None:
        if not command.future.set_running_or_notify_cancel():
            return
        try:
            command.future.set_result(self._exchange(link, command.text, command.timeout))
        except BoardRestarted as exc:
            command.future.set_exception(exc)   # the link is fine: the restart is handled next
        except BoardRefused as exc:
            command.future.set_exception(exc)
        except BoardUnavailable as exc:
            command.future.set_exception(exc)
            raise

    def _ping(self, link: Any) -> None:
        try:
            self._exchange(link, "PING", self.timeout)
        except BoardRefused as exc:  # a board that refuses PING is not well, but it heard a line
            self.log.warning("serial board %s: %s", self.path, exc)
        except BoardRestarted:
            pass

    def _exchange(self, link: Any, text: str, timeout: float) -> str:
        """Send one command line and read its answer (after `OK `); lines that answer nothing asked are skipped."""
        self._send(link, text)
        deadline = time.monotonic() + timeout
        words = text.split()
        expected = PING_ANSWER if words[0].upper() == "PING" else words[0].upper()
        while True:
            line = self._next_line(link, deadline)
            if line is None:
                raise BoardUnavailable(f"{self.path}: no answer to {text!r} within {timeout:g} s")
            if line.startswith("HELLO "):
                self._restart = self._parse_hello(line)
                raise BoardRestarted(f"{self.path}: the board restarted (boot={self._restart.boot}) before "
                                     f"answering {text!r}")
            answer = line.split()
            if answer[0] == "ERR":
                raise BoardRefused(text, line)
            if answer[0] == "OK" and (len(answer) == 1 or answer[1].upper() == expected):
                return line[3:]
            self.log.debug("serial board %s: skipped %r (not an answer to %r)", self.path, line, text)

    def _unasked(self, line: str) -> None:
        if line.startswith("HELLO "):
            self._restart = self._parse_hello(line)
        else:
            self.log.debug("serial board %s: skipped %r (nothing was asked)", self.path, line)

    def _restarted(self, hello: Hello) -> None:
        self._restart = None
        self._check(hello)
        self.hello = hello
        self.restarts += 1
        self.log.warning("serial board %s restarted: %s %s, boot=%s", self.path, hello.kind, hello.version,
                         hello.boot)
        self._warn_about_boot(hello)
        self._call_on_connect(hello, restarted=True)
        self._changed()

    def _call_on_connect(self, hello: Hello, restarted: bool) -> None:
        if self.on_connect is None:
            return
        try:
            self.on_connect(hello, restarted)
        except BoardUnavailable:
            raise
        except Exception:  # the owner's bug: logged, the connection stays
            self.log.exception("serial board %s: the on_connect callback failed", self.path)

    def _warn_about_boot(self, hello: Hello) -> None:
        if hello.boot == "watchdog":
            self.log.warning("serial board %s: the board was restarted by its watchdog: its firmware hung", self.path)
        elif hello.boot == "brownout":
            self.log.warning("serial board %s: the board restarted after a brown-out: check its power supply",
                             self.path)

    # ------------------------------------------------------------ lines

    def _send(self, link: Any, text: str) -> None:
        try:
            link.write(text.encode("ascii") + b"\n")
        except Exception as exc:  # pyserial: SerialException, SerialTimeoutException; OSError
            raise BoardUnavailable(f"{self.path}: write failed: {exc}") from None
        self._last_sent = time.monotonic()

    def _next_line(self, link: Any, deadline: float) -> str | None:
        while not self._lines:
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping.is_set():
                return None
            if self._wait(link, left):
                self._read(link)
        return self._lines.pop(0)

    def _wait(self, link: Any, timeout: float | None) -> bool:
        """Until the port has bytes (True), a wake-up, or `timeout` s; BoardUnavailable if the port is gone."""
        try:
            readable, _, _ = select.select([link.fileno(), self._wake_r], [], [], timeout)
        except (OSError, ValueError) as exc:
            raise BoardUnavailable(f"{self.path}: the port closed: {exc}") from None
        if self._wake_r in readable:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        return link.fileno() in readable

    def _read(self, link: Any) -> None:
        try:
            data = link.read(max(1, link.in_waiting))
        except Exception as exc:  # pyserial's SerialException: "device reports readiness to read but returned no data"
            raise BoardUnavailable(f"{self.path}: read failed (unplugged?): {exc}") from None
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            raw = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[:end + 1]
            line = raw.decode("ascii", "replace").strip()
            if line:
                self._lines.append(line[:LONGEST_LINE])
        if len(self._buffer) > LONGEST_LINE:
            self.log.debug("serial board %s: dropped %d bytes without a newline", self.path, len(self._buffer))
            self._buffer.clear()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"!")
            except (BlockingIOError, OSError):
                pass   # the pipe is full (a wake-up is pending anyway) or closed (stopped)

    # ------------------------------------------------------------ state

    def _check_command(self, command: str) -> None:
        if not command or len(command) > self.max_line or not command.isascii() or not command.isprintable():
            raise ValueError(f"not a command line for the board (1 to {self.max_line} printable ASCII characters): "
                             f"{command[:80]!r}")

    def _why_unavailable(self) -> str:
        return f"{self.kind} board not connected: {self.error or f'{self.path}: still connecting'}"

    def _lost(self, message: str, refused: bool, stopping: bool = False) -> None:
        with self._queue_lock:
            was_connected, self.connected = self.connected, False
            pending = []
            while True:
                try:
                    pending.append(self._commands.get_nowait())
                except queue.Empty:
                    break
        for command in pending:
            if not command.future.done():
                command.future.set_exception(BoardUnavailable(f"{self.path}: {message}"))
        previous = (self.state, self.error)
        self.error = None if stopping else message
        self._set_state("stopped" if stopping else "refused" if refused else "waiting")
        self._settled.set()
        if not stopping:
            level = logging.ERROR if refused else logging.WARNING
            where = "" if self.path in message else f"{self.path}: "
            self._log(level, f"serial board {where}{message}"
                             + ("" if refused else f"; trying again (every {self.reconnect_min:g} s to "
                                                   f"{self.reconnect_max:g} s)"))
        if was_connected or previous != (self.state, self.error):
            self._changed()

    def _set_state(self, state: str) -> None:
        self.state = state

    def _changed(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change()
        except Exception:
            self.log.exception("serial board %s: the on_change callback failed", self.path)

    def _log(self, level: int, message: str) -> None:
        """A failure once in a row: a board that stays away is not reported at every attempt."""
        if message == self._last_logged:
            self.log.debug("%s", message)
            return
        self._last_logged = message
        self.log.log(level, "%s", message)
