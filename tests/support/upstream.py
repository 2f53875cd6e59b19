"""Scriptable upstream servers on loopback that record exactly what they receive.

:class:`Upstream` is a raw-socket HTTP/1.1 server (asyncio streams, our own minimal parser,
so every byte is under the test's control). For each request it records a
:class:`RecordedRequest` (raw head bytes, parsed headers, the body up to
:data:`BODY_RECORD_LIMIT` and its full size), then runs an :class:`Action` chosen by
``upstream.handler(request)`` to write the response. Connection opens and closes are
counted, so tests can assert connection reuse and that a cancelled request closed the
upstream connection.

Actions: :class:`Respond` (fixed response), :class:`Chunked`, :class:`ReadToClose`,
:class:`SlowHead`, :class:`SlowBody`, :class:`Interim` (1xx first), :class:`Echo`
(request body back), :class:`Download` (big generated body), :class:`Reset` (RST
mid-response), :class:`Raw` (any bytes, e.g. garbage), :class:`Hang` (never answers).

:class:`WebSocketEcho` is a ``websockets`` server that echoes messages;
:func:`closed_port` returns a loopback port nobody listens on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .loop import LoopThread

#: Request-body bytes kept per recorded request (the size is always counted).
BODY_RECORD_LIMIT = 1024 * 1024
#: Raw bytes kept per connection.
RAW_RECORD_LIMIT = 1024 * 1024
_READ_SIZE = 256 * 1024


@dataclass
class RecordedRequest:
    """One request as the upstream received it."""

    conn_id: int
    method: str
    target: str
    version: str
    #: (name, value) pairs in arrival order, names as sent.
    headers: list[tuple[str, str]]
    raw_head: bytes
    body: bytes = b""
    body_size: int = 0
    chunked: bool = False
    complete: bool = False

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def header_names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


class Action:
    """How the upstream answers one request. ``run`` returns False to close the connection."""

    #: Read the request body before running (False: the action reads it, or never does).
    read_body_first = True

    async def run(
        self,
        up: Upstream,
        req: RecordedRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        raise NotImplementedError


def _head(status: int, headers: Iterable[tuple[str, str]], reason: str = "") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason or _REASONS.get(status, 'Status')}\r\n"]
    lines += [f"{k}: {v}\r\n" for k, v in headers]
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


_REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    103: "Early Hints",
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    404: "Not Found",
    500: "Internal Server Error",
}


@dataclass
class Respond(Action):
    """A fixed response; ``body`` is framed with Content-Length unless ``length`` is False."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    length: bool = True
    close: bool = False

    async def run(self, up, req, reader, writer):  # type: ignore[no-untyped-def]
        headers = list(self.headers)
        if self.length:
            headers.append(("Content-Length", str(len(self.body))))
        if self.close:
            headers.append(("Connection", "close"))
        writer.write(_head(self.status, headers) + (b"" if req.method == "HEAD" else self.body))
        await writer.drain()
        return not self.close


@dataclass
class Chunked(Action):
    """A chunked response, one chunk per item (with optional trailers)."""

    chunks: list[bytes] = field(default_factory=lambda: [b"hello ", b"chunked ", b"world"])
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0

    async def run(self, up, req, reader, writer):  # type: ignore[no-untyped-def]
        writer.write(_head(self.status, [*self.headers, ("Transfer-Encoding", "chunked")]))
        for chunk in self.chunks:
            if chunk:
                writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            await writer.drain()
            if self.delay:
                await asyncio.sleep(self.delay)
        tail = "".join(f"{k}: {v}\r\n" for k, v in self.trailers).encode()
        writer.write(b"0\r\n" + tail + b"\r\n")
        await writer.drain()
        return True


@dataclass
class ReadToClose(Action):
    """A response without Content-Length or chunking: the body ends when the connection closes."""

    body: bytes = b"read until close"
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)

    async def run(self, up, req, reader, writer):  # type: ignore[no-untyped-def]
        writer.write(_head(self.status, self.headers) + self.body)
        await writer.drain()
        return False


