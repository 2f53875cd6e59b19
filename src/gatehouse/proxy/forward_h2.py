"""Forward one request over HTTP/2 to an upstream: ``to: h2c://…`` routes, and gRPC calls
to ``https://`` upstreams (ALPN ``h2``).

The request head is the one :func:`~gatehouse.proxy.headers.upstream_request_head` makes
for HTTP/1.1 upstreams, turned into an HTTP/2 header list, so every header rule
(identity headers stripped and set, hop-by-hop dropped, ``X-Forwarded-*``) is the same
code. ``te: trailers`` is passed on when the client sent it (gRPC requires it, RFC 9113
§8.2.2 allows it). The response streams back with its trailers, so ``grpc-status``
reaches the client; errors gatehouse makes become gRPC statuses in
:class:`~gatehouse.http.h2.stream.H2Exchange`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from time import monotonic as _now

from ..errors import UpstreamConnectError, UpstreamError, UpstreamTimeout
from ..http.exchange import Exchange, Phase
from ..http.h2.upstream import H2Pool, UpstreamStream
from ..http.upstream import ConnectionPool, Endpoint
from .headers import client_response_block, upstream_request_head
from .router import Route

Header = tuple[bytes, bytes]

#: Connect timeout cap, seconds (the route timeout applies when smaller).
CONNECT_TIMEOUT_S = 10.0

#: Headers of the HTTP/1.1 head that HTTP/2 expresses otherwise or forbids (RFC 9113 §8.2.2).
_NOT_IN_H2 = frozenset({b"host", b"transfer-encoding", b"connection", b"upgrade", b"keep-alive"})

#: One HTTP/2 pool per HTTP/1.1 pool (per worker), made on first use.
_pools: dict[int, tuple[ConnectionPool, H2Pool]] = {}
_tls_contexts: dict[tuple[int, bool, str | None], ssl.SSLContext] = {}


def h2_pool_for(pool: ConnectionPool) -> H2Pool:
    entry = _pools.get(id(pool))
    if entry is None or entry[0] is not pool:
        entry = (pool, H2Pool(pool.loop))
        _pools[id(pool)] = entry
    return entry[1]


def _tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    """A client context offering only ``h2``, verifying as the route's own context does.

    The route's context (``Endpoint.tls_context``) offers ``http/1.1`` and is shared, so
    its verification settings and CA certificates are copied into one of our own.
    """
    base: ssl.SSLContext | None = getattr(endpoint, "tls_context", None)
    skip = bool(getattr(endpoint, "tls_skip_verify", False))
    cafile: str | None = getattr(endpoint, "tls_ca_file", None)
    key = (id(base), skip, cafile)
    ctx = _tls_contexts.get(key)
    if ctx is None:
        ctx = ssl.create_default_context(cafile=cafile)
        if base is not None:
            skip = skip or base.verify_mode == ssl.CERT_NONE
            cas = base.get_ca_certs(binary_form=True)
            if cas:
                ctx.load_verify_locations(cadata=b"".join(_der_to_pem(c) for c in cas).decode())
        if skip:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        _tls_contexts[key] = ctx
    return ctx


def _der_to_pem(der: bytes) -> bytes:
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


def h2_request_headers(head_block: bytes, *, scheme: bytes, wants_trailers: bool) -> list[Header]:
    """An HTTP/2 header list from an HTTP/1.1 request head made by ``upstream_request_head``."""
    lines = head_block.split(b"\r\n")
    method, _, rest = lines[0].partition(b" ")
    target = rest.rpartition(b" ")[0]
    authority = b""
    fields: list[Header] = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip()
        if name == b"host":
            authority = value
        if name in _NOT_IN_H2:
            continue
        fields.append((name, value))
    out: list[Header] = [
        (b":method", method),
        (b":scheme", scheme),
        (b":authority", authority),
        (b":path", target),
    ]
    out.extend(fields)
    if wants_trailers:
        out.append((b"te", b"trailers"))
    return out


class H2Forwarder:
    """Receives the upstream's response on one stream and writes it to the client."""

    __slots__ = ("exchange", "finished", "route", "started", "stream")

    def __init__(self, exchange: Exchange, route: Route) -> None:
        self.exchange = exchange
        self.route = route
        self.stream: UpstreamStream | None = None
        self.started = False
        self.finished: asyncio.Future[None] = exchange.connection.loop.create_future()

    def on_response_head(
        self, status: int, headers: list[Header], content_length: int | None
    ) -> None:
        ex = self.exchange
        if ex.phase is not Phase.RECEIVING:
            return
        self.started = True
        ex.request_deadline = 0.0
        ex.response_idle_timeout_s = self.route.idle_timeout_s
        ex.response_producer = self.stream
        ex.start_response_block(
            status, client_response_block(headers, self.route), content_length=content_length
        )
        if ex.connection.write_paused and self.stream is not None:
            self.stream.pause_reading()

    def on_response_body(self, chunk: bytes) -> None:
        ex = self.exchange
        ex.last_activity = _now()
        ex.write(chunk)

    def on_response_end(self, trailers: list[Header] | None) -> None:
        if trailers:
            self.exchange.end_with_trailers(trailers)
        else:
            self.exchange.end()
        if not self.finished.done():
            self.finished.set_result(None)

    def on_response_error(self, error: UpstreamError) -> None:
        if not self.finished.done():
            self.finished.set_exception(error)

    def client_gone(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
        if not self.finished.done():
            self.finished.set_result(None)

    def timed_out(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
        if not self.finished.done():
            self.finished.set_exception(UpstreamTimeout("upstream did not answer in time"))


async def forward_h2(
    exchange: Exchange,
    route: Route,
    pool: ConnectionPool,
    *,
    path: str,
    query: bytes,
    original_host: bytes,
    identity_headers: Sequence[tuple[bytes, bytes]] | None,
    session_cookie: bytes | None = None,
    set_headers: Sequence[tuple[bytes, bytes]] = (),
) -> tuple[str, float, bool]:
    """Proxy ``exchange`` over HTTP/2; returns (upstream URL, seconds, reused connection).

    Raises:
        UpstreamError: the upstream failed before any response was sent to the client.
    """
    balancer = route.balancer
    if balancer is None:  # pragma: no cover - only routes with upstreams get here
        raise UpstreamConnectError("route has no upstream")
    h2pool = h2_pool_for(pool)
    head = exchange.head
    started = _now()
    if route.timeout_s > 0:
        exchange.request_deadline = started + route.timeout_s
    target = balancer.pick()
    endpoint = target.endpoint
    conn = h2pool.take(endpoint)
    reused = conn is not None
    if conn is None:
        limit = (
            min(route.timeout_s, CONNECT_TIMEOUT_S) if route.timeout_s > 0 else CONNECT_TIMEOUT_S
        )
        ctx = None if endpoint.scheme == "h2c" else _tls_context(endpoint)
        try:
            conn = await h2pool.connect(endpoint, limit, ctx)
        except UpstreamConnectError:
            balancer.mark_failed(target)
            raise
    if exchange.phase is not Phase.RECEIVING:  # client gone or timed out meanwhile
        return target.url_text, 0.0, reused
    if target.down_until:
        balancer.mark_ok(target)
    host_header = original_host if route.preserve_host else route.host_rewrite or target.host_header
    upstream_path = (target.url_path + path) if target.url_path else path
    request_target = upstream_path.encode("utf-8") + (b"?" + query if query else b"")
    length = head.get(b"content-length") if head.has_body else None
    block = upstream_request_head(
        method=head.method,
        target=request_target,
        headers=head.headers,
        connection=head.connection,
        route=route,
        host_header=host_header,
        original_host=original_host,
        client_ip=exchange.client_ip,
        scheme=exchange.scheme,
        body_framing=b"content-length: " + length if length is not None else None,
        upgrade=None,
        identity_headers=identity_headers,
        session_cookie=session_cookie,
        set_headers=set_headers,
    )
    te = head.get(b"te")
    headers = h2_request_headers(
        block,
        scheme=b"http" if endpoint.scheme == "h2c" else b"https",
        wants_trailers=te is not None and b"trailers" in te.lower(),
    )
    forwarder = H2Forwarder(exchange, route)
    stream = conn.open_stream(headers, forwarder, end_stream=not head.has_body)
    forwarder.stream = stream
    exchange.on_abort(forwarder.client_gone)
    exchange.on_timeout(forwarder.timed_out)
    if head.has_body:
        stream.producer = exchange.connection
        exchange.stream_body(stream.send_body, stream.end_body)
    try:
        await forwarder.finished
    except UpstreamError:
        exchange.on_abort(None)
        exchange.on_timeout(None)
        if not forwarder.started and exchange.phase is Phase.RECEIVING:
            raise
        exchange.abort()
        return target.url_text, _now() - started, reused
    exchange.on_abort(None)
    exchange.on_timeout(None)
    return target.url_text, _now() - started, reused
