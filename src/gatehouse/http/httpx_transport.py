"""An ``httpx`` transport over gatehouse's own upstream pool, for the few outbound calls
gatehouse makes itself (the IdP's discovery, keys, token, userinfo and revocation).

Why: httpx's default transport (httpcore over anyio and h11) cost about 0.45 ms of CPU per
call on these machines, the largest single item of a sign-in; this one reuses the
keep-alive pool and llhttp parser of :mod:`.upstream` and costs a fifth of that, while
callers and tests keep httpx's client, request and response types (and
``httpx.MockTransport``).

Theory of operation: one request at a time per pooled connection. The request is written
whole (head and buffered body in one write); :class:`_Collector` gathers the response into
memory up to ``max_response_bytes`` and resolves a future. Limits, all failing with an
httpx exception (callers map ``httpx.HTTPError``) and never a hang:

- connect (TCP and TLS handshake): the request's ``connect`` timeout;
- the whole response, from the request written to its last byte: the ``read`` timeout
  (a deadline, not an idle timer, so a peer trickling bytes is cut off as well);
- response head: :data:`.upstream.MAX_RESPONSE_HEAD_BYTES`; body: ``max_response_bytes``,
  checked against ``Content-Length`` before reading and against the bytes as they come;
- connections: at most ``max_connections`` at once, waiting at most the ``pool`` timeout.

Only identity bodies are accepted: the client asks for ``Accept-Encoding: identity``,
and a compressed answer could expand past any limit checked on the wire. Proxies and
environment settings are never used. A reused connection that closes before answering an
idempotent request (the peer's keep-alive timer won the race) is retried once on a fresh one.

Acknowledgements: when a read leaves a response incomplete, the bytes are acknowledged at
once (``TCP_QUICKACK``) instead of after Linux's delayed-ACK timer (40 ms). A peer that
writes its head and body in two sends with Nagle's algorithm on (Python's ``http.server``,
many small IdPs) holds the body until that ACK, so every IdP call, and each sign-in's token
exchange, otherwise waited 40 ms with nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Any

import httpx

from ..errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError
from .upstream import ConnectionPool, Endpoint, UpstreamConnection

#: Largest response body accepted by default (bytes); IdP documents are a few KiB.
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
#: Connections open at once per transport (httpx's own default limit).
DEFAULT_MAX_CONNECTIONS = 100
#: Methods retried once when a reused connection closes before any response byte.
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
#: Bytes that must never reach the wire inside a header or the request target.
_FORBIDDEN = (b"\r", b"\n", b"\0")
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Request framing headers, replaced by our own for the buffered body.
_FRAMING = (b"content-length", b"transfer-encoding")


class _Collector:
    """The :class:`~.upstream.ResponseSink` of one request: buffers the response."""

    __slots__ = ("chunks", "conn", "done", "headers", "limit", "size", "status")

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.conn: UpstreamConnection | None = None

    def _fail(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()

    def on_response_head(
        self, status: int, headers: list[tuple[bytes, bytes]], content_length: int | None
    ) -> None:
        self.status = status
        self.headers = headers
        if content_length is not None and content_length > self.limit:
            self._fail(httpx.ReadError(f"response body larger than {self.limit} bytes"))

    def on_response_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self._fail(httpx.ReadError(f"response body larger than {self.limit} bytes"))
            return
        self.chunks.append(chunk)

    def on_response_end(self) -> None:
        self.conn = None
        if not self.done.done():
            self.done.set_result(None)

    def on_response_upgrade(
        self, status: int, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade"))

    def on_response_error(self, error: UpstreamError) -> None:
        self.conn = None
        if self.done.done():
            return
        if isinstance(error, UpstreamProtocolError):
            self.done.set_exception(httpx.RemoteProtocolError(str(error)))
        else:
            self.done.set_exception(httpx.ReadError(str(error)))

    def on_timeout(self) -> None:
        self._fail(httpx.ReadTimeout("no complete response within the read timeout"))

    def cork(self) -> None:
        return

    def uncork(self) -> None:
        # Called after each read: a response still incomplete gets its ACK now (see the
        # module docstring), so a peer waiting on it with Nagle's algorithm sends the rest.
        conn = self.conn
        if conn is not None and not self.done.done():
            _ack_now(conn)


class PooledTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive over :class:`~.upstream.ConnectionPool`; see the module doc.

    ``ssl_context`` verifies https peers (required for https; build it with the roots to
    trust). The pool is bound to the running loop on first use.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_response_bytes = max_response_bytes
        self._max_connections = max_connections
        self._pool: ConnectionPool | None = None
        self._slots: asyncio.Semaphore | None = None
        self._endpoints: dict[tuple[str, str, int], Endpoint] = {}

    def _bind(self) -> tuple[ConnectionPool, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        pool, slots = self._pool, self._slots
        if pool is None or slots is None or pool.loop is not loop:
            # A new loop (a client made before asyncio.run, or reused by a second run):
            # the old loop's connections cannot be used from this one.
            if pool is not None:
                pool.close_all()
            pool = self._pool = ConnectionPool(loop)
            slots = self._slots = asyncio.Semaphore(self._max_connections)
        return pool, slots

    def _endpoint(self, url: httpx.URL) -> Endpoint:
        scheme = url.scheme
        port = url.port or _DEFAULT_PORTS.get(scheme, 0)
        key = (scheme, url.host, port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            if scheme not in _DEFAULT_PORTS or not url.host:
                raise httpx.UnsupportedProtocol(f"cannot send to {scheme!r} URLs")
            if scheme == "https" and self._ssl_context is None:
                raise httpx.UnsupportedProtocol("https needs a TLS context")
            endpoint = Endpoint(
                scheme,
                url.host,
                port,
                tls_context=self._ssl_context if scheme == "https" else None,
            )
            if len(self._endpoints) < 64:  # a handful of IdP hosts; never unbounded
                self._endpoints[key] = endpoint
        return endpoint

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool, slots = self._bind()
        endpoint = self._endpoint(request.url)
        head = _request_head(request, await request.aread())
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        if slots.locked():
            try:
                await asyncio.wait_for(slots.acquire(), _seconds(timeouts.get("pool")))
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection within the pool timeout") from None
        else:
            # A free slot is taken at once: no wait_for task and loop turn for nothing.
            await slots.acquire()
        try:
            retry = request.method.encode() in IDEMPOTENT_METHODS
            while True:
                conn = pool.take_idle(endpoint)
                reused = conn is not None
                if conn is None:
                    conn = await _connect(pool, endpoint, timeouts.get("connect"))
                sink = await self._exchange(conn, request, head, timeouts.get("read"))
                if isinstance(sink, _Collector):
                    break
                if not (retry and reused):
                    raise sink
                retry = False
        finally:
            slots.release()
        return httpx.Response(
            sink.status,
            headers=sink.headers,
            stream=httpx.ByteStream(b"".join(sink.chunks)),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def _exchange(
        self, conn: UpstreamConnection, request: httpx.Request, head: bytes, read: object
    ) -> _Collector | httpx.TransportError:
        """The response, or (for a reused connection that closed unanswered) the error."""
        loop = conn.pool.loop
        sink = _Collector(loop, self._max_response_bytes)
        sink.conn = conn
        conn.send_request(
            head, sink, chunked_body=False, head_only=request.method == "HEAD", has_body=False
        )
        timeout_s = _seconds(read)
        timer = loop.call_later(timeout_s, sink.on_timeout) if timeout_s is not None else None
        try:
            await sink.done
        except httpx.ReadError as exc:
            if conn.received_any or sink.size:
                raise
            return exc
        except BaseException:
            # Cancelled or failed mid-response: never return the connection to the pool.
            conn.abort()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        encoding = _header(sink.headers, b"content-encoding")
        if encoding not in (b"", b"identity"):
            raise httpx.DecodingError(
                f"response has Content-Encoding {encoding.decode('latin-1')!r} (asked identity)"
            )
        return sink

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close_all()
            self._pool = None


async def _connect(pool: ConnectionPool, endpoint: Endpoint, timeout: object) -> UpstreamConnection:
    seconds = _seconds(timeout)
    try:
        return await pool.connect(endpoint, seconds if seconds is not None else 0)
    except UpstreamConnectError as exc:
        if isinstance(exc.__cause__, TimeoutError):
            raise httpx.ConnectTimeout(str(exc)) from exc
        raise httpx.ConnectError(str(exc)) from exc


def _request_head(request: httpx.Request, body: bytes) -> bytes:
    """The request line, headers and body as one buffer (RFC 9112 §3, §6).

    The body is buffered, so its framing is always a ``Content-Length`` computed here.

    Raises:
        httpx.LocalProtocolError: a header or the target holds CR, LF or NUL (a value
            that came from the IdP, such as an access token, must not inject headers).
    """
    target = request.url.raw_path
    if any(bad in target for bad in (*_FORBIDDEN, b" ")):
        raise httpx.LocalProtocolError("request target holds a forbidden character")
    parts = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        if b":" in name or any(bad in name or bad in value for bad in _FORBIDDEN):
            raise httpx.LocalProtocolError("header holds a forbidden character")
        if name.lower() not in _FRAMING:
            parts += (name, b": ", value, b"\r\n")
    if body or request.method in ("POST", "PUT", "PATCH"):
        parts += (b"Content-Length: ", b"%d" % len(body), b"\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


def _ack_now(conn: UpstreamConnection) -> None:
    """Acknowledge what ``conn`` has received without waiting for the delayed-ACK timer."""
    quickack = getattr(socket, "TCP_QUICKACK", None)  # Linux only; elsewhere a no-op
    transport = conn.transport
    if quickack is None or transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # a closing socket: nothing left to acknowledge
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    for key, value in headers:
        if key == name:
            return value.strip().lower()
    return b""


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None
