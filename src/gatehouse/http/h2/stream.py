"""One HTTP/2 stream as the pipeline sees it: a :class:`StreamChannel` (the ``Channel``
the exchange writes to) and an :class:`H2Exchange` (the exchange, framed as HTTP/2).

Theory of operation. Response bytes go through :meth:`StreamChannel.send` into the
``h2`` connection as far as the peer's flow-control window allows; the rest waits in a
per-stream queue until a ``WINDOW_UPDATE`` arrives. When the queue passes
:data:`~gatehouse.http.h2.limits.STREAM_SEND_HIGH_WATER` (or the socket itself is full)
the upstream feeding this stream is paused, so one slow stream never stalls the others
and never makes gatehouse buffer without bound. Request bytes are acknowledged
(``WINDOW_UPDATE`` sent) only once the stream is not paused: an upstream that reads
slowly closes the client's window for that stream alone. The queue's oldest blocked
moment is kept (``blocked_since``) for the zero-window stall timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from time import monotonic as _now
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes
from h2.exceptions import H2Error

from ...constants import HOP_BY_HOP
from ..exchange import Exchange, Phase
from ..messages import RequestHead, Response
from . import frames
from .flow import take_window
from .grpc import grpc_message, grpc_status_for, is_grpc
from .limits import STREAM_SEND_HIGH_WATER, STREAM_SEND_LOW_WATER

if TYPE_CHECKING:
    from ..server import DownstreamProtocol
    from .protocol import H2Protocol

_PAUSE_BODY = 1  # request body buffered with nobody consuming it yet
_PAUSE_PEER = 2  # the upstream is not accepting the request body

Header = tuple[bytes, bytes]


class StreamChannel:
    """The per-stream side of an HTTP/2 connection (a :class:`~gatehouse.http.exchange.Channel`)."""

    __slots__ = (
        "_end_pending",
        "_head",
        "_pause_mask",
        "_pending",
        "_pending_bytes",
        "_producer_paused",
        "_trailers",
        "_withheld",
        "blocked_since",
        "closed",
        "exchange",
        "loop",
        "proto",
        "stream_id",
    )

    def __init__(self, proto: H2Protocol, stream_id: int) -> None:
        self.proto = proto
        self.loop: asyncio.AbstractEventLoop = proto.loop
        self.stream_id = stream_id
        self.exchange: H2Exchange | None = None
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._end_pending = False
        #: Response headers not sent yet (see :meth:`send_head`).
        self._head: list[Header] | None = None
        self._trailers: list[Header] | None = None
        self._pause_mask = 0
        self._withheld = 0
        self._producer_paused = False
        #: Loop time since when queued response bytes found no window (0: not blocked).
        self.blocked_since = 0.0
        #: The stream is closed or reset; nothing more is sent on it.
        self.closed = False

    # -- Channel ------------------------------------------------------------------------

    @property
    def write_paused(self) -> bool:
        return self.proto.write_paused or self._pending_bytes > STREAM_SEND_HIGH_WATER

    def write(self, data: bytes) -> None:
        self.send(data)

    def cork(self) -> None:
        self.proto.cork()

    def uncork(self) -> None:
        self.proto.uncork()

    def pause_reading(self) -> None:
        self._pause_mask |= _PAUSE_PEER

    def resume_reading(self) -> None:
        self._resume(_PAUSE_PEER)

    def pause_reading_for_body(self) -> None:
        self._pause_mask |= _PAUSE_BODY

    def resume_reading_for_body(self) -> None:
        self._resume(_PAUSE_BODY)

    def exchange_finished(self, ex: Exchange) -> None:
        self._end_pending = True
        self._drain()

    def exchange_aborted(self, ex: Exchange) -> None:
        self.reset(ErrorCodes.INTERNAL_ERROR)

    # -- request body ----------------------------------------------------------------------

    def received(self, flow_controlled_length: int) -> None:
        """Account for a DATA frame the exchange has taken: open the window again
        unless the stream is paused (then the bytes are acknowledged on resume)."""
        if self._pause_mask:
            self._withheld += flow_controlled_length
        else:
            self._ack(flow_controlled_length)

    def _resume(self, reason: int) -> None:
        if not self._pause_mask & reason:
            return
        self._pause_mask &= ~reason
        if not self._pause_mask and self._withheld:
            withheld, self._withheld = self._withheld, 0
            self._ack(withheld)
            self.proto.flush()

    def _ack(self, n: int) -> None:
        if n and not self.closed:
            with contextlib.suppress(H2Error, KeyError):
                self.proto.h2.acknowledge_received_data(n, self.stream_id)

    # -- response -------------------------------------------------------------------------

    def send_headers(self, headers: list[Header], end_stream: bool = False) -> None:
        if self.closed:
            return
        try:
            frames.send_headers(self.proto.h2, self.stream_id, headers, end_stream)
        except H2Error:
            self.closed = True
            return
        if end_stream:
            self._done()
        self.proto.flush()

    def send_head(self, headers: list[Header]) -> None:
        """Send the response headers (and the body queued with them) with the end of the
        stream or at the next turn of the loop, whichever comes first.

        A response that ends at once goes out as one HEADERS frame with END_STREAM: for
        gRPC's trailers-only responses that is required (a client reads a lone empty
        DATA frame as a broken stream), and it saves a frame for every bodiless response.
        """
        if self.closed:
            return
        self._head = headers
        # The connection's once-per-turn flush sends it (head_due) unless _drain has.
        self.proto.head_waiting(self)

    def head_due(self) -> None:
        """The turn of the loop that queued the head is over: send what is ready."""
        if self._head is not None and not self.closed:
            self._drain()

    def send(self, data: bytes) -> None:
        """Queue response bytes and send what the flow-control window allows."""
        if self.closed or not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._head is None:
            self._drain()
        # else: the head waits for the end of the stream or of this turn of the loop
        # (head_due); a body that ends in this turn then goes out as HEADERS and one
        # DATA frame with END_STREAM.
        if not self._producer_paused and self.write_paused:
            self.update_producer()

    def finish(self, trailers: list[Header] | None) -> None:
        """End the stream once the queue is sent (with ``trailers`` when given)."""
        self._trailers = trailers
        self._end_pending = True
        self._drain()

    def window_opened(self) -> None:
        """A WINDOW_UPDATE or SETTINGS change may let queued bytes go."""
        if self._pending or self._end_pending:
            self._drain()

    def _drain(self) -> None:
        if self.closed:
            return
        h2conn = self.proto.h2
        sid = self.stream_id
        pending = self._pending
        try:
            head = self._head
            if head is not None:
                self._head = None
                if not pending and self._end_pending and self._trailers is None:
                    frames.send_headers(h2conn, sid, head, True)
                    self._end_pending = False
                    self._done()
                    self.proto.flush()
                    return
                frames.send_headers(h2conn, sid, head, False)
            while (chunk := take_window(h2conn, sid, pending)) is not None:
                self._pending_bytes -= len(chunk)
                if not pending and self._end_pending and self._trailers is None:
                    # The last chunk carries END_STREAM: one DATA frame, not two.
                    frames.send_data(h2conn, sid, chunk, True)
                    self._end_pending = False
                    self.blocked_since = 0.0
                    self._done()
                    break
                frames.send_data(h2conn, sid, chunk, False)
            if pending and not self.blocked_since:
                self.blocked_since = _now()  # the window is closed
            if not pending:
                self.blocked_since = 0.0
                if self._end_pending:
                    if self._trailers is not None:
                        frames.send_headers(h2conn, sid, self._trailers, True)
                    else:
                        h2conn.end_stream(sid)
                    self._done()
        except (H2Error, KeyError):
            self.closed = True
            self.proto.stream_done(self)
        if self._producer_paused and self._pending_bytes < STREAM_SEND_LOW_WATER:
            self.update_producer()
        self.proto.flush()

    def update_producer(self) -> None:
        """Pause or resume the upstream feeding this stream to match the queue and socket."""
        ex = self.exchange
        producer = ex.response_producer if ex is not None else None
        want = self.proto.write_paused or self._pending_bytes > STREAM_SEND_HIGH_WATER
        if want == self._producer_paused:
            return
        self._producer_paused = want
        if producer is not None:
            if want:
                producer.pause_reading()
            else:
                producer.resume_reading()

    def reset(self, code: ErrorCodes) -> None:
        """Reset the stream (RST_STREAM) unless it is already closed."""
        if not self.closed:
            with contextlib.suppress(H2Error, KeyError):
                self.proto.h2.reset_stream(self.stream_id, code)
            self.proto.flush()
        self.closed = True
        self._pending.clear()
        self._pending_bytes = 0
        self.proto.stream_done(self)

    def _done(self) -> None:
        self.closed = True
        ex = self.exchange
        if ex is not None and not ex.body_done:
            # A complete response to an unfinished upload: ask the client to stop sending
            # without error (RFC 9113 §8.1).
            with contextlib.suppress(H2Error, KeyError):
                self.proto.h2.reset_stream(self.stream_id, ErrorCodes.NO_ERROR)
        self.proto.stream_done(self)


def response_headers(status: int, block: bytes, content_length: int | None) -> list[Header]:
    """HTTP/2 response headers from a serialised ``name: value\\r\\n`` block.

    Names are lower-cased and connection-specific fields dropped: RFC 9113 §8.2.2 makes a
    message that carries them malformed.
    """
    headers: list[Header] = [(b":status", b"%d" % status)]
    for line in block.split(b"\r\n"):
        if not line:
            continue
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if not name or name in HOP_BY_HOP:
            continue
        headers.append((name, value.strip()))
    if content_length is not None:
        headers.append((b"content-length", b"%d" % content_length))
    return headers


class H2Exchange(Exchange):
    """An exchange whose request came on an HTTP/2 stream."""

    __slots__ = ("_no_body", "stream")

    def __init__(
        self,
        stream: StreamChannel,
        head: RequestHead,
        *,
        client_ip: str,
        scheme: str,
        server_port: int,
        start_time: float,
    ) -> None:
        super().__init__(
            stream,
            head,
            client_ip=client_ip,
            scheme=scheme,
            server_port=server_port,
            start_time=start_time,
        )
        self.stream = stream
        self._no_body = False

    def send_continue(self) -> None:
        # An HTTP/2 client that sent Expect gets the final response; it does not wait
        # for 100 (RFC 9113 §8.1 allows either), and the upstream answers its own.
        return

    def start_response_block(
        self,
        status: int,
        header_block: bytes,
        *,
        content_length: int | None,
        body_allowed: bool = True,
    ) -> None:
        if self.phase is not Phase.RECEIVING:
            return
        self.status = status
        no_body = (
            not body_allowed
            or status in (204, 304)
            or 100 <= status < 200
            or self.head.method == b"HEAD"
        )
        self._no_body = no_body
        length = content_length if status != 204 and not 100 <= status < 200 else None
        self.phase = Phase.RESPONDING
        self.stream.send_head(response_headers(status, header_block, length))

    def write(self, data: bytes) -> None:
        if self.phase is not Phase.RESPONDING or not data:
            return
        self.bytes_sent += len(data)
        if not self._no_body:
            self.stream.send(data)

    def end(self) -> None:
        self._finish(None)

    def end_with_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        clean = [(k, v) for k, v in trailers if k[:1] != b":" and k not in HOP_BY_HOP]
        self._finish(clean or None)

    def _finish(self, trailers: list[Header] | None) -> None:
        if self.phase is not Phase.RESPONDING:
            return
        self.phase = Phase.DONE
        self.response_producer = None
        self.stream.finish(trailers)

    def send(self, response: Response) -> None:
        if is_grpc(self.head) and not 200 <= response.status < 300:
            self._send_grpc_error(response)
            return
        super().send(response)

    def _send_grpc_error(self, response: Response) -> None:
        """A trailers-only gRPC response for an error gatehouse made (see :mod:`.grpc`)."""
        if self.phase is not Phase.RECEIVING:
            return
        self.status = response.status
        self.phase = Phase.DONE
        headers: list[Header] = [
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-status", b"%d" % grpc_status_for(response.status)),
            (b"grpc-message", grpc_message(_reason(response.status))),
        ]
        headers.extend(_extra_headers(response.headers))
        self.stream.send_headers(headers, end_stream=True)

    def start_tunnel(self, status_line_and_headers: bytes) -> DownstreamProtocol:
        # HTTP/2 requests carry no Upgrade (RFC 9113 §8.6), so the pipeline never asks.
        raise RuntimeError("HTTP/2 streams are not tunnelled")


def _reason(status: int) -> str:
    from ..exchange import reason_phrase

    return reason_phrase(status).decode("latin-1")


def _extra_headers(headers: Iterable[tuple[str, str]]) -> list[Header]:
    out: list[Header] = []
    for name, value in headers:
        lname = name.lower().encode("latin-1")
        if lname in HOP_BY_HOP or lname == b"content-type":
            continue
        out.append((lname, value.encode("latin-1")))
    return out