@dataclass
class SlowHead(Action):
    """Wait ``delay`` seconds before answering with ``then``."""

    delay: float = 1.0
    then: Action = field(default_factory=Respond)

    async def run(self, up, req, reader, writer):  # type: ignore[no-untyped-def]
        await asyncio.sleep(self.delay)
        return await self.then.run(up, req, reader, writer)


@dataclass
class SlowBody(Action):
    """Send the head at once, then each part of the body after ``delay`` seconds."""

    parts: list[bytes] = field(default_factory=lambda: [b"a" * 10, b"b" * 10])
    delay: float = 0.5
    status: int = 200

    async def run(self, up, req, reader, writer):  # type: ignore[no-untyped-def]
        total = sum(len(p) for p in self.parts)
        writer.write(_head(self.status, [("Content-Length", str(total))]))
        await writer.drain()
        for part in self.parts:
            await asyncio.sleep(self.delay)
            writer.write(part)
            await writer.drain()
        return True


@dataclass
class Interim(Action):
    """Send an interim 1xx response (e.g. ``103 Early Hints``) before ``then``."""

    status: int = 103
    headers: list[tuple[str, str]] = field(
        default_factory=lambda: [("Link", "</s.css>; rel=preload")]
    )
    then: Action = field(default_factory=lambda: Respond(body=b"final"))

    async def run(self, up, req, reader, writer):  # type: ignore[no-untyped-def]
        writer.write(_head(self.status, self.headers))
        await writer.drain()
        return await self.then.run(up, req, reader, writer)


@dataclass
class Echo(Action):
    """200 with the request body as the body; the request head goes in ``X-Echo-*`` headers."""

    async def run(self, up, req, reader, writer):  # type: ignore[no-untyped-def]
        head = json.dumps({"method": req.method, "target": req.target}).encode()
        writer.write(
            _head(
                200,
                [
                    ("Content-Length", str(len(req.body))),
                    ("X-Echo-Request", head.decode()),
                    ("X-Echo-Body-Size", str(req.body_size)),
                ],
            )
            + req.body
        )
        await writer.drain()
        return True


@dataclass
class Download(Action):
    """A large generated body of ``size`` bytes (``b"x"`` repeated), with Content-Length or chunked."""

    size: int = 1 << 30
    chunked: bool = False
    block: int = 1 << 20

    async def run(self, up, req, reader, writer):  # type: ignore[no-untyped-def]
        framing = (
            ("Transfer-Encoding", "chunked") if self.chunked else ("Content-Length", str(self.size))
        )
        writer.write(_head(200, [framing, ("Content-Type", "application/octet-stream")]))
        block = b"x" * self.block
        left = self.size
        while left > 0:
            piece = block if left >= len(block) else block[:left]
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if self.chunked else piece)
            left -= len(piece)
            await writer.drain()
        if self.chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


@dataclass
class Reset(Action):
    """Announce ``length`` bytes, send ``partial`` of them, then reset the connection (RST)."""

    length: int = 1000
    partial: bytes = b"partial"

    async def run(self, up, req, reader, writer):  # type: ignore[no-untyped-def]
        writer.write(_head(200, [("Content-Length", str(self.length))]) + self.partial)
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return False


@dataclass
class Raw(Action):
    """Write ``data`` verbatim (garbage, a broken head...), then close unless ``keep``."""

    data: bytes = b"this is not HTTP\r\n\r\n"
    keep: bool = False

    async def run(self, up, req, reader, writer):  # type: ignore[no-untyped-def]
        writer.write(self.data)
        await writer.drain()
        return self.keep


@dataclass
class Hang(Action):
    """Never answer; return when the proxy closes the connection."""

    async def run(self, up, req, reader, writer):  # type: ignore[no-untyped-def]
        with contextlib.suppress(ConnectionError):
            while await reader.read(_READ_SIZE):
                pass
        return False


