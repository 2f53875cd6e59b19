"""Forward one request to an upstream and stream the response back.

:func:`forward` picks an endpoint, takes a pooled connection (or opens one), writes the
request head, splices the request body into it, and waits while the upstream's response
is pushed straight to the client by :class:`ResponseForwarder`. It returns an
:class:`Outcome` for the access log, or raises an :class:`~gatehouse.errors.UpstreamError`
when nothing has been sent to the client yet (the caller answers 502/504).

Retries: a request is retried once on a fresh connection when a *reused* connection fails
before the upstream sent a byte and no body has been streamed (the keep-alive race, where
the upstream closed an idle connection as we sent on it), and on another endpoint when a
connection is refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from time import monotonic as _now

from ..errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from ..http.exchange import Exchange, Phase
from ..http.h2.grpc import is_grpc
from ..http.tunnel import Tunnel
from ..http.upstream import ConnectionPool, UpstreamConnection
from .balancer import Target
from .circuit_breaker import CircuitBreaker, take_retry
from .forward_h2 import forward_h2
from .headers import client_response_block, upstream_address, upstream_request_head
from .router import Route

log = logging.getLogger("gatehouse.proxy")

#: Connect timeout cap, seconds (the route timeout applies when smaller).
CONNECT_TIMEOUT_S = 10.0


class Outcome:
    """What happened upstream, for logs and metrics."""

    # A plain class, not a dataclass: mypyc compiles it to a C struct (one per request).
    __slots__ = ("reused", "tunnel", "upstream", "upstream_duration_s")

    def __init__(
        self,
        upstream: str = "",
        upstream_duration_s: float = 0.0,
        reused: bool = False,
        tunnel: Tunnel | None = None,
    ) -> None:
        self.upstream = upstream
        self.upstream_duration_s = upstream_duration_s
        self.reused = reused
        self.tunnel = tunnel


class ResponseForwarder:
    """Receives the upstream response and writes it to the client (a ``ResponseSink``)."""

    __slots__ = ("conn", "exchange", "finished", "route", "started", "upgrade")

    def __init__(
        self,
        exchange: Exchange,
        route: Route,
        conn: UpstreamConnection,
        upgrade: bytes | None = None,
    ) -> None:
        self.exchange = exchange
        self.route = route
        self.conn = conn
        #: The protocol asked of the upstream (lower case), or ``None``: no 101 accepted.
        self.upgrade = upgrade.strip().lower() if upgrade is not None else None
        self.started = False
        self.finished: asyncio.Future[Tunnel | None] = exchange.connection.loop.create_future()

    def on_response_head(
        self, status: int, headers: list[tuple[bytes, bytes]], content_length: int | None
    ) -> None:
        ex = self.exchange
        if ex.phase is not Phase.RECEIVING:
            return
        self.started = True
        ex.request_deadline = 0.0
        ex.response_idle_timeout_s = self.route.idle_timeout_s
        ex.response_producer = self.conn
        ex.start_response_block(
            status, client_response_block(headers, self.route), content_length=content_length
        )
        if ex.connection.write_paused:
            self.conn.pause_reading()

    def cork(self) -> None:
        self.exchange.connection.cork()

    def uncork(self) -> None:
        self.exchange.connection.uncork()

    def on_response_body(self, chunk: bytes) -> None:
        ex = self.exchange
        ex.last_activity = _now()
        ex.write(chunk)

    def on_response_end(self) -> None:
        self.exchange.end()
        if not self.finished.done():
            self.finished.set_result(None)

    def on_response_upgrade(
        self, status: int, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        ex = self.exchange
        if not self._switches_to_requested(headers):
            # A 101 for a request that asked no (permitted) upgrade would turn the client
            # connection into a tunnel no policy looks into: the upstream is at fault.
            self.conn.abort()
            if not self.finished.done():
                self.finished.set_exception(
                    UpstreamProtocolError("101 Switching Protocols to an unrequested protocol")
                )
            return
        self.started = True
        ex.request_deadline = 0.0
        lines = [b"HTTP/1.1 101 Switching Protocols\r\n"]
        for name, value in headers:
            lines.append(name + b": " + value + b"\r\n")
        lines.append(b"\r\n")
        client = ex.start_tunnel(b"".join(lines))
        tunnel = Tunnel(client, self.conn)
        tunnel.start(rest)
        if not self.finished.done():
            self.finished.set_result(tunnel)

    def _switches_to_requested(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """The 101 names the protocol gatehouse asked for (RFC 9110 §15.2.2, §7.8)."""
        wanted = self.upgrade
        if wanted is None:
            return False
        for name, value in headers:
            if name == b"upgrade":
                return value.strip().lower() == wanted
        return False

    def on_response_error(self, error: UpstreamError) -> None:
        if not self.finished.done():
            self.finished.set_exception(error)

    def client_gone(self) -> None:
        """The client went away: drop the upstream request."""
        self.conn.abort()
        if not self.finished.done():
            self.finished.set_result(None)

    def timed_out(self) -> None:
        """The route's timeout passed before the response head: 504."""
        self.conn.abort()
        if not self.finished.done():
            self.finished.set_exception(UpstreamTimeout("upstream did not answer in time"))


