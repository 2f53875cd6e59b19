"""Per-request state on the downstream side: the request body stream and the response writer.

An :class:`Exchange` is created by :class:`~gatehouse.http.server.DownstreamProtocol` for each
request head and handed to the application (the proxy pipeline). It is deliberately a
push design, the shape of a splice rather than of an ASGI app: the upstream connection
calls :meth:`Exchange.write` for each body chunk it parses and the request body is pushed
into whatever sink the application attaches, so no coroutine runs per chunk. Back-pressure
travels through :class:`Producer` objects: when the client reads slowly the upstream stops
being read, and when the upstream accepts slowly the client stops being read.

Response framing towards the client (RFC 9112 §6): a known ``Content-Length`` passes
through; anything else is sent chunked to HTTP/1.1 clients and read-to-close to HTTP/1.0
clients. ``HEAD`` and ``1xx``/``204``/``304`` responses carry no body.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol, cast

from .messages import RequestHead, Response

if TYPE_CHECKING:
    from .server import DownstreamProtocol

#: Request-body bytes buffered before anyone consumes them, before the client is paused.
BODY_BUFFER_HIGH_WATER = 256 * 1024

_REASONS = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    204: b"No Content",
    206: b"Partial Content",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    495: b"SSL Certificate Error",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"Status")


class Producer(Protocol):
    """Something whose reading can be paused (a transport's protocol)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Channel(Protocol):
    """What an exchange needs of the downstream side that carries it: an HTTP/1.1
    connection (:class:`~gatehouse.http.server.DownstreamProtocol`) or one HTTP/2 stream
    (:class:`~gatehouse.http.h2.stream.StreamChannel`). This is the narrow interface
    the pipeline sees through ``Exchange.connection``."""

    loop: asyncio.AbstractEventLoop

    @property
    def write_paused(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def cork(self) -> None: ...

    def uncork(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def pause_reading_for_body(self) -> None: ...

    def resume_reading_for_body(self) -> None: ...

    def exchange_finished(self, ex: Exchange) -> None: ...

    def exchange_aborted(self, ex: Exchange) -> None: ...


class Phase(enum.Enum):
    """Where a request is in its life."""

    RECEIVING = "receiving"  # head received, handler running, response not started
    RESPONDING = "responding"  # response head sent, body streaming
    DONE = "done"  # response complete
    TUNNEL = "tunnel"  # upgraded to a byte tunnel
    ABORTED = "aborted"  # connection lost or cut


class BodyFraming(enum.Enum):
    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"  # read-to-close towards an HTTP/1.0 client
    NONE = "none"  # no body allowed


class Exchange:
    """One request/response on a downstream connection."""

    __slots__ = (
        "_body_buffer",
        "_body_buffered",
        "_body_end_sink",
        "_body_paused",
        "_body_sink",
        "_conn",
        "_continue_sent",
        "_framing",
        "_loop",
        "_on_abort",
        "_on_timeout",
        "body_done",
        "bytes_received",
        "bytes_sent",
        "client_ip",
        "head",
        "keep_alive",
        "last_activity",
        "peer_chain",
        "phase",
        "request_deadline",
        "request_trailers",
        "response_idle_timeout_s",
        "response_producer",
        "scheme",
        "server_port",
        "start_time",
        "status",
        "upgrade_rest",
    )

    def __init__(
        self,
        conn: Channel,
        head: RequestHead,
        *,
        client_ip: str,
        scheme: str,
        server_port: int,
        start_time: float,
    ) -> None:
        self._conn = conn
        self._loop = conn.loop
        self.head = head
        self.client_ip = client_ip
        self.scheme = scheme
        self.server_port = server_port
        self.start_time = start_time
        self.phase = Phase.RECEIVING
        self.keep_alive = head.keep_alive
        self.status = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.body_done = not head.has_body
        self._body_buffer: list[bytes] = []
        self._body_buffered = 0
        self._body_paused = False
        self._body_sink: Callable[[bytes], None] | None = None
        self._body_end_sink: Callable[[], None] | None = None
        self._continue_sent = False
        self._framing = BodyFraming.NONE
        self._on_abort: Callable[[], None] | None = None
        self._on_timeout: Callable[[], None] | None = None
        #: Loop time of the last byte moved for this exchange (for idle timeouts).
        self.last_activity = start_time
        self.response_producer: Producer | None = None
        #: Deadline (loop time) for the upstream's response head, or 0; set by the app.
        self.request_deadline = 0.0
        #: Trailer fields that ended the request body (HTTP/2 clients), or ``None``.
        self.request_trailers: list[tuple[bytes, bytes]] | None = None
        #: Longest gap in the response stream before it is cut (0 = none); set by the app.
        self.response_idle_timeout_s = 0.0
        self.upgrade_rest = b""
        #: The client certificate chain sent in the TLS handshake (leaf first, DER), or
        #: empty; unverified (set by the connection, judged by ``tls/client_trust``).
        self.peer_chain: tuple[bytes, ...] = ()

    # -- request body -----------------------------------------------------------------

    def feed_body(self, chunk: bytes) -> None:
        """Called by the connection for each request-body chunk."""
        self.bytes_received += len(chunk)
        sink = self._body_sink
        if sink is not None:
            sink(chunk)
            return
        self._body_buffer.append(chunk)
        self._body_buffered += len(chunk)
        if self._body_buffered > BODY_BUFFER_HIGH_WATER and not self._body_paused:
            self._body_paused = True
            self._conn.pause_reading_for_body()

    def feed_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """Called by an HTTP/2 connection with the trailers that end the request body
        (before :meth:`feed_body_end`)."""
        self.request_trailers = trailers

    def feed_body_end(self) -> None:
        self.body_done = True
        end = self._body_end_sink
        if end is not None:
            self._body_end_sink = None
            end()

    def stream_body(self, sink: Callable[[bytes], None], end: Callable[[], None]) -> None:
        """Send the request body (buffered and future chunks) to ``sink``, then call ``end``.

        Sends ``100 Continue`` first when the client asked for it (RFC 9110 §10.1.1).
        """
        self.send_continue()
        self._body_sink = sink
        buffered, self._body_buffer = self._body_buffer, []
        self._body_buffered = 0
        for chunk in buffered:
            sink(chunk)
        if self._body_paused:
            self._body_paused = False
            self._conn.resume_reading_for_body()
        if self.body_done:
            end()
        else:
            self._body_end_sink = end

    async def read_body(self, limit: int) -> bytes:
        """Read the whole request body (for gatehouse's own endpoints), at most ``limit`` bytes.

        Raises:
            PayloadTooLarge: the body is longer than ``limit``.
        """
        from ..errors import BadRequest, PayloadTooLarge

        if self.body_done and not self._body_buffer:
            return b""
        parts: list[bytes] = []
        size = 0
        fut: asyncio.Future[None] = self._loop.create_future()

        def sink(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if size <= limit:
                parts.append(chunk)
            elif not fut.done():
                # Refuse at once rather than after the whole (possibly endless) body.
                fut.set_exception(PayloadTooLarge("body over the internal endpoint limit"))

        def end() -> None:
            if not fut.done():
                fut.set_result(None)

        def gone() -> None:
            if not fut.done():
                fut.set_exception(BadRequest("client went away while sending the body"))

        self.on_abort(gone)
        self.stream_body(sink, end)
        await fut
        self.on_abort(None)
        if size > limit:
            raise PayloadTooLarge("body over the internal endpoint limit")
        return b"".join(parts)

    def send_continue(self) -> None:
        if self.head.expect_continue and not self._continue_sent and not self.body_done:
            self._continue_sent = True
            if self.phase is Phase.RECEIVING:
                self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- response ---------------------------------------------------------------------

    def start_response(
        self,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        *,
        content_length: int | None,
        body_allowed: bool = True,
    ) -> None:
        """Write the response head. ``headers`` must not hold framing or hop-by-hop fields."""
        block = b"".join([name + b": " + value + b"\r\n" for name, value in headers])
        self.start_response_block(
            status, block, content_length=content_length, body_allowed=body_allowed
        )

    def start_response_block(
        self,
        status: int,
        header_block: bytes,
        *,
        content_length: int | None,
        body_allowed: bool = True,
    ) -> None:
        """As :meth:`start_response`, with the headers already serialised
        (``name: value\\r\\n`` lines), as the proxy's response path makes them."""
        if self.phase is not Phase.RECEIVING:
            return
        self.status = status
        head = self.head
        if (
            not body_allowed
            or status in (204, 304)
            or 100 <= status < 200
            or head.method == b"HEAD"
        ):
            self._framing = BodyFraming.NONE
            if content_length is not None and status != 204 and not 100 <= status < 200:
                framing = b"content-length: %d\r\n" % content_length
            else:
                framing = b""
        elif content_length is not None:
            self._framing = BodyFraming.LENGTH
            framing = b"content-length: %d\r\n" % content_length
        elif head.http_version == "1.1":
            self._framing = BodyFraming.CHUNKED
            framing = b"transfer-encoding: chunked\r\n"
        else:
            self._framing = BodyFraming.CLOSE
            framing = b""
            self.keep_alive = False
        if head.upgrade is not None:
            # An Upgrade answered with anything but 101: the client may already be
            # sending the other protocol, so this connection cannot carry more requests.
            self.keep_alive = False
        if not self.body_done and not self._continue_sent and head.expect_continue:
            # The client is still waiting to send a body we will not read: close after.
            self.keep_alive = False
        if not self.keep_alive:
            connection = b"connection: close\r\n"
        elif head.http_version == "1.0":
            connection = b"connection: keep-alive\r\n"
        else:
            connection = b""
        self.phase = Phase.RESPONDING
        self._conn.write(
            b"HTTP/1.1 %d %s\r\n%b%b%b\r\n"
            % (status, reason_phrase(status), header_block, framing, connection)
        )

    def write(self, data: bytes) -> None:
        """Write a piece of the response body, framed as the head announced."""
        if self.phase is not Phase.RESPONDING or not data:
            return
        self.bytes_sent += len(data)
        framing = self._framing
        if framing is BodyFraming.CHUNKED:
            self._conn.write(b"%x\r\n%b\r\n" % (len(data), data))
        elif framing is not BodyFraming.NONE:
            self._conn.write(data)

    def end(self) -> None:
        """Finish the response; the connection may then serve the next request."""
        if self.phase is not Phase.RESPONDING:
            return
        if self._framing is BodyFraming.CHUNKED:
            self._conn.write(b"0\r\n\r\n")
        self.phase = Phase.DONE
        self.response_producer = None
        self._conn.exchange_finished(self)

    def send(self, response: Response) -> None:
        """Send a complete response made by gatehouse itself."""
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        self.start_response(response.status, headers, content_length=len(response.body))
        self.write(response.body)
        self.end()

    def abort(self) -> None:
        """Cut the exchange: the client sees a reset or a truncated chunked stream."""
        if self.phase in (Phase.DONE, Phase.ABORTED):
            return
        self.phase = Phase.ABORTED
        self.keep_alive = False
        on_abort, self._on_abort = self._on_abort, None
        if on_abort is not None:
            on_abort()
        self._conn.exchange_aborted(self)

    def discard(self) -> None:
        """Drop this exchange without touching the connection (it answers and closes itself)."""
        self.cancel_upstream()
        self.phase = Phase.ABORTED
        self.keep_alive = False

    def cancel_upstream(self) -> None:
        """Run and clear the abort callback (drop the upstream side) without aborting."""
        on_abort, self._on_abort = self._on_abort, None
        if on_abort is not None:
            on_abort()

    def on_abort(self, callback: Callable[[], None] | None) -> None:
        """Register what to do when the client goes away (cancel the upstream side)."""
        self._on_abort = callback

    def on_timeout(self, callback: Callable[[], None] | None) -> None:
        """Register what to do when ``request_deadline`` passes (answer 504, drop upstream)."""
        self._on_timeout = callback

    def expire(self) -> None:
        """Called by the connection's timer sweep when ``request_deadline`` has passed."""
        self.request_deadline = 0.0
        callback, self._on_timeout = self._on_timeout, None
        if callback is not None:
            callback()

    # -- upgrade ----------------------------------------------------------------------

    def start_tunnel(self, status_line_and_headers: bytes) -> DownstreamProtocol:
        """Send the upstream's ``101`` head and turn the connection into a byte tunnel.

        Only HTTP/1.1 connections tunnel (HTTP/2 requests carry no ``Upgrade``).
        """
        self.status = 101
        self.phase = Phase.TUNNEL
        self._conn.write(status_line_and_headers)
        return cast("DownstreamProtocol", self._conn)

    def end_with_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """Finish the response with trailer fields (gRPC status). HTTP/1.1 drops them:
        gRPC needs HTTP/2, and browsers ignore chunked trailers."""
        self.end()

    @property
    def connection(self) -> Channel:
        return self._conn
