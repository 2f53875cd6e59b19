"""The upstream side: pooled keep-alive HTTP/1.1 connections to the apps behind gatehouse.

An :class:`UpstreamConnection` carries one request at a time. The caller writes the head
and streams the body with :meth:`UpstreamConnection.send_body`; the response is parsed by
``httptools`` and pushed into a :class:`ResponseSink` (the proxy's forwarder), which writes
it on to the client. A connection returns to its :class:`ConnectionPool` only after a
complete response that allows reuse: never mid-response, never after ``Connection: close``,
never after a response whose body was read to close.

Known llhttp behaviours handled here: an interim ``1xx`` response (other than ``101``) is
reported as a complete message and is skipped; a response to ``HEAD`` has no body whatever
its ``Content-Length`` says, so the parser is replaced after its head (it cannot be told).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Protocol

import httptools

from ..errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError

log = logging.getLogger("gatehouse.upstream")

#: Idle pooled connections older than this are closed (many apps close at 5-75 s), seconds.
POOL_IDLE_TIMEOUT_S = 30.0
#: Idle connections kept per endpoint; more are closed on release. Well above the
#: requests in flight at once under heavy load: with 5,000 clients, one loop iteration
#: starts and finishes thousands of upstream requests, and with a small cap (256) every
#: burst closed thousands of connections that the next burst reopened (a connect, a close
#: and a TIME_WAIT port each; the ephemeral ports ran short and CPU per request tripled).
#: Unused ones still close after POOL_IDLE_TIMEOUT_S.
POOL_MAX_IDLE_PER_ENDPOINT = 4096
#: Largest upstream response head accepted, bytes.
MAX_RESPONSE_HEAD_BYTES = 64 * 1024


class ResponseSink(Protocol):
    """Receives one upstream response."""

    def on_response_head(
        self, status: int, headers: list[tuple[bytes, bytes]], content_length: int | None
    ) -> None: ...

    def on_response_body(self, chunk: bytes) -> None: ...

    def on_response_end(self) -> None: ...

    def on_response_upgrade(
        self, status: int, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None: ...

    def on_response_error(self, error: UpstreamError) -> None: ...

    def cork(self) -> None:
        """Gather writes to the client while one batch of upstream bytes is parsed."""

    def uncork(self) -> None: ...


class ConnState(enum.Enum):
    CONNECTING = "connecting"
    IDLE = "idle"
    BUSY = "busy"
    TUNNEL = "tunnel"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: the pool key."""

    scheme: str
    host: str
    port: int
    #: SNI / certificate name (https only).
    server_name: str | None = None
    #: The client context for https (built once per route setting by ``tls/upstream``);
    #: ``None``: a default context (system roots, name checked).
    tls_context: ssl.SSLContext | None = field(default=None, compare=False)
    #: The same settings offering ALPN ``h2`` (gRPC calls over TLS); made with
    #: ``tls_context``, so the key below covers it.
    h2_tls_context: ssl.SSLContext | None = field(default=None, compare=False)
    #: The pool's dictionary key: a string, whose hash Python caches (a dataclass's
    #: generated ``__hash__`` would run on every take and release).
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # repr of the fields: unambiguous whatever characters a value holds, so two
        # endpoints with different TLS settings can never share pooled connections
        # (contexts are shared between routes only when built from the same settings).
        key = repr(
            (
                self.scheme,
                self.host,
                self.port,
                self.server_name,
                id(self.tls_context),
            )
        )
        object.__setattr__(self, "key", key)


class _StopParsing(Exception):
    """Raised from a parser callback to stop at the end of a bodiless response head."""