async def forward(
    exchange: Exchange,
    route: Route,
    pool: ConnectionPool,
    *,
    path: str,
    query: bytes,
    original_host: bytes,
    identity_headers: Sequence[tuple[bytes, bytes]] | None,
    session_cookie: bytes | None = None,
    upgrade: bytes | None = None,
    host_override: bytes | None = None,
    hash_key: bytes | None = None,
    set_headers: Sequence[tuple[bytes, bytes]] = (),
) -> Outcome:
    """Proxy ``exchange`` to one of ``route``'s upstreams, within the route's circuit
    breaker when it has one (:mod:`gatehouse.proxy.circuit_breaker`).

    Raises:
        UpstreamError: the upstream failed before any response was sent to the client,
            or the circuit breaker refused the request.
    """
    balancer = route.balancer
    breaker = balancer.breaker if balancer is not None else None
    if breaker is None:
        return await _forward(
            exchange, route, pool, None, [0], path, query, original_host, identity_headers,
            session_cookie, upgrade, host_override, hash_key, set_headers,
        )  # fmt: skip
    await breaker.acquire(route.timeout_s)
    retries = [0]
    try:
        return await _forward(
            exchange, route, pool, breaker, retries, path, query, original_host,
            identity_headers, session_cookie, upgrade, host_override, hash_key, set_headers,
        )  # fmt: skip
    finally:
        for _ in range(retries[0]):
            breaker.retry_done()
        breaker.release()


