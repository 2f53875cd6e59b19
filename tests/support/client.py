"""Raw-bytes HTTP/1.1 client helpers: send exactly the bytes a test wants, read what comes back."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    """A response read off the wire (minimal parser, enough for assertions)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes
    interim: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def connect(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the peer closes (or ``timeout`` passes, or the connection is reset)."""
    sock.settimeout(timeout)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not data:
            break
        out += data
    return bytes(out)


def send_raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a new connection and return everything read until the server closes."""
    with connect(port, timeout=timeout) as sock:
        sock.sendall(data)
        return read_all(sock, timeout)


class _Buf:
    def __init__(self, sock: socket.socket, initial: bytes = b"") -> None:
        self.sock = sock
        self.data = bytearray(initial)
        self.eof = False

    def fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            return False
        self.data += chunk
        return True

    def until(self, sep: bytes) -> bytes:
        while True:
            i = self.data.find(sep)
            if i >= 0:
                out = bytes(self.data[: i + len(sep)])
                del self.data[: i + len(sep)]
                return out
            if not self.fill():
                raise ConnectionError("connection closed before " + repr(sep))

    def exactly(self, n: int) -> bytes:
        while len(self.data) < n:
            if not self.fill():
                raise ConnectionError(f"connection closed with {len(self.data)}/{n} bytes")
        out = bytes(self.data[:n])
        del self.data[:n]
        return out

    def rest(self) -> bytes:
        while self.fill():
            pass
        out = bytes(self.data)
        self.data.clear()
        return out


def parse_head(head: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers.append((k, v.strip()))
    return status, reason, headers


class RawConnection:
    """A keep-alive connection that reads one framed response at a time."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = connect(port, timeout=timeout)
        self.buf = _Buf(self.sock)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        path: str,
        host: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
    ) -> RawResponse:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in headers or []]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        return self.read_response(head_only=method == "HEAD")

    def read_response(self, head_only: bool = False) -> RawResponse:
        """Read one response (skipping interim 1xx ones, which are listed in ``interim``)."""
        interim: list[int] = []
        raw = bytearray()
        while True:
            head = self.buf.until(b"\r\n\r\n")
            raw += head
            status, reason, headers = parse_head(head[:-4])
            if 100 <= status < 200 and status != 101:
                interim.append(status)
                continue
            break
        hmap = {k.lower(): v for k, v in headers}
        if head_only or status in (204, 304) or status == 101:
            body = b""
        elif "chunked" in hmap.get("transfer-encoding", "").lower():
            body = b""
            while True:
                line = self.buf.until(b"\r\n")
                raw += line
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while True:
                        t = self.buf.until(b"\r\n")
                        raw += t
                        if t == b"\r\n":
                            break
                    break
                chunk = self.buf.exactly(size + 2)
                raw += chunk
                body += chunk[:-2]
        elif "content-length" in hmap:
            body = self.buf.exactly(int(hmap["content-length"]))
            raw += body
        else:
            body = self.buf.rest()
            raw += body
        return RawResponse(status, reason, headers, body, bytes(raw), interim)

    def is_closed(self, timeout: float = 2.0) -> bool:
        """True when the server closed the connection within ``timeout`` (nothing else pending)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return data == b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_response(raw: bytes, head_only: bool = False) -> RawResponse:
    """Parse the first response in ``raw`` (as returned by :func:`send_raw`)."""
    sock = socket.socket()  # never connected: _Buf only reads from its initial data
    try:
        buf = _Buf(sock, raw)
        buf.eof = True
        conn = RawConnection.__new__(RawConnection)
        conn.sock = sock
        conn.buf = buf
        return conn.read_response(head_only)
    finally:
        sock.close()
