"""HTTP/2 connections to upstreams (``to: h2c://…``, and https upstreams for gRPC).

One :class:`H2UpstreamConnection` carries many requests at once, each an
:class:`UpstreamStream`; :class:`H2Pool` keeps one or more per endpoint and opens another
when the open ones are full (the server's ``SETTINGS_MAX_CONCURRENT_STREAMS``) or going
away (GOAWAY). Responses are pushed into an :class:`H2ResponseSink` as they arrive,
trailers included (gRPC's status travels in them).

Back-pressure both ways, per stream: request bytes wait for the upstream's window and,
past :data:`REQUEST_HIGH_WATER`, pause the client side (``producer``); response bytes
are acknowledged (the upstream's window reopened) only while the client side is not
paused.

Streams never outlive their request: a client that goes away resets its upstream stream
(``CANCEL``), and a response that ends while the request is still being sent resets the
request side, so the connection's count of open streams cannot creep up. Connections
without streams close after :data:`~gatehouse.http.upstream.POOL_IDLE_TIMEOUT_S`, and
all of them when the pool closes (worker shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import deque
from typing import Protocol

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from ...errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamRefused
from ..upstream import POOL_IDLE_TIMEOUT_S, Endpoint, connect_error
from .flow import take_window

log = logging.getLogger("gatehouse.upstream")

Header = tuple[bytes, bytes]

#: Receive window per upstream stream, and for the connection, bytes.
STREAM_WINDOW_BYTES = 256 * 1024
CONNECTION_WINDOW_BYTES = 4 * 1024 * 1024
#: Request bytes queued on a stream (window closed) before the client side is paused.
REQUEST_HIGH_WATER = 256 * 1024
#: Largest upstream response header list, bytes.
MAX_RESPONSE_HEADER_LIST = 64 * 1024


class H2ResponseSink(Protocol):
    """Receives one upstream response on one stream."""

    def on_response_head(
        self, status: int, headers: list[Header], content_length: int | None
    ) -> None: ...

    def on_response_body(self, chunk: bytes) -> None: ...

    def on_response_end(self, trailers: list[Header] | None) -> None: ...

    def on_response_error(self, error: UpstreamError) -> None: ...


class Producer(Protocol):
    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class UpstreamStream:
    """One request on an upstream HTTP/2 connection."""

    __slots__ = (
        "_end_pending",
        "_end_trailers",
        "_ended",
        "_paused",
        "_pending",
        "_pending_bytes",
        "_producer_paused",
        "_withheld",
        "conn",
        "done",
        "producer",
        "received_any",
        "sink",
        "stream_id",
        "trailers",
    )

    def __init__(self, conn: H2UpstreamConnection, stream_id: int, sink: H2ResponseSink) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.sink = sink
        #: The client side to pause while the upstream's window is closed.
        self.producer: Producer | None = None
        self.received_any = False
        self.trailers: list[Header] | None = None
        self.done = False
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._end_pending = False
        #: Request trailers to end the request with (``end_body``), or ``None``.
        self._end_trailers: list[Header] | None = None
        #: The request side is closed (END_STREAM sent).
        self._ended = False
        self._producer_paused = False
        self._paused = False
        self._withheld = 0

    # -- request body -------------------------------------------------------------------

    def send_body(self, chunk: bytes) -> None:
        if self.done or not chunk:
            return
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        self.drain()

    def end_body(self, trailers: list[Header] | None = None) -> None:
        """End the request once the queued body is sent, with ``trailers`` when given."""
        self._end_trailers = trailers or None
        self._end_pending = True
        self.drain()

    def drain(self) -> None:
        if self.done:
            return
        h2conn = self.conn.h2
        sid = self.stream_id
        pending = self._pending
        try:
            while (chunk := take_window(h2conn, sid, pending)) is not None:
                self._pending_bytes -= len(chunk)
                h2conn.send_data(sid, chunk)
            if not pending and self._end_pending:
                self._end_pending = False
                self._ended = True
                trailers = self._end_trailers
                if trailers is not None:
                    h2conn.send_headers(sid, trailers, end_stream=True)
                else:
                    h2conn.end_stream(sid)
        except (h2.exceptions.H2Error, KeyError):
            pass  # the stream was reset: the response side reports it
        producer = self.producer
        if producer is not None:
            want = self._pending_bytes > REQUEST_HIGH_WATER
            if want != self._producer_paused:
                self._producer_paused = want
                if want:
                    producer.pause_reading()
                else:
                    producer.resume_reading()
        self.conn.flush()

    # -- Producer for the response (the client is slow: stop acknowledging) ------------

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        if self._withheld:
            n, self._withheld = self._withheld, 0
            self._ack(n)
            self.conn.flush()

    def received(self, n: int) -> None:
        if self._paused:
            self._withheld += n
        else:
            self._ack(n)

    def _ack(self, n: int) -> None:
        with contextlib.suppress(h2.exceptions.H2Error, KeyError):
            self.conn.h2.acknowledge_received_data(n, self.stream_id)

    def cancel(self) -> None:
        """The client went away or timed out: reset the stream (the connection stays)."""
        if self.done:
            return
        self.done = True
        self.conn.forget(self)
        with contextlib.suppress(h2.exceptions.H2Error, KeyError):
            self.conn.h2.reset_stream(self.stream_id, ErrorCodes.CANCEL)
        self.conn.flush()

    def response_ended(self) -> None:
        """The response is complete: if the request is still being sent, stop it (RFC
        9113 §8.1), so the stream closes on our side too and frees its slot."""
        self._pending.clear()
        self._pending_bytes = 0
        if not self._ended:
            self._ended = True
            with contextlib.suppress(h2.exceptions.H2Error, KeyError):
                self.conn.h2.reset_stream(self.stream_id, ErrorCodes.CANCEL)
        if self._producer_paused and self.producer is not None:
            self._producer_paused = False
            self.producer.resume_reading()


class H2UpstreamConnection(asyncio.Protocol):
    """One HTTP/2 connection to an upstream, many streams."""

    def __init__(self, pool: H2Pool, endpoint: Endpoint) -> None:
        self.pool = pool
        self.endpoint = endpoint
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_inbound_headers=True,
            normalize_inbound_headers=True,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config)
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW_BYTES,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_RESPONSE_HEADER_LIST,
            },
        )
        self.h2.decoder.max_header_list_size = MAX_RESPONSE_HEADER_LIST
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, UpstreamStream] = {}
        self.closed = False
        #: No new streams: the upstream sent GOAWAY, or the connection failed.
        self.going_away = False
        #: Loop time since when no stream is open (for the pool's idle sweep).
        self.idle_since = time.monotonic()

    @property
    def available(self) -> bool:
        if self.closed or self.going_away:
            return False
        limit = self.h2.remote_settings.max_concurrent_streams
        return len(self.streams) < min(limit, 1000)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW_BYTES - 65_535)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        streams = list(self.streams.values())
        self.streams.clear()
        # Named, since under TLS 1.3 an upstream that refuses our client certificate
        # does so after the handshake: this line is what the operator sees of it.
        reason = f"upstream {self.endpoint.host}:{self.endpoint.port} closed the connection"
        for stream in streams:
            self._fail(stream, reason)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.warning("upstream HTTP/2 protocol error from %s: %s", self.endpoint.host, exc)
            self.flush()
            self.abort()
            return
        for event in events:
            self._dispatch(event)
        self.flush()

    def _dispatch(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None) or 0
        stream = self.streams.get(sid)
        if isinstance(event, h2.events.DataReceived):
            if stream is None:
                with contextlib.suppress(h2.exceptions.H2Error, KeyError):
                    self.h2.acknowledge_received_data(event.flow_controlled_length or 0, sid)
                return
            stream.sink.on_response_body(event.data or b"")
            stream.received(event.flow_controlled_length or 0)
        elif isinstance(event, h2.events.ResponseReceived):
            if stream is None:
                return
            stream.received_any = True
            status = 0
            length: int | None = None
            headers: list[Header] = []
            for name, value in event.headers or ():
                name_b, value_b = bytes(name), bytes(value)
                if name_b == b":status":
                    status = int(value_b)
                elif name_b[:1] != b":":
                    if name_b == b"content-length" and value_b.isdigit():
                        length = int(value_b)
                    headers.append((name_b, value_b))
            stream.sink.on_response_head(status, headers, length)
        elif isinstance(event, h2.events.TrailersReceived):
            if stream is not None:
                stream.trailers = [(bytes(k), bytes(v)) for k, v in event.headers or ()]
        elif isinstance(event, h2.events.StreamEnded):
            if stream is not None:
                stream.done = True
                stream.response_ended()
                self.forget(stream)
                stream.sink.on_response_end(stream.trailers)
        elif isinstance(event, h2.events.StreamReset):
            if stream is not None:
                stream.done = True
                self.forget(stream)
                self._fail(
                    stream,
                    f"upstream reset the stream ({event.error_code})",
                    refused=event.error_code == ErrorCodes.REFUSED_STREAM
                    and not stream.received_any,
                )
        elif isinstance(event, h2.events.WindowUpdated):
            targets = [stream] if stream is not None else list(self.streams.values())
            for s in targets:
                if s is not None:
                    s.drain()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for s in list(self.streams.values()):
                s.drain()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.going_away = True
            self.pool.discard(self)
            last = event.last_stream_id or 0
            for s in [s for s in self.streams.values() if s.stream_id > last]:
                self.forget(s)
                self._fail(s, "upstream went away before the request", refused=True)
            if not self.streams:
                self.close()

    def _fail(self, stream: UpstreamStream, reason: str, refused: bool = False) -> None:
        stream.done = True
        if refused:
            stream.sink.on_response_error(UpstreamRefused(reason))
        elif not stream.received_any:
            stream.sink.on_response_error(UpstreamConnectError(reason))
        else:
            stream.sink.on_response_error(UpstreamProtocolError(reason))

    # -- requests -----------------------------------------------------------------------

    def open_stream(
        self, headers: list[Header], sink: H2ResponseSink, *, end_stream: bool
    ) -> UpstreamStream:
        """Send a request's headers on a new stream.

        Raises:
            UpstreamRefused: the connection cannot take a stream (closing, or full by the
                ``h2`` state machine's count); nothing was sent.
        """
        try:
            sid = self.h2.get_next_available_stream_id()
            stream = UpstreamStream(self, sid, sink)
            self.h2.send_headers(sid, headers, end_stream=end_stream)
        except h2.exceptions.H2Error as exc:
            self.going_away = True
            self.pool.discard(self)
            if not self.streams:
                self.close()
            raise UpstreamRefused(f"upstream connection takes no new stream: {exc}") from exc
        stream._ended = end_stream
        self.streams[sid] = stream
        self.flush()
        return stream

    def forget(self, stream: UpstreamStream) -> None:
        self.streams.pop(stream.stream_id, None)
        if not self.streams:
            self.idle_since = time.monotonic()
            if self.going_away:
                self.close()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(h2.exceptions.H2Error):
            self.h2.close_connection()
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class H2Pool:
    """Open HTTP/2 upstream connections per endpoint."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._conns: dict[str, list[H2UpstreamConnection]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def take(self, endpoint: Endpoint) -> H2UpstreamConnection | None:
        for conn in self._conns.get(endpoint.key, ()):
            if conn.available:
                return conn
        return None

    async def connect(
        self, endpoint: Endpoint, timeout_s: float, ssl_context: ssl.SSLContext | None
    ) -> H2UpstreamConnection:
        """Open a connection (h2c when ``ssl_context`` is ``None``).

        Raises:
            UpstreamConnectError: refused, unreachable, TLS failure, no ``h2`` in ALPN, timeout.
        """
        where = f"{endpoint.host}:{endpoint.port}"
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())
        try:
            transport, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: H2UpstreamConnection(self, endpoint),
                    endpoint.host,
                    endpoint.port,
                    ssl=ssl_context,
                    server_hostname=(endpoint.server_name or endpoint.host)
                    if ssl_context
                    else None,
                ),
                timeout=timeout_s if timeout_s > 0 else None,
            )
        except (TimeoutError, OSError) as exc:
            raise connect_error(endpoint, exc) from exc
        if ssl_context is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if alpn != "h2":
                transport.close()
                raise UpstreamConnectError(f"{where} did not negotiate HTTP/2 (ALPN {alpn!r})")
        self._conns.setdefault(endpoint.key, []).append(conn)
        return conn

    def discard(self, conn: H2UpstreamConnection) -> None:
        conns = self._conns.get(conn.endpoint.key)
        if conns and conn in conns:
            conns.remove(conn)

    async def _sweep(self) -> None:
        """Close connections that carried no stream for ``POOL_IDLE_TIMEOUT_S`` (also
        those to endpoints a reload removed)."""
        while True:
            await asyncio.sleep(POOL_IDLE_TIMEOUT_S / 4)
            self.close_idle(time.monotonic() - POOL_IDLE_TIMEOUT_S)

    def close_idle(self, cutoff: float) -> None:
        """Close every connection without streams since before ``cutoff`` (loop time)."""
        for conns in list(self._conns.values()):
            for conn in [c for c in conns if not c.streams and c.idle_since < cutoff]:
                conns.remove(conn)
                conn.close()

    def close_all(self) -> None:
        """Close every connection (GOAWAY, then the socket): the worker is stopping."""
        for conns in self._conns.values():
            for conn in list(conns):
                conn.close()
        self._conns.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