class Upstream:
    """A recording HTTP/1.1 upstream on 127.0.0.1, port 0, served from a :class:`LoopThread`."""

    def __init__(
        self, loop: LoopThread, name: str = "upstream", action: Action | None = None
    ) -> None:
        self.loop = loop
        self.name = name
        default = action or Respond(
            body=f"hello from {name}".encode(), headers=[("X-Upstream", name)]
        )
        self.handler: Callable[[RecordedRequest], Action] = lambda req: default
        self.requests: list[RecordedRequest] = []
        self.raw: dict[int, bytearray] = {}
        self.opened: list[int] = []
        self.closed: list[int] = []
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self.port = 0
        self.loop.run(self._start())

    # -- control ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def respond(self, action: Action) -> None:
        """Answer every request with ``action``."""
        self.handler = lambda req: action

    def reset(self) -> None:
        """Forget what was recorded (connections stay open)."""
        self.requests.clear()
        self.raw.clear()
        self.opened.clear()
        self.closed.clear()

    @property
    def raw_bytes(self) -> bytes:
        return b"".join(bytes(v) for v in self.raw.values())

    def close(self) -> None:
        self.loop.run(self._stop())

    # -- server -------------------------------------------------------------------------

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _record_raw(self, conn_id: int, data: bytes) -> None:
        buf = self.raw.setdefault(conn_id, bytearray())
        if len(buf) < RAW_RECORD_LIMIT:
            buf += data[: RAW_RECORD_LIMIT - len(buf)]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = next(self._ids)
        self.opened.append(conn_id)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        self._record_raw(conn_id, exc.partial)
                    break
                self._record_raw(conn_id, head)
                req = _parse_head(conn_id, head)
                self.requests.append(req)
                action = self.handler(req)
                if action.read_body_first:
                    await self._read_body(conn_id, req, reader)
                keep = await action.run(self, req, reader, writer)
                if not keep or (req.header("connection") or "").lower() == "close":
                    break
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self.closed.append(conn_id)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_body(
        self, conn_id: int, req: RecordedRequest, reader: asyncio.StreamReader
    ) -> None:
        te = (req.header("transfer-encoding") or "").lower()
        if "chunked" in te:
            req.chunked = True
            while True:
                line = await reader.readuntil(b"\r\n")
                self._record_raw(conn_id, line)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers up to the blank line
                        tline = await reader.readuntil(b"\r\n")
                        self._record_raw(conn_id, tline)
                        if tline == b"\r\n":
                            break
                    break
                await self._read_exact(conn_id, req, reader, size)
                crlf = await reader.readexactly(2)
                self._record_raw(conn_id, crlf)
        else:
            length = int(req.header("content-length") or 0)
            await self._read_exact(conn_id, req, reader, length)
        req.complete = True

    async def _read_exact(
        self, conn_id: int, req: RecordedRequest, reader: asyncio.StreamReader, n: int
    ) -> None:
        while n > 0:
            data = await reader.read(min(n, _READ_SIZE))
            if not data:
                raise ConnectionResetError("EOF in body")
            n -= len(data)
            req.body_size += len(data)
            if len(req.body) < BODY_RECORD_LIMIT:
                req.body += data[: BODY_RECORD_LIMIT - len(req.body)]
                self._record_raw(conn_id, data)


def _parse_head(conn_id: int, head: bytes) -> RecordedRequest:
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, version = (lines[0].split(" ", 2) + ["", ""])[:3]
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    return RecordedRequest(conn_id, method, target, version, headers, head)


class WebSocketEcho:
    """A WebSocket server (the ``websockets`` package) echoing every message; records paths."""

    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.paths: list[str] = []
        self.request_headers: list[dict[str, str]] = []
        self.closed = 0
        self.port = 0
        self._server: object = None
        self.loop.run(self._start())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        from websockets.asyncio.server import serve

        async def handler(ws) -> None:  # type: ignore[no-untyped-def]
            self.paths.append(ws.request.path)
            self.request_headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
            from websockets.exceptions import ConnectionClosed

            try:
                async for message in ws:
                    await ws.send(message)
            except ConnectionClosed:
                pass
            finally:
                self.closed += 1

        self._server = await serve(handler, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()  # type: ignore[attr-defined]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)  # type: ignore[attr-defined]

        self.loop.run(stop())


def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
