"""The relay node's local control socket: `pidaemon relay press` while the daemon holds the relays.

The broker may live on the machine the relays reset, so a press must not need
it.  When the daemon runs, it holds the relays (their lock file), and the
command line asks it through a Unix socket in the node's state directory
(`relays.sock`, mode 600, and only connections from the daemon's user or
root are served).  One JSON line
each way:

    -> {"relay": "reset", "duration": 0.5, "user": "ada (pidaemon relay press)"}
    <- {"pressed": {"relay", "by", "at", "duration"}}    or    {"refused": "reason"}

The request is read by the same rules as an MQTT one, and the press goes
through the same board (bounds, min_interval, watchdog) and is published on
`relays/pressed` like any other.  The press lasts while the command line
waits: if it goes away first (Ctrl-C), the relay is released at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .board import Refused
from .commands import MAX_PAYLOAD, read_press

if TYPE_CHECKING:  # pragma: no cover
    from .plugin import RelayPlugin

SOCKET_FILE = "relays.sock"
MAX_SOCKET_PATH = 100   # bytes: sun_path holds 108 on Linux


class LocalControl:
    """Serves presses from the node's own command line, on the daemon's event loop."""

    def __init__(self, plugin: RelayPlugin, state_dir: Path):
        self.plugin = plugin
        self.path = Path(state_dir) / SOCKET_FILE
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            self.plugin.node.log.warning("relay: state directory path too long for a Unix socket: "
                                         "`pidaemon relay press` cannot reach this daemon")
            return
        self.server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_PAYLOAD)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
            self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                peer = peer_uid(writer)
                if peer not in (os.getuid(), 0):
                    raise Refused(f"user id {peer} may not press: only root and the daemon's user")
                line = await asyncio.wait_for(reader.readline(), 5)
                request = read_press(line.strip())
                holding = await self.plugin.start_press(request.relay, request.duration, request.by)
                record = await _until_done_or_gone(holding, reader)
                answer: dict[str, Any] = {"pressed": record}
            except Refused as refusal:
                self.plugin.node.log.warning("relay: refused a press from the command line: %s", refusal)
                answer = {"refused": str(refusal)}
            except (ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                answer = {"refused": f"unreadable request: {type(exc).__name__}"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass   # the command line went away; the press itself went on and was published
        finally:
            writer.close()


async def _until_done_or_gone(holding: asyncio.Task, reader: asyncio.StreamReader) -> dict:
    """The press's record once it ends; if the command line goes away first (Ctrl-C), the press is cut
    short: the relay released at once, the shorter press published as it was."""
    gone = asyncio.ensure_future(reader.read(1))   # b"" when the other end closes; nothing else is sent
    try:
        await asyncio.wait([holding, gone], return_when=asyncio.FIRST_COMPLETED)
        if not holding.done():
            holding.cancel()
            await asyncio.wait([holding])
        return holding.result() if not holding.cancelled() else {}
    finally:
        gone.cancel()


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The user id of the process at the other end (Linux SO_PEERCRED): the socket's mode is set just
    after it is bound, so the check does not rest on the mode alone."""
    connection = writer.get_extra_info("socket")
    try:
        credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None
    return struct.unpack("3i", credentials)[1]


def ask_daemon(state_dir: Path, relay: str, duration: float | None, by: str, timeout: float) -> dict[str, Any]:
    """Send one press to the daemon that holds the relays; its answer. Raises OSError if none listens."""
    request = {"relay": relay, "user": by, **({"duration": duration} if duration is not None else {})}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(str(Path(state_dir) / SOCKET_FILE))
        connection.sendall(json.dumps(request).encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    try:
        return json.loads(answer)
    except ValueError:
        raise OSError(f"the daemon gave no readable answer ({answer[:80]!r})") from None
