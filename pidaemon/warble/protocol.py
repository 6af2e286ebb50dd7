"""Messages between the runner (parent) and a sandboxed child, over a stream socket.

Each message is a 4-byte big-endian length and a JSON object. JSON, not
pickle, in this direction: the parent never unpickles what a child sends.
Warble values travel tagged, so big integers and arbitrary-precision numbers
keep their exact value, in the stores' encoding (values.py), checked here:
["int", "123"], ["float", "1.5"], ["str", "text"], ["dec", "3.14"].
"""
from __future__ import annotations

import json
import socket
import struct
from typing import Any

from .errors import WarbleError
from .values import Value, decode_value, encode_value

HEADER = struct.Struct(">I")
MAX_MESSAGE = 16 * 1024 * 1024


class ProtocolError(Exception):
    pass


def pack_value(value: Any, digits: int | None = None) -> list:
    """A Warble value for the pipe: values.encode_value's [kind, text]."""
    try:
        return list(encode_value(value, digits))
    except WarbleError as exc:
        raise ProtocolError(f"cannot send a {value.__class__.__name__}") from exc


def unpack_value(item: Any) -> Value:
    """A value from the pipe, checked for shape and size before it is decoded."""
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], str)):
        raise ProtocolError("bad value")
    kind, text = item
    if len(text) > MAX_MESSAGE:
        raise ProtocolError("value too long")
    try:
        return decode_value(kind, text)
    except ValueError as exc:
        raise ProtocolError(f"bad value: {exc}") from exc


def pack(message: dict) -> bytes:
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    return HEADER.pack(len(data)) + data


class Channel:
    """Framed JSON messages on a connected stream socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()

    def send(self, message: dict) -> None:
        self.sock.sendall(pack(message))

    def fileno(self) -> int:
        return self.sock.fileno()

    def pop_message(self) -> dict | None:
        """A complete message from the buffer, or None if more bytes are needed."""
        if len(self.buffer) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self.buffer)
        if size > MAX_MESSAGE:
            raise ProtocolError("message too large")
        if len(self.buffer) < HEADER.size + size:
            return None
        data = bytes(self.buffer[HEADER.size:HEADER.size + size])
        del self.buffer[:HEADER.size + size]
        try:
            message = json.loads(data.decode("utf-8", "surrogatepass"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError("bad message") from exc
        if not isinstance(message, dict):
            raise ProtocolError("bad message")
        return message

    def feed(self) -> bool:
        """Read what is available (blocking per the socket's timeout); False at EOF."""
        data = self.sock.recv(1 << 16)
        if not data:
            return False
        self.buffer += data
        return True

    def receive(self) -> dict:
        """Block until one whole message arrives (used by the child)."""
        while True:
            message = self.pop_message()
            if message is not None:
                return message
            if not self.feed():
                raise EOFError("the other side closed the channel")
