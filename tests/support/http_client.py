"""A raw HTTP/1.1 client on sockets, for tests that send what no well-behaved client would."""

from __future__ import annotations

import json
import socket


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    """A TCP connection to 127.0.0.1:`port` from `source` (any address of 127.0.0.0/8 on Linux)."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One answer: its head, then Content-Length bytes of body (or up to the server's close).

    The socket's timeout bounds a server that never answers.  A reset after a whole answer
    has arrived is no error.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _receive(sock, data)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0]:
        raise ConnectionError("closed without an answer")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    status = int(lines[0].split()[1])
    length = "0" if status in (204, 304) else headers.get("content-length")
    while length is None or len(body) < int(length):
        chunk = _receive(sock, body)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _receive(sock: socket.socket, received: bytes) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        if received:
            return b""
        raise


def exchange(port: int, data: bytes, source: str = "127.0.0.1") -> tuple[int, dict]:
    """Send `data` on a new connection and read the JSON answer, without closing our side first."""
    status, headers, body = exchange_raw(port, data, source)
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:200])
    return status, json.loads(body)


def exchange_raw(port: int, data: bytes, source: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    with connect(port, source) as sock:
        sock.sendall(data)
        return read_response(sock)


def get(target: str, headers: list[str] = (), version: str = "1.1") -> bytes:
    return (f"GET {target} HTTP/{version}\r\nHost: x\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode()


def post(path: str, headers: list[str], body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode() + body


def closed_by_server(sock: socket.socket, timeout: float = 10) -> bool:
    """Whether the server closed `sock` (EOF or reset) within `timeout`, reading and dropping any answer."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def trickle(port: int, start: bytes, byte: bytes = b"a", pause: float = 0.05, rounds: int = 400):
    """Send `start`, then one byte every `pause` s until the server answers or closes: (status, answer) or None."""
    with connect(port) as sock:
        sock.sendall(start)
        sock.settimeout(pause)
        for _ in range(rounds):  # a bound on failure: the server should close long before
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
                return None  # closed without an answer
            except (TimeoutError, BlockingIOError):
                pass
            except ConnectionResetError:
                return None
            try:
                if byte:
                    sock.send(byte)
            except OSError:
                break
        else:
            raise AssertionError(f"the server still held the connection after {rounds} rounds")
        sock.settimeout(10)
        status, _, body = read_response(sock)
        return status, json.loads(body)
