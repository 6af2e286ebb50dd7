"""The server's announcement: what a node needs to join, as one small UDP datagram.

Pure encoding and validation, no I/O: the `announce` plugin sends these bytes,
the `discovery` plugin receives them (and finds the same bytes in the mDNS TXT
record), and both trust only what `decode` returns.

Layout (all integers big-endian):

    offset  size  field
    0       4     magic b"PIDA"
    4       1     protocol version (1)
    5       1     flags: bit 0 set = an HMAC-SHA256 trailer follows the body;
                  other bits must be 0
    6       2     body length N
    8       N     body: a UTF-8 JSON object (see `Announcement`)
    8+N     32    HMAC-SHA256(secret, bytes 0 .. 8+N), present if flag bit 0

A datagram is at most `MAX_DATAGRAM_SIZE` bytes.  With a secret configured,
the receiver rejects unsigned datagrams and checks the MAC with
`hmac.compare_digest` before it parses the body.  `decode` returns a valid
`Announcement` or raises `DatagramError`, never anything else (the tests fuzz it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import math
import re
import struct
from dataclasses import asdict, dataclass

from pidaemon.names import NAME_DOC, is_name, is_topic_prefix

MAGIC = b"PIDA"
PROTOCOL_VERSION = 1
MAX_DATAGRAM_SIZE = 1024
FLAG_SIGNED = 0x01
HEADER = struct.Struct(">4sBBH")
MAC_SIZE = hashlib.sha256().digest_size
DEFAULT_PORT = 17883
MDNS_SERVICE_TYPE = "_pidaemon._tcp.local."
MDNS_CHUNK = 200  # characters of base64 per TXT value (each value must stay under 255 bytes)

_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?")


class DatagramError(ValueError):
    """The datagram is not a valid announcement; the message says why (for the log)."""


@dataclass(frozen=True)
class Announcement:
    """What the server tells the nodes: where the broker is and how to talk on it."""

    cluster: str          # cluster name; nodes may accept one cluster only
    server: str           # node id of the announcing server
    host: str             # broker host name or IP address
    port: int             # broker port
    prefix: str           # MQTT topic prefix
    tls: bool = False     # mqtts:// rather than mqtt://
    time: float = 0.0     # sender's clock when sent (informative)

    @property
    def broker_url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{_url_host(self.host)}:{self.port}"

    def to_dict(self) -> dict:
        return asdict(self)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _secret_bytes(secret: str | bytes | None) -> bytes | None:
    if secret is None or secret == "" or secret == b"":
        return None
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def encode(announcement: Announcement, secret: str | bytes | None = None) -> bytes:
    """The datagram for `announcement`, signed when a secret is given."""
    _check_fields(announcement.to_dict())  # never send what a receiver would reject
    body = json.dumps(announcement.to_dict(), separators=(",", ":"), ensure_ascii=True).encode("ascii")
    key = _secret_bytes(secret)
    header = HEADER.pack(MAGIC, PROTOCOL_VERSION, FLAG_SIGNED if key else 0, len(body))
    data = header + body
    if key:
        data += hmac.new(key, data, hashlib.sha256).digest()
    if len(data) > MAX_DATAGRAM_SIZE:
        raise DatagramError(f"announcement of {len(data)} bytes exceeds {MAX_DATAGRAM_SIZE}")
    return data


def decode(data: bytes, secret: str | bytes | None = None) -> Announcement:
    """Validate a received datagram; return the announcement or raise DatagramError.

    With a secret, only datagrams signed with that secret pass.  Without one,
    signed and unsigned datagrams pass (the MAC cannot be checked).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DatagramError("not bytes")
    data = bytes(data)
    if len(data) > MAX_DATAGRAM_SIZE:
        raise DatagramError(f"too large: {len(data)} bytes (limit {MAX_DATAGRAM_SIZE})")
    if len(data) < HEADER.size:
        raise DatagramError(f"too short: {len(data)} bytes")
    magic, version, flags, body_length = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DatagramError("not a pidaemon announcement (bad magic)")
    if version != PROTOCOL_VERSION:
        raise DatagramError(f"unsupported protocol version {version} (this node speaks {PROTOCOL_VERSION})")
    if flags & ~FLAG_SIGNED:
        raise DatagramError(f"unknown flags 0x{flags:02x}")
    signed = bool(flags & FLAG_SIGNED)
    expected = HEADER.size + body_length + (MAC_SIZE if signed else 0)
    if len(data) != expected:
        raise DatagramError(f"length mismatch: {len(data)} bytes, header says {expected}")
    key = _secret_bytes(secret)
    signed_part = data[:HEADER.size + body_length]
    if key is not None:
        if not signed:
            raise DatagramError("unsigned announcement, but a shared secret is configured")
        mac = data[HEADER.size + body_length:]
        if not hmac.compare_digest(mac, hmac.new(key, signed_part, hashlib.sha256).digest()):
            raise DatagramError("bad HMAC (wrong shared secret, or the datagram was altered)")
    body = signed_part[HEADER.size:]
    try:
        fields = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DatagramError(f"body is not UTF-8 JSON: {type(exc).__name__}") from None
    if not isinstance(fields, dict):
        raise DatagramError("body is not a JSON object")
    return Announcement(**_check_fields(fields))


