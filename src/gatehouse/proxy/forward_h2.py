"""Forward one request over HTTP/2 to an upstream: ``to: h2c://…`` routes, and gRPC calls
to ``https://`` upstreams (ALPN ``h2``, with the route's own TLS settings: trust, name,
client certificate; see :mod:`gatehouse.tls.upstream`).

The request head is the one :func:`~gatehouse.proxy.headers.upstream_request_head` makes
for HTTP/1.1 upstreams, turned into an HTTP/2 header list, so every header rule
(identity headers stripped and set, hop-by-hop dropped, ``X-Forwarded-*``) is the same
code. ``te: trailers`` is passed on when the client sent it (gRPC requires it, RFC 9113
§8.2.2 allows it). Request trailers follow the body, filtered by
:func:`~gatehouse.proxy.headers.upstream_trailers`. The response streams back with its
trailers, so ``grpc-status`` reaches the client; errors gatehouse makes become gRPC
statuses in :class:`~gatehouse.http.h2.stream.H2Exchange`.

Endpoints are chosen, marked failed and ejected as for HTTP/1.1 (:mod:`.forward`): a
connection that cannot be made is retried on another endpoint, and a stream the upstream
refused unprocessed (``REFUSED_STREAM``, or past its ``GOAWAY``) is sent again on a
fresh connection, with the request body replayed from a copy kept until the upstream's
first response byte (at most :data:`REPLAY_LIMIT_BYTES`; a longer body is not retried).
As for HTTP/1.1, a bodiless request on a pooled connection that closed before any
response byte (without GOAWAY) is sent again on a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from time import monotonic as _now

from ..errors import UpstreamConnectError, UpstreamError, UpstreamRefused, UpstreamTimeout
from ..http.exchange import Exchange, Phase
from ..http.h2.upstream import H2Pool, UpstreamStream
from ..http.upstream import ConnectionPool, Endpoint
from .balancer import Target
from .circuit_breaker import CircuitBreaker, take_retry
from .headers import (
    client_response_block,
    upstream_address,
    upstream_request_head,
    upstream_trailers,
)
from .router import Route

log = logging.getLogger("gatehouse.proxy")

Header = tuple[bytes, bytes]

#: Connect timeout cap, seconds (the route timeout applies when smaller).
CONNECT_TIMEOUT_S = 10.0

#: Headers of the HTTP/1.1 head that HTTP/2 expresses otherwise or forbids (RFC 9113 §8.2.2).
_NOT_IN_H2 = frozenset({b"host", b"transfer-encoding", b"connection", b"upgrade", b"keep-alive"})

#: Request body bytes kept for a replay after a refused stream; past it, no retry.
REPLAY_LIMIT_BYTES = 64 * 1024
#: Attempts per request at most (connect failures and refused streams together).
MAX_ATTEMPTS = 3

_default_h2_context: ssl.SSLContext | None = None


def h2_pool_for(pool: ConnectionPool) -> H2Pool:
    """The HTTP/2 connections beside ``pool`` (closed with it)."""
    h2pool = pool.h2
    if not isinstance(h2pool, H2Pool):
        h2pool = H2Pool(pool.loop)
        pool.h2 = h2pool
    return h2pool


def _tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    """The route's ``h2`` context (built with its HTTP/1.1 one), else the system's
    roots with the name checked, as for HTTP/1.1."""
    if endpoint.h2_tls_context is not None:
        return endpoint.h2_tls_context
    global _default_h2_context
    if _default_h2_context is None:
        _default_h2_context = ssl.create_default_context()
        _default_h2_context.set_alpn_protocols(["h2"])
    return _default_h2_context


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
    """Receives the upstream's response on one stream and writes it to the client; feeds
    the request body to the current stream, keeping a copy for a replay until the
    upstream answers."""

    __slots__ = (
        "_body",
        "_body_bytes",
        "_body_ended",
        "exchange",
        "expired",
        "finished",
        "route",
        "started",
        "stream",
    )

    def __init__(self, exchange: Exchange, route: Route) -> None:
        self.exchange = exchange
        self.route = route
        self.stream: UpstreamStream | None = None
        self.started = False
        #: Set by each attempt (:meth:`attach`); resolved when its stream is done.
        self.finished: asyncio.Future[None] | None = None
        #: The route's timeout passed (possibly between attempts).
        self.expired = False
        #: The request body sent so far, for a replay; ``None`` once past the limit.
        self._body: list[bytes] | None = []
        self._body_bytes = 0
        self._body_ended = False

    # -- request body --------------------------------------------------------------------

    def attach(self, stream: UpstreamStream) -> None:
        """Carry the request on ``stream`` from now on (a new attempt): replay what the
        previous stream was sent."""
        self.stream = stream
        self.finished = self.exchange.connection.loop.create_future()
        if self.expired:
            self.timed_out()
            return
        for chunk in self._body or ():
            stream.send_body(chunk)
        if self._body_ended:
            stream.end_body(self._trailers())

    @property
    def replayable(self) -> bool:
        return self._body is not None

    def send_body(self, chunk: bytes) -> None:
        body = self._body
        if body is not None:
            self._body_bytes += len(chunk)
            if self._body_bytes > REPLAY_LIMIT_BYTES:
                self._body = None
            else:
                body.append(chunk)
        if self.stream is not None:
            self.stream.send_body(chunk)

    def end_body(self) -> None:
        self._body_ended = True
        if self.stream is not None:
            self.stream.end_body(self._trailers())

    def _trailers(self) -> list[Header] | None:
        trailers = self.exchange.request_trailers
        return upstream_trailers(trailers, self.route) if trailers else None

    # -- response ------------------------------------------------------------------------

    def on_response_head(
        self, status: int, headers: list[Header], content_length: int | None
    ) -> None:
        ex = self.exchange
        if ex.phase is not Phase.RECEIVING:
            return
        self.started = True
        self._body = None  # answered: never replayed
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
        finished = self.finished
        if finished is not None and not finished.done():
            finished.set_result(None)

    def on_response_error(self, error: UpstreamError) -> None:
        finished = self.finished
        if finished is not None and not finished.done():
            finished.set_exception(error)

    def client_gone(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
        finished = self.finished
        if finished is not None and not finished.done():
            finished.set_result(None)

    def timed_out(self) -> None:
        self.expired = True
        if self.stream is not None:
            self.stream.cancel()
        finished = self.finished
        if finished is not None and not finished.done():
            finished.set_exception(UpstreamTimeout("upstream did not answer in time"))


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
    host_override: bytes | None = None,
    hash_key: bytes | None = None,
    breaker: CircuitBreaker | None = None,
    retries: list[int] | None = None,
) -> tuple[str, float, bool]:
    """Proxy ``exchange`` over HTTP/2; returns (upstream URL, seconds, reused connection).

    ``breaker`` and ``retries`` are the route's circuit breaker and the count of retries
    taken from it (see :func:`.forward.forward`).

    Raises:
        UpstreamError: the upstream failed before any response was sent to the client.
    """
    balancer = route.balancer
    if balancer is None:  # pragma: no cover - only routes with upstreams get here
        raise UpstreamConnectError("route has no upstream")
    if retries is None:
        retries = [0]
    h2pool = h2_pool_for(pool)
    head = exchange.head
    started = _now()
    if route.timeout_s > 0:
        exchange.request_deadline = started + route.timeout_s
    length = head.get(b"content-length") if head.has_body else None
    te = head.get(b"te")
    wants_trailers = te is not None and b"trailers" in te.lower()
    forwarder = H2Forwarder(exchange, route)
    exchange.on_abort(forwarder.client_gone)
    exchange.on_timeout(forwarder.timed_out)
    body_started = False
    tried: Target | None = None
    attempts = 0
    try:
        while True:
            attempts += 1
            target = balancer.pick(exclude=tried, key=hash_key)
            endpoint = target.endpoint
            conn = h2pool.take(endpoint)
            reused = conn is not None
            if conn is None:
                limit = (
                    min(route.timeout_s, CONNECT_TIMEOUT_S)
                    if route.timeout_s > 0
                    else CONNECT_TIMEOUT_S
                )
                ctx = None if endpoint.scheme == "h2c" else _tls_context(endpoint)
                try:
                    conn = await h2pool.connect(endpoint, limit, ctx)
                except UpstreamConnectError:
                    balancer.mark_failed(target)
                    if (
                        attempts < min(balancer.size, MAX_ATTEMPTS)
                        and exchange.phase is Phase.RECEIVING
                        and take_retry(breaker, retries)
                    ):
                        tried = target
                        continue
                    raise
            if exchange.phase is not Phase.RECEIVING:  # client gone meanwhile
                return target.url_text, 0.0, reused
            if forwarder.expired:
                raise UpstreamTimeout("upstream did not answer in time")
            if target.down_until:
                balancer.mark_ok(target)
            host_header, request_target = upstream_address(
                route, target, host_override, original_host, path, query
            )
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
            headers = h2_request_headers(
                block,
                scheme=b"http" if endpoint.scheme == "h2c" else b"https",
                wants_trailers=wants_trailers,
            )
            target.active += 1  # requests in flight, for LEAST_REQUEST
            try:
                try:
                    stream = conn.open_stream(headers, forwarder, end_stream=not head.has_body)
                    forwarder.attach(stream)
                    if head.has_body:
                        stream.producer = exchange.connection
                        if not body_started:
                            body_started = True
                            exchange.stream_body(forwarder.send_body, forwarder.end_body)
                    if forwarder.finished is not None:
                        await forwarder.finished
                finally:
                    target.active -= 1
            except UpstreamRefused as err:
                # Not processed by the upstream (RFC 9113 §8.7): safe to send again.
                if (
                    attempts < MAX_ATTEMPTS
                    and not forwarder.started
                    and forwarder.replayable
                    and exchange.phase is Phase.RECEIVING
                    and take_retry(breaker, retries)
                ):
                    log.debug("retrying a refused HTTP/2 stream on a fresh connection: %s", err)
                    tried = None
                    continue
                balancer.record(target, None)
                raise
            except UpstreamError as err:
                if (
                    reused
                    and isinstance(err, UpstreamConnectError)  # closed before any response
                    and not head.has_body
                    and attempts < MAX_ATTEMPTS
                    and exchange.phase is Phase.RECEIVING
                    and not forwarder.expired
                    and take_retry(breaker, retries)
                ):
                    # A pooled connection the upstream dropped without GOAWAY as we sent
                    # on it: the keep-alive race, retried as for HTTP/1.1 (no body sent).
                    log.debug("retrying on a fresh HTTP/2 connection after a stale one: %s", err)
                    tried = None
                    continue
                balancer.record(target, None)  # no (complete) response: outlier detection
                if not forwarder.started and exchange.phase is Phase.RECEIVING:
                    raise
                exchange.abort()
                return target.url_text, _now() - started, reused
            balancer.record(target, exchange.status)
            return target.url_text, _now() - started, reused
    finally:
        exchange.on_abort(None)
        exchange.on_timeout(None)
