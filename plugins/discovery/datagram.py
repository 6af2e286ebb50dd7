"""The server's announcement: what a node needs to join, as one small UDP datagram; and a node's query.

Pure encoding and validation, no I/O: the `announce` plugin sends these bytes,
the `discovery` plugin receives them (and finds the same bytes in the mDNS TXT
record), and both trust only what `decode` and `decode_query` return.

Layout (all integers big-endian):

    offset  size  field
    0       4     magic b"PIDA"
    4       1     protocol version (2)
    5       1     flags: bit 0 set = an HMAC-SHA256 trailer follows the body;
                  bit 1 set = a node's query (else a server's announcement);
                  other bits must be 0
    6       2     body length N
    8       N     body: a UTF-8 JSON object (see `Announcement` and `Query`)
    8+N     32    HMAC-SHA256(secret, bytes 0 .. 8+N), present if flag bit 0

An announcement's body carries the server's clock (`time`) and its `counter`,
which grows with every datagram the server signs, across its restarts: a node
refuses what is not newer than what it already accepted from that server, and
what is too far from the server's clock as it knows it (see `freshness.py`).
A node that has no reference for a server yet (at boot: a Pi without a
real-time clock does not know the time) sends it a signed `Query` with a
random nonce; the server answers with an announcement that carries the nonce,
which proves it fresh whatever the clocks say.

A datagram is at most `MAX_DATAGRAM_SIZE` bytes.  With a secret configured,
the receiver rejects unsigned datagrams and checks the MAC with
`hmac.compare_digest` before it parses the body, and accepts version 2 only.
Without one (`insecure: true`, a trial on a desk) it also accepts the unsigned
version 1 of older servers.  `decode` returns a valid `Announcement` or raises
`DatagramError`, never anything else (the tests fuzz it); so does `decode_query`.
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
PROTOCOL_VERSION = 2
OLD_UNSIGNED_VERSION = 1  # accepted by an insecure receiver only: no counter, no nonce
MAX_DATAGRAM_SIZE = 1024
FLAG_SIGNED = 0x01
FLAG_QUERY = 0x02
HEADER = struct.Struct(">4sBBH")
MAC_SIZE = hashlib.sha256().digest_size
DEFAULT_PORT = 17883
DEFAULT_QUERY_PORT = 17884
MDNS_SERVICE_TYPE = "_pidaemon._tcp.local."
MDNS_CHUNK = 200  # characters of base64 per TXT value (each value must stay under 255 bytes)
MDNS_QUERY_PORT_KEY = "q"  # TXT property: the UDP port where the server answers queries
MAX_COUNTER = 2**63 - 1
NONCE = re.compile(r"[0-9a-f]{32,64}")

_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?")


class DatagramError(ValueError):
    """The datagram is not a valid announcement (or query); the message says why (for the log)."""


@dataclass(frozen=True)
class Announcement:
    """What the server tells the nodes: where the broker is and how to talk on it."""

    cluster: str              # cluster name; nodes may accept one cluster only
    server: str               # node id of the announcing server
    host: str                 # broker host name or IP address
    port: int                 # broker port
    prefix: str               # MQTT topic prefix
    tls: bool = False         # mqtts:// rather than mqtt://
    time: float = 0.0         # the server's clock when it signed this datagram (Unix time)
    counter: int = 0          # grows with every datagram the server signs, across its restarts
    nonce: str | None = None  # the nonce of the query this datagram answers, if it answers one

    @property
    def broker_url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{_url_host(self.host)}:{self.port}"

    def to_dict(self) -> dict:
        fields = asdict(self)
        if fields["nonce"] is None:
            del fields["nonce"]
        return fields


@dataclass(frozen=True)
class Query:
    """A node asks a server for a fresh announcement that carries `nonce`."""

    node: str    # the asking node's id (for the server's log)
    nonce: str   # 32 to 64 lower-case hex digits, random

    def to_dict(self) -> dict:
        return asdict(self)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _secret_bytes(secret: str | bytes | None) -> bytes | None:
    if secret is None or secret == "" or secret == b"":
        return None
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def _seal(body: dict, secret: str | bytes | None, flags: int) -> bytes:
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    key = _secret_bytes(secret)
    data = HEADER.pack(MAGIC, PROTOCOL_VERSION, flags | (FLAG_SIGNED if key else 0), len(data)) + data
    if key:
        data += hmac.new(key, data, hashlib.sha256).digest()
    if len(data) > MAX_DATAGRAM_SIZE:
        raise DatagramError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM_SIZE}")
    return data


def encode(announcement: Announcement, secret: str | bytes | None = None) -> bytes:
    """The datagram for `announcement`, signed when a secret is given."""
    _check_fields(announcement.to_dict(), PROTOCOL_VERSION)  # never send what a receiver would reject
    return _seal(announcement.to_dict(), secret, 0)


def encode_query(query: Query, secret: str | bytes) -> bytes:
    """A node's query, always signed: a server answers nothing else."""
    if _secret_bytes(secret) is None:
        raise DatagramError("a query must be signed")
    _check_query(query.to_dict())
    return _seal(query.to_dict(), secret, FLAG_QUERY)


def decode(data: bytes, secret: str | bytes | None = None) -> Announcement:
    """Validate a received announcement; return it or raise DatagramError.

    With a secret, only version 2 datagrams signed with that secret pass.
    Without one (an insecure node), signed and unsigned datagrams of version 1
    and 2 pass (the MAC cannot be checked).  Freshness (time, counter) is the
    receiver's business (`freshness.py`): this checks that the fields are there.
    """
    version, body = _open(data, secret, query=False)
    return Announcement(**_check_fields(_parse_object(body), version))


