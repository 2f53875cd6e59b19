"""One HTTP/2 client connection: a thin asyncio adapter around ``h2.H2Connection``.

``data_received`` feeds the ``h2`` state machine and dispatches its events: a request's
headers become an :class:`~gatehouse.http.h2.stream.H2Exchange` run by the server's
handler (the same pipeline as HTTP/1.1), DATA goes to the exchange's body, resets and
window updates go to the stream. Whatever ``h2`` has to send is written once per batch.

Defences (each closes the connection with ``GOAWAY`` and logs one line): protocol errors
``h2`` detects (malformed frames, CONTINUATION past its backlog, an HPACK block that
decodes past ``SETTINGS_MAX_HEADER_LIST_SIZE``, too many concurrent streams), and the
floods counted by :class:`~gatehouse.http.h2.limits.FloodGuard`. Timeouts run from the
server's sweep (:meth:`H2Protocol.check_timeouts`), as for HTTP/1.1, plus the zero-window
stall: a stream whose response cannot move for ``timeout_read`` is reset.

Draining (shutdown): a ``GOAWAY(NO_ERROR)`` naming the last stream taken is sent while
``h2`` stays open, so the streams in flight finish; then the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from time import monotonic as _now
from typing import TYPE_CHECKING, cast

import h2.config
import h2.events
import h2.exceptions
import h2.settings
import hpack
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from ...errors import (
    BadRequest,
    ClientError,
    GatehouseError,
    HeaderTooLarge,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestTimeout,
    URITooLong,
)
from ..exchange import Phase
from ..messages import RequestHead
from ..peer_cert import peer_chain
from ..server import DRIVE_INLINE, drive_inline
from .fields import parse_request
from .hpack_decoder import RequestDecoder
from .hpack_encoder import StaticEncoder
from .inbound import receive_data
from .limits import (
    CONNECTION_WINDOW_BYTES,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    STREAM_WINDOW_BYTES,
    Flood,
    FloodGuard,
)
from .stream import H2Exchange, StreamChannel
from .streamcount import CountingH2Connection

if TYPE_CHECKING:
    from ..server import HttpServer

log = logging.getLogger("gatehouse.http")

Header = tuple[bytes, bytes]

#: Stall timeout when ``timeout_read`` is 0 (unlimited), seconds: a zero window must
#: still not hold a stream for ever.
DEFAULT_STALL_TIMEOUT_S = 300.0


class H2Protocol(asyncio.Protocol):
    """One HTTP/2 connection (over TLS after ALPN ``h2``, or h2c with prior knowledge)."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.settings = server.settings
        limits = self.settings.limits
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # Request fields are checked once by .fields (RFC 9113 §8.2, §8.3), where
            # h2's chained generators cost more than the rest of a request's parsing.
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            # gatehouse builds response headers itself (lower case, no
            # connection-specific fields): skip h2's per-header checks on the hot path.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        # h2's own count of open streams walks all of them on every new stream.
        self.h2 = CountingH2Connection(config)
        # Response blocks from the static table and a field cache (see .hpack_encoder):
        # h2's own encoder cost a tenth of a request's CPU.
        self.h2.encoder = cast("hpack.Encoder", StaticEncoder())
        self.max_header_list = limits.max_header_bytes + limits.max_url_bytes
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.max_header_list,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW_BYTES,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        # h2 applies the header list limit to its HPACK decoder only once the client
        # acknowledges our SETTINGS; a bomb in the first flight must meet it too.
        self.h2.decoder.max_header_list_size = self.max_header_list
        # Repeated requests' blocks of indexed fields skip hpack's decoder (.hpack_decoder).
        self.h2.decoder = cast("hpack.Decoder", RequestDecoder(self.h2.decoder))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, StreamChannel] = {}
        self.guard = FloodGuard()
        self.client_ip = ""
        self.server_port = 0
        self.scheme = "http"
        #: The client certificate chain from the TLS handshake (leaf first, DER), unverified.
        self.peer_chain: tuple[bytes, ...] = ()
        self._write_paused = False
        self._corked = 0
        self._flush_scheduled = False
        #: Streams whose response headers wait for the end of this turn (head_waiting).
        self._heads: list[StreamChannel] = []
        self._closing = False
        self._goaway_sent = False
        self._served = 0
        self._idle_since = 0.0

    # -- what the sweep and the server use (a ServedConnection) -------------------------

    @property
    def idle(self) -> bool:
        return not self.streams

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    # -- asyncio callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "unix"
        local = transport.get_extra_info("sockname")
        self.server_port = local[1] if isinstance(local, tuple) else 0
        self.scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
        if self.scheme == "https":
            self.peer_chain = peer_chain(transport.get_extra_info("ssl_object"))
        self._idle_since = _now()
        self.server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW_BYTES - 65_535)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.server.connections.discard(self)
        for stream in list(self.streams.values()):
            stream.closed = True
            ex = stream.exchange
            if ex is not None:
                ex.abort()
        self.streams.clear()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            # Plain request HEADERS frames are read without h2's frame objects (.inbound).
            events = receive_data(self.h2, data)
        except h2.exceptions.ProtocolError as exc:
            self._connection_error(exc)
            return
        self.cork()
        try:
            for event in events:
                self._dispatch(event)
                if self._closing:
                    return
        finally:
            self.uncork()

    def pause_writing(self) -> None:
        self._write_paused = True
        for stream in self.streams.values():
            stream.update_producer()

    def resume_writing(self) -> None:
        self._write_paused = False
        for stream in list(self.streams.values()):
            stream.update_producer()

    # -- events --------------------------------------------------------------------------

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None and stream.exchange is not None:
                stream.exchange.feed_trailers(cast("list[Header]", event.headers or []))
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None and stream.exchange is not None:
                stream.exchange.feed_body_end()
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event)
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.window_opened()
            else:
                self._windows_opened()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if self.guard.hit(Flood.SETTINGS, _now()):
                self._calm_down("SETTINGS flood")
                return
            if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                self._windows_opened()
        elif isinstance(event, h2.events.PingReceived):
            if self.guard.hit(Flood.PING, _now()):
                self._calm_down("PING flood")
        elif isinstance(event, h2.events.ConnectionTerminated):
            # The client is leaving: finish what is in flight, take nothing new.
            self._goaway_sent = True
            if not self.streams:
                self.close()

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id or 0
        if self._goaway_sent:
            # Past our GOAWAY's last stream (RFC 9113 §6.8): refused, safe to retry.
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        now = _now()
        stream = StreamChannel(self, sid)
        self.streams[sid] = stream
        try:
            head = self._head(cast("list[Header]", event.headers or []), event.stream_ended)
        except ClientError as err:
            self._stream_error(stream, err)
            return
        ex = H2Exchange(
            stream,
            head,
            client_ip=self.client_ip,
            scheme=self.scheme,
            server_port=self.server_port,
            start_time=now,
        )
        ex.peer_chain = self.peer_chain
        stream.exchange = ex
        self._served += 1
        if not DRIVE_INLINE or self.server.needs_task(ex):
            self.loop.create_task(self._run(ex))
        else:
            # As for HTTP/1.1: no Task and no extra turn of the loop per stream. Events
            # after this one in the batch (its body, other streams) are dispatched once
            # the pipeline waits (the upstream's answer); writes stay corked until then.
            drive_inline(self.loop, self._run(ex))

    def _head(self, headers: list[Header], ended: object) -> RequestHead:
        """A :class:`RequestHead` from a stream's header list (checked by :mod:`.fields`:
        ``h2``'s own inbound validation is off).

        Raises:
            ClientError: a request gatehouse will not serve (answered on the stream).
        """
        limits = self.settings.limits
        req = parse_request(headers)
        method, path, host = req.method, req.path, req.host
        if method == b"CONNECT":
            if req.has_protocol:
                raise MethodNotAllowed("extended CONNECT is not supported")
            raise MethodNotAllowed("CONNECT is not supported")
        fields = req.fields
        size = 0
        content_length = -1
        for name, value in fields:
            size += len(name) + len(value) + 4
            if name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
        if host is not None:
            size += len(host) + 8
        if len(path) > limits.max_url_bytes:
            raise URITooLong("request target too long")
        if size > limits.max_header_bytes:
            raise HeaderTooLarge("request header block too large")
        if path[:1] != b"/":
            # The form of :path is ours to check (RFC 9113 §8.3.1).
            raise BadRequest("request target must be a path")
        authority = req.authority
        if authority and host is not None and host != authority:
            # RFC 9113 §8.3.1: a Host that names another entity than :authority.
            raise BadRequest("Host differs from :authority")
        authority = authority or host or b""
        if not authority:
            raise BadRequest("missing :authority")
        if limits.max_body_bytes and content_length > limits.max_body_bytes:
            raise PayloadTooLarge("declared body too large")
        fields.insert(0, (b"host", authority))
        return RequestHead(
            method=method,
            target=path,
            headers=fields,
            http_version="2",
            keep_alive=True,
            has_body=ended is None,
            upgrade=None,
            expect_continue=False,
        )

    def _on_data(self, event: h2.events.DataReceived) -> None:
        sid = event.stream_id or 0
        data = event.data or b""
        length = event.flow_controlled_length or 0
        stream = self.streams.get(sid)
        if not data and event.stream_ended is None and self.guard.hit(Flood.EMPTY_DATA, _now()):
            self._calm_down("empty DATA flood")
            return
        if stream is None or stream.exchange is None:
            # A stream already answered or reset: give the connection window back.
            with contextlib.suppress(h2.exceptions.H2Error, KeyError):
                self.h2.acknowledge_received_data(length, sid)
            return
        ex = stream.exchange
        limit = self.settings.limits.max_body_bytes
        if limit and ex.bytes_received + len(data) > limit:
            self._stream_error(stream, PayloadTooLarge("body too large"))
            with contextlib.suppress(h2.exceptions.H2Error, KeyError):
                self.h2.acknowledge_received_data(length, sid)
            return
        ex.feed_body(data)
        stream.received(length)

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        sid = event.stream_id or 0
        stream = self.streams.get(sid)
        if event.remote_reset and self.guard.hit(Flood.RESET, _now()):
            self._calm_down("stream reset flood (rapid reset)")
            return
        if stream is None:
            return
        stream.closed = True
        self.stream_done(stream)
        ex = stream.exchange
        if ex is not None and ex.phase not in (Phase.DONE, Phase.ABORTED):
            ex.abort()  # the client went away: drop the upstream request

    def _windows_opened(self) -> None:
        for stream in list(self.streams.values()):
            stream.window_opened()

    # -- running requests -----------------------------------------------------------------

    async def _run(self, ex: H2Exchange) -> None:
        try:
            await self.server.handler(ex)
        except asyncio.CancelledError:
            ex.abort()
            raise
        except Exception:
            log.exception("unhandled error while serving %s", ex.head.target[:200])
            self._fail_exchange(ex, GatehouseError("unhandled"))
        else:
            if ex.phase is Phase.RECEIVING:
                log.error("handler returned without a response for %s", ex.head.target[:200])
                self._fail_exchange(ex, GatehouseError("no response"))

    def _fail_exchange(self, ex: H2Exchange, err: GatehouseError) -> None:
        if ex.phase is Phase.RECEIVING:
            ex.cancel_upstream()
            ex.send(self.server.render_error(err, ex.head))
        elif ex.phase is Phase.RESPONDING:
            ex.abort()

    def _stream_error(self, stream: StreamChannel, err: ClientError) -> None:
        """Answer a request refused before the pipeline with its error response."""
        log.info(
            "rejected request from %s: %s (%d)",
            self.client_ip,
            err,
            err.status,
            extra={"client": self.client_ip, "status": err.status, "protocol": "h2"},
        )
        self.server.on_protocol_error(err, self.client_ip)
        ex = stream.exchange
        if ex is not None and ex.phase is not Phase.RECEIVING:
            ex.abort()
            return
        if ex is not None:
            ex.discard()
        response = self.server.render_error(err, None)
        headers = [(b":status", b"%d" % err.status)]
        for name, value in response.headers:
            headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        headers.append((b"content-length", b"%d" % len(response.body)))
        stream.exchange = None
        stream.send_headers(headers)
        stream.send(response.body)
        stream.finish(None)

    # -- used by streams ------------------------------------------------------------------

    def cork(self) -> None:
        self._corked += 1

    def uncork(self) -> None:
        self._corked -= 1
        if self._corked <= 0:
            self._corked = 0
            self.flush()

    def flush(self) -> None:
        """Write whatever ``h2`` has queued, once per turn of the loop (deferred while
        corked): the frames of every stream answered in one iteration go out in one
        ``send()``, where writing each at once cost three system calls per request."""
        if self._corked or self._flush_scheduled:
            return
        self._flush_scheduled = True
        self.loop.call_soon(self._flush_turn)

    def head_waiting(self, stream: StreamChannel) -> None:
        """``stream`` holds response headers for the end of this turn (see
        :meth:`StreamChannel.send_head`): the scheduled flush sends them."""
        self._heads.append(stream)
        self.flush()

    def _flush_turn(self) -> None:
        heads = self._heads
        if heads:
            # Still marked scheduled, so the streams' own flush() calls add no callback.
            self._heads = []
            for stream in heads:
                stream.head_due()
        self._write_now()

    def _write_now(self) -> None:
        self._flush_scheduled = False
        data = self.h2.data_to_send()
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def stream_done(self, stream: StreamChannel) -> None:
        if self.streams.pop(stream.stream_id, None) is None:
            return
        self.h2.stream_finished(stream.stream_id)
        if not self.streams:
            self._idle_since = _now()
            if self._goaway_sent:
                self.close()

    # -- closing --------------------------------------------------------------------------

    def _connection_error(self, exc: h2.exceptions.ProtocolError) -> None:
        # h2 has queued its GOAWAY with the error's code; send it and close.
        log.info(
            "closing HTTP/2 connection from %s: %s",
            self.client_ip,
            str(exc)[:200] or type(exc).__name__,
            extra={"client": self.client_ip, "protocol": "h2", "error": type(exc).__name__},
        )
        self._corked = 0
        self._write_now()
        self._abort_streams()
        self._close_transport()

    def _calm_down(self, reason: str) -> None:
        """GOAWAY(ENHANCE_YOUR_CALM) and close: a client flooding the connection."""
        log.warning(
            "closing HTTP/2 connection from %s: %s",
            self.client_ip,
            reason,
            extra={"client": self.client_ip, "protocol": "h2", "reason": reason},
        )
        with contextlib.suppress(h2.exceptions.H2Error):
            self.h2.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
        self._corked = 0
        self._write_now()
        self._abort_streams()
        self._close_transport()

    def _abort_streams(self) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.closed = True
            ex = stream.exchange
            if ex is not None and ex.phase not in (Phase.DONE, Phase.ABORTED):
                ex.abort()

    def drain(self) -> None:
        """Send a graceful GOAWAY (the streams in flight finish; new ones are refused)."""
        if self._goaway_sent or self._closing:
            return
        self._goaway_sent = True
        last = self.h2.highest_inbound_stream_id
        self._write_now()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(GoAwayFrame(0, last_stream_id=last, error_code=0).serialize())
        if not self.streams:
            self.close()

    def close(self) -> None:
        if self._closing:
            return
        with contextlib.suppress(h2.exceptions.H2Error):
            self.h2.close_connection(error_code=ErrorCodes.NO_ERROR)
        self._corked = 0
        self._write_now()
        self._close_transport()

    def _close_transport(self) -> None:
        self._closing = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    # -- timeouts -------------------------------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        """Apply every timeout rule; called by the server's sweep."""
        if self._closing:
            return
        s = self.settings
        if self.server.draining and not self._goaway_sent:
            self.drain()
            return
        if not self.streams:
            limit = s.timeout_idle_s if self._served else s.timeout_request_head_s
            if now - self._idle_since > limit:
                self.close()
            return
        stall = s.timeout_read_s or DEFAULT_STALL_TIMEOUT_S
        for stream in list(self.streams.values()):
            if stream.blocked_since and now - stream.blocked_since > stall:
                log.warning(
                    "HTTP/2 stream stalled on a closed flow-control window; resetting",
                    extra={"client": self.client_ip, "stream": stream.stream_id},
                )
                ex = stream.exchange
                if ex is not None and ex.phase not in (Phase.DONE, Phase.ABORTED):
                    ex.abort()
                else:
                    stream.reset(ErrorCodes.CANCEL)
                continue
            ex = stream.exchange
            if ex is None:
                continue
            phase = ex.phase
            if phase is Phase.RECEIVING:
                if not ex.body_done and s.timeout_read_s and now - ex.start_time > s.timeout_read_s:
                    self._fail_exchange(ex, RequestTimeout("request body not received in time"))
                elif ex.request_deadline and now > ex.request_deadline:
                    ex.expire()
            elif phase is Phase.RESPONDING:
                if (
                    ex.response_idle_timeout_s
                    and now - ex.last_activity > ex.response_idle_timeout_s
                ):
                    log.warning("response stream idle too long; cutting %s", ex.head.target[:200])
                    ex.abort()
                elif s.timeout_write_s and now - ex.start_time > s.timeout_write_s:
                    log.warning("response not written in time; cutting %s", ex.head.target[:200])
                    ex.abort()