async def _forward(
    exchange: Exchange,
    route: Route,
    pool: ConnectionPool,
    breaker: CircuitBreaker | None,
    retries: list[int],
    path: str,
    query: bytes,
    original_host: bytes,
    identity_headers: Sequence[tuple[bytes, bytes]] | None,
    session_cookie: bytes | None,
    upgrade: bytes | None,
    host_override: bytes | None,
    hash_key: bytes | None,
    set_headers: Sequence[tuple[bytes, bytes]],
) -> Outcome:
    """Proxy ``exchange`` to one of ``route``'s upstreams (``retries[0]`` counts the
    retries taken from ``breaker``).

    ``upgrade`` is the permitted ``Upgrade`` value to ask for (the client's), or ``None``
    to send a plain request; only then is the upstream's ``101`` turned into a tunnel.
    ``host_override`` is the Host a route's rewrite from the request chose, if any.
    ``hash_key`` is what ``RING_HASH``/``MAGLEV`` routes hash (session, else client IP).

    Raises:
        UpstreamError: the upstream failed before any response was sent to the client.
    """
    balancer = route.balancer
    if balancer is None:  # routes with redirect/response actions never get here
        raise UpstreamConnectError("route has no upstream")
    head = exchange.head
    scheme = balancer.targets[0].endpoint.scheme
    if scheme == "h2c" or (scheme == "https" and is_grpc(head)):
        # HTTP/2 upstreams: h2c routes, and gRPC (which needs trailers) over TLS.
        url, duration_s, reused_h2 = await forward_h2(
            exchange,
            route,
            pool,
            path=path,
            query=query,
            original_host=original_host,
            identity_headers=identity_headers,
            session_cookie=session_cookie,
            set_headers=set_headers,
            host_override=host_override,
            hash_key=hash_key,
            breaker=breaker,
            retries=retries,
        )
        return Outcome(url, duration_s, reused_h2)
    started = _now()
    if route.timeout_s > 0:
        exchange.request_deadline = started + route.timeout_s
    body_framing: bytes | None = None
    if head.has_body:
        length = head.get(b"content-length")
        body_framing = (
            b"content-length: " + length if length is not None else b"transfer-encoding: chunked"
        )
    tried: Target | None = None
    attempts = 0
    while True:
        attempts += 1
        target = balancer.pick(exclude=tried, key=hash_key)
        target.active += 1  # requests in flight, for LEAST_REQUEST
        conn = pool.take_idle(target.endpoint)
        reused = conn is not None
        try:
            if conn is None:
                limit = (
                    min(route.timeout_s, CONNECT_TIMEOUT_S)
                    if route.timeout_s > 0
                    else CONNECT_TIMEOUT_S
                )
                conn = await pool.connect(target.endpoint, limit)
        except UpstreamConnectError:
            target.active -= 1
            balancer.mark_failed(target)
            if (
                attempts < min(balancer.size, 3)
                and exchange.phase is Phase.RECEIVING
                and take_retry(breaker, retries)
            ):
                tried = target
                continue
            raise
        if exchange.phase is not Phase.RECEIVING:  # client gone or timed out meanwhile
            target.active -= 1
            pool.release(conn)
            return Outcome(upstream=target.url_text)
        if target.down_until:
            balancer.mark_ok(target)
        host_header, request_target = upstream_address(
            route, target, host_override, original_host, path, query
        )
        forwarder = ResponseForwarder(exchange, route, conn, upgrade)
        request_head = upstream_request_head(
            method=head.method,
            target=request_target,
            headers=head.headers,
            connection=head.connection,
            route=route,
            host_header=host_header,
            original_host=original_host,
            client_ip=exchange.client_ip,
            scheme=exchange.scheme,
            body_framing=body_framing,
            upgrade=upgrade,
            identity_headers=identity_headers,
            session_cookie=session_cookie,
            set_headers=set_headers,
        )
        exchange.on_abort(forwarder.client_gone)
        exchange.on_timeout(forwarder.timed_out)
        conn.request_producer = exchange.connection
        conn.send_request(
            request_head,
            forwarder,
            chunked_body=body_framing is not None and body_framing.startswith(b"t"),
            head_only=head.method == b"HEAD",
            has_body=head.has_body,
        )
        body_streamed = False
        if head.has_body:
            body_streamed = True
            exchange.stream_body(conn.send_body, conn.end_body)
            if conn.write_paused:
                exchange.connection.pause_reading()
        try:
            try:
                tunnel = await forwarder.finished
            finally:
                target.active -= 1
        except UpstreamError as err:
            exchange.on_abort(None)
            exchange.on_timeout(None)
            retry = (
                reused
                and not conn.received_any
                and not body_streamed
                and not isinstance(err, UpstreamTimeout)
                and exchange.phase is Phase.RECEIVING
                and attempts < 3
                and take_retry(breaker, retries)
            )
            if retry:
                log.debug("retrying on a fresh connection after a stale pooled one: %s", err)
                tried = None
                continue
            balancer.record(target, None)  # no (complete) response: outlier detection
            if not forwarder.started and exchange.phase is Phase.RECEIVING:
                raise
            exchange.abort()
            log.warning("upstream %s failed mid-response: %s", target.url_text, err)
            return Outcome(target.url_text, _now() - started, reused)
        exchange.on_abort(None)
        exchange.on_timeout(None)
        balancer.record(target, exchange.status)
        return Outcome(target.url_text, _now() - started, reused, tunnel)
