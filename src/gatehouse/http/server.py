"""The downstream side: an asyncio Protocol per client connection, and the listening server.

:class:`DownstreamProtocol` is a thin adapter (the shape of uvicorn's httptools protocol):
``data_received`` feeds :class:`~gatehouse.http.connection.RequestReader`, whose events
create one :class:`~gatehouse.http.exchange.Exchange` per request and start the
application's coroutine for it. Pipelined requests wait in a queue (reading paused) until
the previous response is complete.

Timeouts are not one timer per request: :class:`HttpServer` sweeps its connections every
:data:`SWEEP_INTERVAL_S` and each connection compares its deadlines with the clock. That keeps
``call_later`` off the hot path and puts every timeout rule in
:meth:`DownstreamProtocol.check_timeouts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from time import monotonic as _now
from typing import Any, Protocol, cast

from ..constants import ACME_TLS_ALPN
from ..errors import ClientError, GatehouseError, RequestTimeout
from .connection import Limits, RequestReader, UpgradeRequested
from .exchange import Exchange, Phase
from .messages import RequestHead, Response
from .peer_cert import peer_chain

log = logging.getLogger("gatehouse.http")

#: Drive proxied requests without a Task on 3.11 (3.12+ uses eager tasks instead).
DRIVE_INLINE = sys.version_info < (3, 12)

#: Accept queue of the listening socket (connections). The kernel caps it at
#: net.core.somaxconn (4096 on current Linux), as Go's listeners ask for; 2048 overflowed
#: when 5,000 clients connected at once, and each dropped handshake cost its client a
#: 1-3 s retransmission.
LISTEN_BACKLOG = 65535

#: How often connections are checked against their deadlines, seconds.
SWEEP_INTERVAL_S = 0.1

_PAUSE_BODY = 1  # request body buffered with nobody consuming it yet
_PAUSE_PIPELINE = 2  # a pipelined request waits for the previous response
_PAUSE_PEER = 4  # the other side of a splice or tunnel is not accepting writes
_PAUSE_UPGRADE = 8  # an upgrade request waits for the upstream's answer

#: Lingering close (as nginx's ``lingering_close``): after answering a client that is still
#: sending (a refused upload), read and discard for up to this long, or until it has been
#: quiet for :data:`LINGER_QUIET_S`, before closing. Closing with unread bytes makes the
#: kernel send a reset, and the client loses the response it has not read yet (a 413).
LINGER_MAX_S = 5.0
LINGER_QUIET_S = 1.0


def drive_inline(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], _done: object = None
) -> None:
    """Run ``coro`` step by step without a Task (Python 3.11's stand-in for eager tasks).

    A proxied request's coroutine mostly runs straight through and then waits on one
    future (the upstream's response); stepping it here saves creating a Task and one
    trip round the event loop per request. It is resumed from the awaited future's
    done-callback. Only used for requests whose code needs no ``current_task()``
    (see ``Pipeline.needs_task``); on 3.12+ the loop's eager task factory does this.
    Used by HTTP/1.1 connections and HTTP/2 streams alike.
    """
    try:
        yielded = coro.send(None)
    except StopIteration:
        return
    except BaseException:  # the caller's coroutine handles everything; a last resort
        log.exception("request coroutine failed")
        return
    blocking = getattr(yielded, "_asyncio_future_blocking", None)
    if blocking is not None:
        yielded._asyncio_future_blocking = False
        yielded.add_done_callback(functools.partial(drive_inline, loop, coro))
    elif yielded is None:
        loop.call_soon(drive_inline, loop, coro)
    else:
        coro.throw(RuntimeError(f"unexpected yield {yielded!r}"))


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Tunable limits and timeouts (from the config; swapped on reload)."""

    limits: Limits = field(default_factory=Limits)
    timeout_request_head_s: float = 10.0
    timeout_read_s: float = 30.0
    timeout_write_s: float = 0.0
    timeout_idle_s: float = 300.0


class ServedConnection(Protocol):
    """What the server's sweep and drain need of a connection (HTTP/1.1 or HTTP/2)."""

    transport: asyncio.Transport | None

    @property
    def idle(self) -> bool: ...

    def check_timeouts(self, now: float) -> None: ...

    def close(self) -> None: ...


Handler = Callable[[Exchange], Awaitable[None]]
ErrorRenderer = Callable[[GatehouseError, RequestHead | None], Response]


class DownstreamProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.settings = server.settings
        self.transport: asyncio.Transport | None = None
        self.reader = RequestReader(self, self.settings.limits)
        #: The client certificate chain from the TLS handshake (leaf first, DER), unverified.
        self.peer_chain: tuple[bytes, ...] = ()
        self.client_ip = ""
        self.server_port = 0
        self.scheme = "http"
        self.current: Exchange | None = None
        self._receiving: Exchange | None = None
        self._queue: deque[Exchange] = deque()
        self._pause_mask = 0
        self._write_paused = False
        self._closing = False
        self._head_started = 0.0
        self._idle_since = 0.0
        #: Clock reading for the batch of bytes being parsed (one read per batch).
        self._batch_time = 0.0
        self._served = 0
        #: Tunnel mode: the upstream's transport. The client's bytes are written to it as
        #: they come, with no parsing and no Python call in between (see ``http/tunnel.py``).
        self.tunnel_out: asyncio.Transport | None = None
        #: The upstream's protocol: paused while we cannot write to the client fast enough.
        self.tunnel_peer: asyncio.Protocol | None = None
        #: Bytes relayed client -> upstream, and when the last of them came (monotonic s).
        self.tunnel_bytes = 0
        self.tunnel_last = 0.0
        self.on_lost: Callable[[], None] | None = None
        #: While corked, writes are gathered and sent as one (fewer send() calls).
        self._corked: list[bytes] | None = None
        #: A request whose head arrived in the batch being parsed, started after it.
        self._to_start: Exchange | None = None
        #: Set while an inline request is being driven: a pipelined request that its
        #: response starts waits here instead of recursing (see :meth:`_start`).
        self._driving = False
        self._next_inline: Exchange | None = None
        #: While lingering (see :data:`LINGER_MAX_S`): when to give up, and last read.
        self._linger_until = 0.0
        self._linger_last = 0.0

    @property
    def idle(self) -> bool:
        """No request in flight and no tunnel: the connection can be closed at once."""
        return self.current is None and self.tunnel_out is None

    # -- asyncio callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "unix"
        local = transport.get_extra_info("sockname")
        self.server_port = local[1] if isinstance(local, tuple) else 0
        self.scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
        if self.scheme == "https":
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() == ACME_TLS_ALPN:
                # An ACME CA's TLS-ALPN-01 validation: the handshake was the whole answer
                # (RFC 8737 §3); nothing is served on it.
                self.transport.close()
                return
            self.peer_chain = peer_chain(ssl_object)
        now = _now()
        self._idle_since = now
        self._head_started = now
        self.server.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.server.connections.discard(self)
        for ex in (self.current, *self._queue):
            if ex is not None:
                ex.abort()
        self._queue.clear()
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    def data_received(self, data: bytes) -> None:
        out = self.tunnel_out
        if out is not None:
            # The tunnel's hot path: one read here, one write there, nothing per frame.
            self.tunnel_bytes += len(data)
            self.tunnel_last = _now()
            if not out.is_closing():
                out.write(data)
            return
        if self._linger_until:
            self._linger_last = _now()  # discarded: the answer has been sent
            return
        now = self._batch_time = _now()
        if not self.reader.in_head and self.current is None:
            self._head_started = now
        try:
            self.reader.feed(data)
        except UpgradeRequested as up:
            ex = self._receiving
            if ex is not None:
                ex.upgrade_rest = up.rest
            # Nothing more is parsed on this connection: it is tunnelled or closed.
            self._pause(_PAUSE_UPGRADE)
        except ClientError as err:
            self._protocol_error(err)
        to_start = self._to_start
        if to_start is not None:
            self._to_start = None
            if to_start.phase is Phase.RECEIVING and to_start is self.current:
                self._start(to_start)
        if self.current is not None:
            self.current.last_activity = now

    def eof_received(self) -> bool | None:
        # A client that closes its side while its request is in flight has gone away
        # (as nginx treats it: the upstream request is cancelled); in a tunnel, the
        # close ends the tunnel (on_lost closes the upstream).
        if self._linger_until:
            return False  # the client has read our answer and finished: close now
        ex = self.current
        if ex is not None and ex.phase is not Phase.TUNNEL:
            ex.abort()
        return None

    def pause_writing(self) -> None:
        self._write_paused = True
        ex = self.current
        if ex is not None and ex.response_producer is not None:
            ex.response_producer.pause_reading()
        peer = self.tunnel_peer
        if peer is not None:
            peer.pause_reading()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        self._write_paused = False
        ex = self.current
        if ex is not None and ex.response_producer is not None:
            ex.response_producer.resume_reading()
        peer = self.tunnel_peer
        if peer is not None:
            peer.resume_reading()  # type: ignore[attr-defined]

    # -- RequestSink --------------------------------------------------------------------

    def on_request(self, head: RequestHead) -> None:
        now = self._batch_time  # heads arrive only while data_received parses a batch
        ex = Exchange(
            self,
            head,
            client_ip=self.client_ip,
            scheme=self.scheme,
            server_port=self.server_port,
            start_time=now,
        )
        ex.peer_chain = self.peer_chain
        self._receiving = ex
        if self.current is None:
            # Started once this batch of bytes is parsed: a framing error later in the
            # same batch must be able to reject the request before anything runs.
            self.current = ex
            self._to_start = ex
        else:
            self._queue.append(ex)
            self._pause(_PAUSE_PIPELINE)

    def on_body(self, chunk: bytes) -> None:
        ex = self._receiving
        if ex is not None:
            ex.feed_body(chunk)

    def on_request_end(self) -> None:
        ex = self._receiving
        if ex is not None:
            ex.feed_body_end()

    # -- used by Exchange ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        corked = self._corked
        if corked is not None:
            corked.append(data)
            return
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self._linger_until:
            transport.write(data)

    def cork(self) -> None:
        """Gather writes until :meth:`uncork`: a response head and body in one send()."""
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked:
            self.write(corked[0] if len(corked) == 1 else b"".join(corked))

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    def pause_reading_for_body(self) -> None:
        self._pause(_PAUSE_BODY)

    def resume_reading_for_body(self) -> None:
        self._resume(_PAUSE_BODY)

    def pause_reading(self) -> None:
        """Producer interface: the peer cannot take more bytes right now."""
        self._pause(_PAUSE_PEER)

    def resume_reading(self) -> None:
        self._resume(_PAUSE_PEER)

    def exchange_finished(self, ex: Exchange) -> None:
        if ex is not self.current:
            return
        self.current = None
        self._served += 1
        if not ex.keep_alive or not ex.body_done or self._closing or self.server.draining:
            self.close()
            return
        if self._queue:
            self._start(self._queue.popleft())
            if not self._queue:
                self._resume(_PAUSE_PIPELINE)
            return
        self._receiving = None
        self._idle_since = _now()
        self._resume(_PAUSE_PIPELINE)

    def exchange_aborted(self, ex: Exchange) -> None:
        if ex is self.current:
            self.current = None
        transport = self.transport
        if transport is not None:
            transport.abort()

    def start_tunnel(self, out: asyncio.Transport, peer: asyncio.Protocol) -> bytes:
        """Switch to tunnel mode: from now on the client's bytes are written to ``out``
        (``peer``'s transport). Returns the bytes the client sent after its request head."""
        self.tunnel_out = out
        self.tunnel_peer = peer
        self.tunnel_last = _now()
        ex = self.current
        rest = ex.upgrade_rest if ex is not None else b""
        self._resume(_PAUSE_UPGRADE)
        return rest

    def close(self, *, linger: bool | None = None) -> None:
        """Close after what has been written; ``linger`` (default: a request body is still
        arriving) first drains what the client is still sending (see :data:`LINGER_MAX_S`)."""
        self._closing = True
        self.uncork()
        transport = self.transport
        if transport is None or transport.is_closing() or self._linger_until:
            return
        if linger is None:
            receiving = self._receiving
            linger = receiving is not None and not receiving.body_done
        if linger and self.tunnel_out is None:
            now = _now()
            self._linger_until = now + LINGER_MAX_S
            self._linger_last = now
            self._pause_mask = 0
            with contextlib.suppress(RuntimeError):
                transport.resume_reading()
            if transport.can_write_eof():
                with contextlib.suppress(OSError, RuntimeError):
                    transport.write_eof()  # the client sees the end of our answer
            return
        transport.close()

    # -- internals ----------------------------------------------------------------------

    def _start(self, ex: Exchange) -> None:
        self.current = ex
        if not DRIVE_INLINE or self.server.needs_task(ex):
            self.loop.create_task(self._run(ex))
            return
        if self._driving:
            # Started from the previous pipelined request's response, inside its
            # coroutine: run it after that step returns. Recursing here would grow the
            # stack by one request per pipelined request until RecursionError.
            self._next_inline = ex
            return
        self._driving = True
        try:
            next_ex: Exchange | None = ex
            while next_ex is not None:
                drive_inline(self.loop, self._run(next_ex))
                next_ex, self._next_inline = self._next_inline, None
        finally:
            self._driving = False

    async def _run(self, ex: Exchange) -> None:
        if ex.phase is Phase.ABORTED:
            return  # rejected (e.g. bad body framing) before its handler got to run
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

    def _fail_exchange(self, ex: Exchange, err: GatehouseError) -> None:
        if ex.phase is Phase.RECEIVING:
            ex.cancel_upstream()
            ex.keep_alive = False
            ex.send(self.server.render_error(err, ex.head))
        elif ex.phase is Phase.RESPONDING:
            ex.abort()

    def _protocol_error(self, err: ClientError) -> None:
        log.info(
            "rejected request from %s: %s (%d)",
            self.client_ip,
            err,
            err.status,
            extra={"client": self.client_ip, "status": err.status},
        )
        ex = self.current
        if ex is not None and ex.phase is not Phase.RECEIVING:
            # Mid-stream (e.g. a bad chunk in an upload being proxied): cut everything.
            ex.abort()
            return
        self._queue.clear()
        self._receiving = None
        if ex is not None:
            ex.discard()
        self.current = None
        response = self.server.render_error(err, None)
        headers = "".join(f"{k}: {v}\r\n" for k, v in response.headers)
        self.write(
            b"HTTP/1.1 %d %s\r\n%bcontent-length: %d\r\nconnection: close\r\n\r\n%b"
            % (
                err.status,
                err.title.encode(),
                headers.encode("latin-1"),
                len(response.body),
                response.body,
            )
        )
        self.server.on_protocol_error(err, self.client_ip)
        # The client may still be sending (an oversized body, more pipelined requests).
        self.close(linger=err.status != 408)

    def _pause(self, reason: int) -> None:
        was = self._pause_mask
        self._pause_mask = was | reason
        if not was and self.transport is not None:
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()

    def _resume(self, reason: int) -> None:
        was = self._pause_mask
        if not was & reason:
            return
        self._pause_mask = was & ~reason
        if not self._pause_mask and self.transport is not None and not self._closing:
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    def check_timeouts(self, now: float) -> None:
        """Apply every timeout rule; called by the server's sweep."""
        if self._linger_until:
            if now > self._linger_until or now - self._linger_last > LINGER_QUIET_S:
                transport = self.transport
                if transport is not None:
                    transport.close()
            return
        if self.tunnel_out is not None or self._closing:
            return
        s = self.settings
        ex = self.current
        if ex is None:
            if self.reader.in_head:
                if now - self._head_started > s.timeout_request_head_s:
                    self._protocol_error(RequestTimeout("request head not received in time"))
            elif now - self._idle_since > (
                s.timeout_idle_s if self._served else s.timeout_request_head_s
            ):
                # Before the first request the head timeout applies: a client that
                # connects and sends nothing is a slowloris, not a keep-alive.
                self.close()
            elif self.server.draining:
                self.close()
            return
        phase = ex.phase
        if phase is Phase.RECEIVING:
            if not ex.body_done and s.timeout_read_s and now - ex.start_time > s.timeout_read_s:
                self._fail_exchange(ex, RequestTimeout("request body not received in time"))
            elif ex.request_deadline and now > ex.request_deadline:
                ex.expire()
        elif phase is Phase.RESPONDING:
            if ex.response_idle_timeout_s and now - ex.last_activity > ex.response_idle_timeout_s:
                log.warning("response stream idle too long; cutting %s", ex.head.target[:200])
                ex.abort()
            elif s.timeout_write_s and now - ex.start_time > s.timeout_write_s:
                log.warning("response not written in time; cutting %s", ex.head.target[:200])
                ex.abort()


class HttpServer:
    """Listening sockets, the set of live connections, the timer sweep and graceful drain."""

    def __init__(
        self,
        handler: Handler,
        render_error: ErrorRenderer,
        settings: ServerSettings,
        loop: asyncio.AbstractEventLoop | None = None,
        codec: str = "http1",
    ) -> None:
        self.handler = handler
        self.render_error = render_error
        self.settings = settings
        self.loop = loop or asyncio.get_running_loop()
        #: Pomerium's ``codec_type``: ``http1``, ``http2`` or ``auto`` (see ``http/h2/select``).
        self.codec = codec
        self.connections: set[ServedConnection] = set()
        self.draining = False
        self._servers: list[asyncio.base_events.Server] = []
        self._sweeper: asyncio.Task[None] | None = None
        needs = getattr(handler, "needs_task", None)
        #: Whether a request's handler must run in a Task (default: always).
        self.needs_task: Callable[[Exchange], bool] = (
            needs if needs is not None else (lambda ex: True)
        )
        if not DRIVE_INLINE and needs is not None:
            self.loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        #: Hook for metrics/logs of requests rejected before they had an exchange.
        self.on_protocol_error: Callable[[ClientError, str], None] = lambda err, ip: None

    async def listen(
        self,
        host: str | None,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
        ssl_handshake_timeout_s: float | None = None,
    ) -> list[tuple[str, int]]:
        """Start listening; returns the bound (host, port) pairs (port 0 binds a free port)."""
        # asyncio refuses a handshake timeout without TLS.
        handshake = ssl_handshake_timeout_s if ssl_context is not None else None
        factory = self._protocol_factory()
        if sock is not None:
            server = await self.loop.create_server(
                factory,
                sock=sock,
                ssl=ssl_context,
                backlog=LISTEN_BACKLOG,
                ssl_handshake_timeout=handshake,
            )
        else:
            server = await self.loop.create_server(
                factory,
                host=host,
                port=port,
                ssl=ssl_context,
                reuse_port=reuse_port or None,
                reuse_address=True,
                backlog=LISTEN_BACKLOG,
                ssl_handshake_timeout=handshake,
            )
        self._servers.append(server)
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())
        # uvloop gives a list where asyncio's stubs promise a tuple: read it untyped.
        socks: list[Any] = list(getattr(server, "sockets", None) or ())
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in socks]

    def _protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        """HTTP/1.1 connections, or a selector that picks HTTP/2 where it is allowed."""
        if self.codec == "http1":
            return lambda: DownstreamProtocol(self)
        from .h2.select import Codec, ProtocolSelector

        codec = Codec(self.codec)
        return lambda: ProtocolSelector(self, codec)

    def update_settings(self, settings: ServerSettings) -> None:
        """Apply new limits/timeouts to new connections (existing ones keep theirs)."""
        self.settings = settings

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = _now()
            for conn in list(self.connections):
                try:
                    conn.check_timeouts(now)
                except Exception:
                    log.exception("timeout sweep failed for a connection")

    async def shutdown(self, timeout_s: float) -> int:
        """Stop accepting, let in-flight requests finish (at most ``timeout_s``), then close.

        Returns the number of connections that had to be cut.
        """
        self.draining = True
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            if conn.idle:
                conn.close()
        deadline = _now() + timeout_s
        while self.connections and _now() < deadline:
            await asyncio.sleep(0.05)
        cut = len(self.connections)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        return cut