def _check_fields(fields: dict) -> dict:
    """The known fields, validated; unknown fields are ignored (a newer server may add some)."""
    out = {}
    for name in ("cluster", "server", "host", "prefix"):
        value = fields.get(name)
        if not isinstance(value, str):
            raise DatagramError(f"field {name!r} missing or not a string")
        out[name] = value
    if not is_name(out["cluster"]):
        raise DatagramError(f"field 'cluster' is not {NAME_DOC}")
    if not is_name(out["server"]):
        raise DatagramError("field 'server' is not a node id")
    if not _valid_host(out["host"]):
        raise DatagramError("field 'host' is not a host name or IP address")
    if len(out["prefix"]) > 128 or not is_topic_prefix(out["prefix"]):
        raise DatagramError("field 'prefix' is not a topic prefix")
    port = fields.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise DatagramError("field 'port' is not a port number (1-65535)")
    out["port"] = port
    tls = fields.get("tls", False)
    if not isinstance(tls, bool):
        raise DatagramError("field 'tls' is not true or false")
    out["tls"] = tls
    sent = fields.get("time", 0.0)
    if isinstance(sent, bool) or not isinstance(sent, (int, float)) or not math.isfinite(sent) or sent < 0:
        raise DatagramError("field 'time' is not a timestamp")
    out["time"] = float(sent)
    return out


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.fullmatch(host)) and not host.replace(".", "").isdigit()


# ---------------------------------------------------------------- the same bytes in an mDNS TXT record

def to_txt(datagram: bytes) -> dict[str, str]:
    """The datagram as TXT properties `d0`, `d1`, ... of base64 (each short enough for a TXT string)."""
    text = base64.b64encode(datagram).decode("ascii")
    chunks = [text[i:i + MDNS_CHUNK] for i in range(0, len(text), MDNS_CHUNK)]
    return {f"d{i}": chunk for i, chunk in enumerate(chunks)}


def from_txt(properties: dict, secret: str | bytes | None = None) -> Announcement:
    """Reassemble and `decode` a datagram published with `to_txt`; DatagramError if anything is off.

    Keys and values may be bytes (as zeroconf hands them over) or text.
    """
    text = {(k.decode("ascii", "replace") if isinstance(k, bytes) else str(k)):
            (v.decode("ascii", "replace") if isinstance(v, bytes) else "" if v is None else str(v))
            for k, v in properties.items()}
    chunks = []
    while f"d{len(chunks)}" in text:
        chunks.append(text[f"d{len(chunks)}"])
        if sum(map(len, chunks)) > MAX_DATAGRAM_SIZE * 4 // 3 + 4:
            raise DatagramError("TXT record too large")
    if not chunks:
        raise DatagramError("TXT record carries no announcement")
    try:
        data = base64.b64decode("".join(chunks), validate=True)
    except ValueError:
        raise DatagramError("TXT record is not base64") from None
    return decode(data, secret)