class UpstreamConnection(asyncio.Protocol):
    """One connection to an upstream; one request at a time."""

    def __init__(self, pool: ConnectionPool, endpoint: Endpoint) -> None:
        self.pool = pool
        self.endpoint = endpoint
        self.state = ConnState.CONNECTING
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        #: Pauses the client's reading when we cannot write the request body fast enough.
        self.request_producer: object | None = None
        self.idle_since = 0.0
        self.received_any = False
        self.head_only = False
        self.reusable = False
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._content_length: int | None = None
        self._chunked = False
        self._in_body = False
        self._chunked_request = False
        self._request_complete = True
        self._write_paused = False
        self._status = 0
        #: Tunnel mode: the client's transport; the upstream's bytes are written to it as
        #: they come (see ``http/tunnel.py``).
        self.tunnel_out: asyncio.Transport | None = None
        #: The client's protocol: paused while we cannot write to the upstream fast enough.
        self.tunnel_peer: object | None = None
        #: Bytes relayed upstream -> client, and when the last of them came (monotonic s).
        self.tunnel_bytes = 0
        self.tunnel_last = 0.0
        self.closed: asyncio.Future[None] = pool.loop.create_future()

    # -- asyncio callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        was = self.state
        self.state = ConnState.CLOSED
        self.pool.forget(self)
        if not self.closed.done():
            self.closed.set_result(None)
        sink, self.sink = self.sink, None
        if was is ConnState.TUNNEL:
            peer = self.tunnel_peer
            self.tunnel_peer = None
            if peer is not None:
                peer.close()  # type: ignore[attr-defined]
            return
        if sink is None:
            return
        if self._in_body and self._content_length is None and not self._chunked:
            # Read-to-close body (RFC 9112 §6.3 rule 8): the close ends the message.
            sink.on_response_end()
            return
        if self.received_any:
            sink.on_response_error(UpstreamProtocolError("upstream closed mid-response"))
        else:
            sink.on_response_error(UpstreamConnectError("upstream closed the connection"))

    def data_received(self, data: bytes) -> None:
        out = self.tunnel_out
        if out is not None:
            self.tunnel_bytes += len(data)
            self.tunnel_last = time.monotonic()
            if not out.is_closing():
                out.write(data)
            return
        if self.sink is None:
            # Bytes with no request outstanding: the connection is not trustworthy.
            self.close()
            return
        self.received_any = True
        sink = self.sink
        sink.cork()
        try:
            self._parser.feed_data(data)
        except _StopParsing:
            pass
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self._upgrade(data[offset:])
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _StopParsing):
                return
            self._protocol_error(f"response rejected: {exc.__context__ or exc}")
        except httptools.HttpParserError as exc:
            self._protocol_error(f"malformed response: {exc}")
        finally:
            sink.uncork()

    def pause_writing(self) -> None:
        self._write_paused = True
        producer = self.request_producer or self.tunnel_peer
        if producer is not None:
            producer.pause_reading()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        self._write_paused = False
        producer = self.request_producer or self.tunnel_peer
        if producer is not None:
            producer.resume_reading()  # type: ignore[attr-defined]

    # -- Producer interface (the client is slow: stop reading the upstream) ------------

    def pause_reading(self) -> None:
        if self.transport is not None:
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.state is not ConnState.CLOSED:
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    # -- request ------------------------------------------------------------------------

    def send_request(
        self,
        head: bytes,
        sink: ResponseSink,
        *,
        chunked_body: bool,
        head_only: bool,
        has_body: bool,
    ) -> None:
        """Write a request head (with its terminating blank line) and await the response."""
        self.sink = sink
        self.state = ConnState.BUSY
        self.received_any = False
        self.head_only = head_only
        self.reusable = False
        self._chunked_request = chunked_body
        self._request_complete = not has_body
        self._headers = []
        self._head_bytes = 0
        self._content_length = None
        self._chunked = False
        self._in_body = False
        if self.transport is not None:
            self.transport.write(head)

    def send_body(self, chunk: bytes) -> None:
        if self.transport is None or self.state is not ConnState.BUSY or not chunk:
            return
        if self._chunked_request:
            self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self.transport.write(chunk)

    def end_body(self) -> None:
        if self._chunked_request and self.transport is not None and self.state is ConnState.BUSY:
            self.transport.write(b"0\r\n\r\n")
        self._request_complete = True
        self.request_producer = None

    def close(self) -> None:
        self.state = ConnState.CLOSED
        self.sink = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.state = ConnState.CLOSED
        self.sink = None
        if self.transport is not None:
            self.transport.abort()

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    # -- httptools callbacks -----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_RESPONSE_HEAD_BYTES:
            raise UpstreamProtocolError("response head too large")
        lname = name.lower()
        if lname == b"content-length":
            self._content_length = int(value)
        elif lname == b"transfer-encoding":
            self._chunked = True
        self._headers.append((lname, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._status = status
        if 100 <= status < 200:
            if status == 101:
                return  # HttpParserUpgrade follows
            self._headers = []  # interim response: wait for the final one
            self._head_bytes = 0
            self._content_length = None
            self._chunked = False
            return
        keep_alive = self._parser.should_keep_alive()
        sink = self.sink
        if sink is None:
            raise _StopParsing
        no_body = self.head_only or status in (204, 304)
        self.reusable = keep_alive and (
            no_body or self._content_length is not None or self._chunked
        )
        sink.on_response_head(status, self._headers, self._content_length)
        if no_body:
            self._finish()
            # llhttp cannot be told a HEAD response has no body: start a fresh parser.
            self._parser = httptools.HttpResponseParser(self)
            raise _StopParsing
        self._in_body = True

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.on_response_body(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:
            return
        if self.sink is not None:
            self._finish()

    # -- internals -----------------------------------------------------------------------

    def _finish(self) -> None:
        sink, self.sink = self.sink, None
        self._in_body = False
        self.request_producer = None
        if sink is not None:
            sink.on_response_end()
        # The sink may have closed us (e.g. the client went away).
        if self.state is ConnState.BUSY:
            # Reuse only when both messages are complete (an early answer to an
            # unfinished upload leaves the upstream expecting the rest of the body).
            if self.reusable and self._request_complete:
                self.pool.release(self)
            else:
                self.close()

    def _protocol_error(self, reason: str) -> None:
        sink, self.sink = self.sink, None
        self.abort()
        if sink is not None:
            sink.on_response_error(UpstreamProtocolError(reason))

    def _upgrade(self, rest: bytes) -> None:
        sink, self.sink = self.sink, None
        if self._status != 101 or sink is None:
            self._protocol_error("unexpected upgrade")
            return
        self.state = ConnState.TUNNEL
        self.pool.forget(self)
        sink.on_response_upgrade(101, self._headers, rest)

    def start_tunnel(self, out: asyncio.Transport, peer: object) -> None:
        """Switch to tunnel mode: from now on the upstream's bytes are written to ``out``
        (``peer``'s transport), as they come."""
        self.tunnel_out = out
        self.tunnel_peer = peer
        self.tunnel_last = time.monotonic()


def connect_error(endpoint: Endpoint, exc: OSError | TimeoutError) -> UpstreamConnectError:
    """The error (and its log text) for a failed connect or TLS handshake, the same for
    HTTP/1.1 and HTTP/2 upstreams; raise it ``from exc``."""
    where = f"{endpoint.host}:{endpoint.port}"
    if isinstance(exc, TimeoutError):
        return UpstreamConnectError(f"connect to {where} timed out")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UpstreamConnectError(
            f"TLS with {where} failed: certificate not trusted ({exc.verify_message})"
        )
    if isinstance(exc, ssl.SSLError):
        return UpstreamConnectError(f"TLS with {where} failed: {exc.reason}")
    return UpstreamConnectError(f"connect to {where} failed: {exc.strerror or exc}")


class Closable(Protocol):
    def close_all(self) -> None: ...


class ConnectionPool:
    """Idle keep-alive connections per :class:`Endpoint`, most recently used first."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self._idle: dict[str, list[UpstreamConnection]] = {}
        self._default_ssl: ssl.SSLContext | None = None
        self._sweeper: asyncio.Task[None] | None = None
        #: The HTTP/2 connections beside these (``proxy/forward_h2`` makes it on first
        #: use; an ``H2Pool``, typed loosely as ``http/h2`` imports this module).
        self.h2: Closable | None = None

    def take_idle(self, endpoint: Endpoint) -> UpstreamConnection | None:
        """An idle open connection to ``endpoint``, or ``None``."""
        conns = self._idle.get(endpoint.key)
        while conns:
            conn = conns.pop()
            if (
                conn.state is ConnState.IDLE
                and conn.transport is not None
                and not conn.transport.is_closing()
            ):
                return conn
        return None

    async def connect(self, endpoint: Endpoint, timeout_s: float) -> UpstreamConnection:
        """Open a new connection.

        Raises:
            UpstreamConnectError: refused, unreachable, DNS or TLS failure, or timeout.
        """
        ctx = self._ssl_context(endpoint) if endpoint.scheme == "https" else None
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: UpstreamConnection(self, endpoint),
                    endpoint.host,
                    endpoint.port,
                    ssl=ctx,
                    server_hostname=(endpoint.server_name or endpoint.host) if ctx else None,
                ),
                timeout=timeout_s if timeout_s > 0 else None,
            )
        except (TimeoutError, OSError) as exc:
            raise connect_error(endpoint, exc) from exc
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection whose response completed cleanly."""
        conn.state = ConnState.IDLE
        conn.idle_since = time.monotonic()
        conns = self._idle.get(conn.endpoint.key)
        if conns is None:
            conns = self._idle[conn.endpoint.key] = []
        if len(conns) >= POOL_MAX_IDLE_PER_ENDPOINT:
            conn.close()
            return
        conns.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        conns = self._idle.get(conn.endpoint.key)
        if conns and conn in conns:
            conns.remove(conn)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(POOL_IDLE_TIMEOUT_S / 4)
            cutoff = time.monotonic() - POOL_IDLE_TIMEOUT_S
            for conns in list(self._idle.values()):
                for conn in [c for c in conns if c.idle_since < cutoff]:
                    conns.remove(conn)
                    conn.close()

    def close_all(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.h2 is not None:
            self.h2.close_all()

    def _ssl_context(self, endpoint: Endpoint) -> ssl.SSLContext:
        if endpoint.tls_context is not None:
            return endpoint.tls_context
        ctx = self._default_ssl
        if ctx is None:
            ctx = self._default_ssl = ssl.create_default_context()
            ctx.set_alpn_protocols(["http/1.1"])
        return ctx
