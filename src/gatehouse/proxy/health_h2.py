"""The HTTP/2 forms of an active health check: an HTTP ``GET`` for ``h2c://`` endpoints
(and ``codec_client_type: HTTP2``), and Envoy's ``grpc_health_check``.

An ``h2c`` upstream (a gRPC server, typically) speaks only HTTP/2 with prior knowledge:
the HTTP/1.1 ``GET`` of :func:`gatehouse.proxy.health.probe` gets HTTP/2 frames back and
would mark it unhealthy. Here each check is one HTTP/2 stream on a new connection
(preface, SETTINGS, HEADERS, and for gRPC one DATA frame); over TLS the route's ``h2``
client context is used (ALPN ``h2``, the route's trust and certificate).

The gRPC check is the standard health-checking protocol (``grpc.health.v1.Health/Check``,
https://github.com/grpc/grpc/blob/master/doc/health-checking.md): healthy only when the
call succeeds (``grpc-status: 0``) and the answer's status is ``SERVING``, as Envoy has it.
The two protobuf messages have one field each, so they are written and read here (a
protobuf runtime for 4 bytes is not worth a dependency).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions

#: Bytes read from a health-check connection before giving up on an answer, bytes.
MAX_PROBE_READ_BYTES = 64 * 1024
#: The health-checking method (doc/health-checking.md).
GRPC_HEALTH_PATH = b"/grpc.health.v1.Health/Check"
#: ``HealthCheckResponse.ServingStatus.SERVING``.
SERVING = 1


@dataclass(slots=True)
class _Answer:
    """What one stream received: ``status`` 0 when the peer answered no HTTP/2 response."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)


async def _one_stream(
    host: str,
    port: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes | None,
    ssl_context: ssl.SSLContext | None,
    server_name: str | None,
    *,
    whole: bool,
) -> _Answer | None:
    """Send one request on a new HTTP/2 connection; the answer (its head only unless
    ``whole``), or ``None`` when the connection fails (the caller bounds the time)."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    writer: asyncio.StreamWriter | None = None
    answer = _Answer()
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl_context, server_hostname=server_name if ssl_context else None
        )
        if ssl_context is not None:
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                return answer
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            conn.send_data(sid, body, end_stream=True)
        writer.write(conn.data_to_send())
        read = 0
        while read < MAX_PROBE_READ_BYTES:
            data = await reader.read(16384)
            if not data:
                return None if not answer.headers else answer
            read += len(data)
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                return _Answer()  # not HTTP/2: a failed check, like a bad status
            for event in events:
                if getattr(event, "stream_id", sid) not in (sid, 0):
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    answer.headers = [(bytes(k), bytes(v)) for k, v in event.headers or ()]
                    for name, value in answer.headers:
                        if name == b":status" and value.isdigit():
                            answer.status = int(value)
                    if not whole:
                        return answer
                elif isinstance(event, h2.events.DataReceived):
                    answer.body += event.data or b""
                elif isinstance(event, h2.events.TrailersReceived):
                    answer.trailers = [(bytes(k), bytes(v)) for k, v in event.headers or ()]
                elif isinstance(event, h2.events.StreamEnded):
                    return answer
                elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    return _Answer()
            writer.write(conn.data_to_send())
        return _Answer()
    except OSError:
        return None
    finally:
        if writer is not None:
            with contextlib.suppress(h2.exceptions.H2Error):
                conn.close_connection()
                writer.write(conn.data_to_send())
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


def _request_headers(
    method: bytes, authority: bytes, path: bytes, tls: bool
) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method),
        (b":scheme", b"https" if tls else b"http"),
        (b":authority", authority),
        (b":path", path),
        (b"user-agent", b"gatehouse/health-check"),
    ]


async def probe_h2(
    host: str,
    port: int,
    authority: bytes,
    path: bytes,
    ssl_context: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> int | None:
    """The ``:status`` of ``GET path`` over HTTP/2 (h2c without ``ssl_context``), 0 when
    the peer does not speak HTTP/2 or refuses the stream, ``None`` when the connection
    fails."""
    headers = _request_headers(b"GET", authority, path, ssl_context is not None)
    answer = await _one_stream(host, port, headers, None, ssl_context, server_name, whole=False)
    return None if answer is None else answer.status


async def probe_grpc(
    host: str,
    port: int,
    authority: bytes,
    service: str,
    ssl_context: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> bool | None:
    """Whether ``Health/Check`` for ``service`` answers SERVING; ``None`` when the
    connection fails."""
    headers = _request_headers(b"POST", authority, GRPC_HEALTH_PATH, ssl_context is not None)
    headers += [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
    name = service.encode("utf-8")
    message = b"\x0a" + _varint(len(name)) + name if name else b""  # field 1, string
    body = b"\x00" + len(message).to_bytes(4, "big") + message  # gRPC length prefix
    answer = await _one_stream(host, port, headers, body, ssl_context, server_name, whole=True)
    if answer is None:
        return None
    if answer.status != 200:
        return False
    # grpc-status in the trailers, or in the headers of a trailers-only answer.
    grpc_status = dict(answer.trailers).get(b"grpc-status") or dict(answer.headers).get(
        b"grpc-status"
    )
    if grpc_status != b"0":
        return False
    return _serving_status(bytes(answer.body)) == SERVING


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _serving_status(frame: bytes) -> int:
    """``HealthCheckResponse.status`` from one length-prefixed gRPC message (0 =
    UNKNOWN when absent, compressed, truncated or malformed)."""
    if len(frame) < 5 or frame[0] != 0:
        return 0
    length = int.from_bytes(frame[1:5], "big")
    message = frame[5 : 5 + length]
    if len(message) != length:
        return 0
    i = 0
    status = 0
    while i < len(message):
        key, i = _read_varint(message, i)
        if key < 0:
            return 0
        wire = key & 7
        if wire == 0:
            value, i = _read_varint(message, i)
            if value < 0:
                return 0
            if key >> 3 == 1:
                status = value
        elif wire == 2:
            size, i = _read_varint(message, i)
            if size < 0 or i + size > len(message):
                return 0
            i += size
        else:
            return 0  # no other wire types in this message
    return status


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    """A varint at ``data[i:]`` and the index after it; (-1, i) when malformed."""
    value = 0
    for shift in range(0, 64, 7):
        if i >= len(data):
            return -1, i
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
    return -1, i
