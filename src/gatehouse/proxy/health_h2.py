"""The HTTP/2 form of an active health check: ``h2c://`` endpoints, and
``codec_client_type: HTTP2``.

An ``h2c`` upstream (a gRPC server, typically) speaks only HTTP/2 with prior knowledge:
the HTTP/1.1 ``GET`` of :func:`gatehouse.proxy.health.probe` gets HTTP/2 frames back and
would mark it unhealthy. Here the same ``GET path`` goes out as one HTTP/2 stream on a
new connection (preface, SETTINGS, HEADERS with END_STREAM), and the ``:status`` of the
response is the result, as Envoy does with ``codec_client_type: HTTP2``. Over TLS the
route's ``h2`` client context is used (ALPN ``h2``, the route's trust and certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import h2.config
import h2.connection
import h2.events
import h2.exceptions

#: Bytes read from a health-check connection before giving up on a status, bytes.
MAX_PROBE_READ_BYTES = 64 * 1024


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
    fails (the caller bounds the time)."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl_context, server_hostname=server_name if ssl_context else None
        )
        if ssl_context is not None:
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                return 0
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(
            sid,
            [
                (b":method", b"GET"),
                (b":scheme", b"https" if ssl_context else b"http"),
                (b":authority", authority),
                (b":path", path),
                (b"user-agent", b"gatehouse/health-check"),
            ],
            end_stream=True,
        )
        writer.write(conn.data_to_send())
        read = 0
        while read < MAX_PROBE_READ_BYTES:
            data = await reader.read(16384)
            if not data:
                return None
            read += len(data)
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                return 0  # not HTTP/2: a failed check, like a bad status
            for event in events:
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                    for name, value in event.headers or ():
                        if bytes(name) == b":status" and bytes(value).isdigit():
                            return int(bytes(value))
                    return 0
                if isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    return 0
            writer.write(conn.data_to_send())
        return 0
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