def decode_query(data: bytes, secret: str | bytes) -> Query:
    """Validate a received query (signed with `secret`); return it or raise DatagramError."""
    if _secret_bytes(secret) is None:
        raise DatagramError("queries are answered only with a shared secret")
    _, body = _open(data, secret, query=True)
    return Query(**_check_query(_parse_object(body)))


def _open(data: bytes, secret: str | bytes | None, query: bool) -> tuple[int, bytes]:
    """Check the header and the MAC; the protocol version and the (unparsed) body."""
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
    key = _secret_bytes(secret)
    if version == OLD_UNSIGNED_VERSION and key is not None:
        raise DatagramError(f"old protocol version {version} (no counter, no nonce): this node needs signed "
                            f"version {PROTOCOL_VERSION} announcements: upgrade the server")
    if version not in (PROTOCOL_VERSION, OLD_UNSIGNED_VERSION):
        raise DatagramError(f"unsupported protocol version {version} (this node speaks {PROTOCOL_VERSION})")
    known = FLAG_SIGNED | (FLAG_QUERY if version == PROTOCOL_VERSION else 0)
    if flags & ~known:
        raise DatagramError(f"unknown flags 0x{flags:02x}")
    if bool(flags & FLAG_QUERY) != query:
        raise DatagramError("a query, not an announcement" if not query else "an announcement, not a query")
    signed = bool(flags & FLAG_SIGNED)
    expected = HEADER.size + body_length + (MAC_SIZE if signed else 0)
    if len(data) != expected:
        raise DatagramError(f"length mismatch: {len(data)} bytes, header says {expected}")
    signed_part = data[:HEADER.size + body_length]
    if key is not None:
        if not signed:
            raise DatagramError("unsigned announcement, but a shared secret is configured")
        mac = data[HEADER.size + body_length:]
        if not hmac.compare_digest(mac, hmac.new(key, signed_part, hashlib.sha256).digest()):
            raise DatagramError("bad HMAC (wrong shared secret, or the datagram was altered)")
    return version, signed_part[HEADER.size:]


def _parse_object(body: bytes) -> dict:
    try:
        fields = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DatagramError(f"body is not UTF-8 JSON: {type(exc).__name__}") from None
    if not isinstance(fields, dict):
        raise DatagramError("body is not a JSON object")
    return fields


def _check_fields(fields: dict, version: int) -> dict:
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
    if not _is_int(port) or not 1 <= port <= 65535:
        raise DatagramError("field 'port' is not a port number (1-65535)")
    out["port"] = port
    tls = fields.get("tls", False)
    if not isinstance(tls, bool):
        raise DatagramError("field 'tls' is not true or false")
    out["tls"] = tls
    if version == OLD_UNSIGNED_VERSION:
        sent = fields.get("time", 0.0)
    else:
        sent = fields.get("time")
        counter = fields.get("counter")
        if not _is_int(counter) or not 0 <= counter <= MAX_COUNTER:
            raise DatagramError("field 'counter' missing or not a whole number from 0 to 2^63-1")
        out["counter"] = counter
        nonce = fields.get("nonce")
        if nonce is not None:
            if not isinstance(nonce, str) or not NONCE.fullmatch(nonce):
                raise DatagramError("field 'nonce' is not 32 to 64 lower-case hex digits")
            out["nonce"] = nonce
    if isinstance(sent, bool) or not isinstance(sent, (int, float)) or not math.isfinite(sent) or sent < 0:
        raise DatagramError("field 'time' missing or not a timestamp")
    out["time"] = float(sent)
    return out


def _check_query(fields: dict) -> dict:
    node, nonce = fields.get("node"), fields.get("nonce")
    if not isinstance(node, str) or not is_name(node):
        raise DatagramError("field 'node' missing or not a node id")
    if not isinstance(nonce, str) or not NONCE.fullmatch(nonce):
        raise DatagramError("field 'nonce' missing or not 32 to 64 lower-case hex digits")
    return {"node": node, "nonce": nonce}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.fullmatch(host)) and not host.replace(".", "").isdigit()


# ---------------------------------------------------------------- the same bytes in an mDNS TXT record

def to_txt(datagram: bytes, query_port: int | None = None) -> dict[str, str]:
    """The datagram as TXT properties `d0`, `d1`, ... of base64 (each short enough for a TXT string),
    and `q`, the port where the server answers queries, when it answers any."""
    text = base64.b64encode(datagram).decode("ascii")
    chunks = [text[i:i + MDNS_CHUNK] for i in range(0, len(text), MDNS_CHUNK)]
    properties = {f"d{i}": chunk for i, chunk in enumerate(chunks)}
    if query_port is not None:
        properties[MDNS_QUERY_PORT_KEY] = str(query_port)
    return properties


def _txt_text(properties: dict) -> dict[str, str]:
    return {(k.decode("ascii", "replace") if isinstance(k, bytes) else str(k)):
            (v.decode("ascii", "replace") if isinstance(v, bytes) else "" if v is None else str(v))
            for k, v in properties.items()}


def from_txt(properties: dict, secret: str | bytes | None = None) -> Announcement:
    """Reassemble and `decode` a datagram published with `to_txt`; DatagramError if anything is off.

    Keys and values may be bytes (as zeroconf hands them over) or text.
    """
    text = _txt_text(properties)
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


def query_port_from_txt(properties: dict) -> int | None:
    """The `q` property of a TXT record (not signed: a wrong one only makes the query go unanswered)."""
    value = _txt_text(properties).get(MDNS_QUERY_PORT_KEY, "")
    return int(value) if re.fullmatch(r"[0-9]{1,5}", value) and 1 <= int(value) <= 65535 else None
