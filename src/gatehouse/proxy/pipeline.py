"""The per-request pipeline: one coroutine that reads top to bottom.

    parse target → gatehouse's own endpoints → match route → route action
    → (session → authorize → identity headers: added by later stages) → forward → log

Each step is a named call that returns a value or raises a typed
:class:`~gatehouse.errors.GatehouseError`; :meth:`Pipeline.__call__` turns errors into
responses in one place (:mod:`gatehouse.proxy.responses`) and writes one access-log line.
"""

from __future__ import annotations

from time import monotonic as _now
import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..constants import HEALTHZ_PATH, PING_PATH
from ..errors import BadRequest, GatehouseError, NotFound, UpgradeRefused, UpstreamError
from ..http.exchange import Exchange, Phase
from ..http.messages import Headers, Request, Response
from ..http.upstream import ConnectionPool
from ..observability.logs import AccessLog, now_iso
from .forward import Outcome, forward
from .paths import normalize_path
from .responses import error_response
from .router import Route, split_host
from .state import ProxyState

log = logging.getLogger("gatehouse.proxy")

#: Largest body gatehouse reads for its own endpoints (sign-out forms), bytes.
INTERNAL_BODY_LIMIT = 64 * 1024


@dataclass(slots=True)
class Target:
    """The request target, split and normalised."""

    host: str
    port: int | None
    raw_host: bytes
    path: str
    query: bytes


class Pipeline:
    """Serves every request of one worker from the current :class:`ProxyState`."""

    def __init__(self, state: ProxyState, pool: ConnectionPool, access_log: AccessLog) -> None:
        self.state = state
        self.pool = pool
        self.access_log = access_log
        self.ready = True

    def swap_state(self, state: ProxyState) -> None:
        """Serve new requests from ``state`` (requests in flight keep theirs)."""
        self.state = state

    async def __call__(self, exchange: Exchange) -> None:
        state = self.state
        route: Route | None = None
        outcome: Outcome | None = None
        error: GatehouseError | None = None
        try:
            target = parse_target(exchange)
            handler = state.endpoints.get(target.path)
            if handler is not None or target.path in (PING_PATH, HEALTHZ_PATH):
                await self._internal(exchange, target, state)
            else:
                route = state.router.match(target.host, target.port, target.path)
                if route is None:
                    raise NotFound(f"no route for {target.host}{target.path}")
                outcome = await self._route(exchange, target, route)
        except UpstreamError as exc:
            error = exc
            log.warning(
                "upstream error: %s",
                exc,
                extra={"route": route.name if route else None, "status": exc.status},
            )
        except GatehouseError as exc:
            error = exc
            if exc.status >= 500:
                log.error("request failed: %s", exc)
        if error is not None and exchange.phase is Phase.RECEIVING:
            self._send(exchange, error_response(error, exchange.head), route)
        if outcome is not None and outcome.tunnel is not None:
            await self._hold_tunnel(exchange, route, outcome)
        self._log(exchange, route, outcome, error)

    async def _route(self, exchange: Exchange, target: Target, route: Route) -> Outcome | None:
        if route.response is not None:
            self._send(exchange, Response.text(route.response.body, route.response.status), route)
            return None
        if route.redirect is not None:
            self._send(exchange, redirect_response(route, exchange, target), route)
            return None
        head = exchange.head
        if head.upgrade is not None and not route.allow_websockets:
            raise UpgradeRefused("upgrade requested on a route without allow_websockets")
        path = route.rewrite_path(target.path)
        return await forward(
            exchange,
            route,
            self.pool,
            path=path,
            query=target.query,
            original_host=target.raw_host,
            identity_headers=None,
        )

    async def _internal(self, exchange: Exchange, target: Target, state: ProxyState) -> None:
        if target.path == PING_PATH:
            self._send(exchange, Response.text("OK"), None)
            return
        if target.path == HEALTHZ_PATH:
            ok = self.ready
            body: dict[str, Any] = {"status": "ok" if ok else "starting", "config": state.digest[:12]}
            self._send(exchange, Response.json(body, 200 if ok else 503, [("Cache-Control", "no-store")]), None)
            return
        handler = state.endpoints[target.path]
        body_bytes = await exchange.read_body(INTERNAL_BODY_LIMIT) if exchange.head.has_body else b""
        request = Request(
            method=exchange.head.method.decode("ascii", "replace"),
            scheme=exchange.scheme,
            host=target.host,
            port=target.port,
            path=target.path,
            query=target.query.decode("ascii", "replace"),
            headers=Headers.from_raw(exchange.head.headers),
            client_ip=exchange.client_ip,
            body=body_bytes,
        )
        self._send(exchange, await handler(request), None)

    def _send(self, exchange: Exchange, response: Response, route: Route | None) -> None:
        """Send a response gatehouse made, with the route's (or global) response headers."""
        extra = route.set_response_headers if route is not None else self.state.response_headers
        present = {k.lower() for k, _ in response.headers}
        for name, value in extra:
            text = name.decode("latin-1")
            if text not in present:
                response.headers.append((text, value.decode("latin-1")))
        exchange.send(response)

    async def _hold_tunnel(self, exchange: Exchange, route: Route | None, outcome: Outcome) -> None:
        tunnel = outcome.tunnel
        if tunnel is None or route is None:
            return
        idle = route.idle_timeout_s
        while not tunnel.closed.done():
            wait = min(idle / 4, 5.0) if idle > 0 else 5.0
            try:
                await asyncio.wait_for(asyncio.shield(tunnel.closed), timeout=wait)
            except TimeoutError:
                if idle > 0 and time.monotonic() - tunnel.last_activity > idle:
                    log.info("closing idle tunnel on %s", route.name)
                    tunnel.close()

    def _log(
        self,
        exchange: Exchange,
        route: Route | None,
        outcome: Outcome | None,
        error: GatehouseError | None,
    ) -> None:
        access = self.access_log
        if not access.enabled:
            return
        head = exchange.head
        host, _ = split_host(head.get(b"host"))
        target = head.target
        qmark = target.find(b"?")
        fields: dict[str, Any] = {
            "time": now_iso(),
            "route": route.name if route else None,
            "method": head.method.decode("ascii", "replace"),
            "host": host,
            "path": (target if qmark < 0 else target[:qmark]).decode("ascii", "replace")[:2048],
            "status": exchange.status if exchange.phase is not Phase.ABORTED else (exchange.status or 499),
            "bytes": exchange.bytes_sent,
            "bytes_in": exchange.bytes_received,
            "duration_ms": round((_now() - exchange.start_time) * 1000, 3),
            "upstream": outcome.upstream if outcome else None,
            "upstream_ms": round(outcome.upstream_duration_s * 1000, 3) if outcome else None,
            "client": exchange.client_ip,
        }
        if exchange.phase is Phase.ABORTED:
            fields["aborted"] = True
        if error is not None:
            fields["error"] = type(error).__name__
        access.write(fields)


def parse_target(exchange: Exchange) -> Target:
    """Split the request target into host, port, normalised path and raw query.

    Raises:
        BadRequest: an unusable target or Host.
    """
    head = exchange.head
    raw = head.target
    raw_host = head.get(b"host") or b""
    if raw[:1] != b"/":
        # absolute-form (RFC 9112 §3.2.2): the target's authority replaces Host.
        if raw[:7].lower() == b"http://" or raw[:8].lower() == b"https://":
            parts = urlsplit(raw.decode("ascii", "replace"))
            raw_host = parts.netloc.encode("ascii", "replace")
            raw = (parts.path or "/").encode() + (b"?" + parts.query.encode() if parts.query else b"")
        else:
            raise BadRequest("unsupported request target form")
    qmark = raw.find(b"?")
    raw_path, query = (raw, b"") if qmark < 0 else (raw[:qmark], raw[qmark + 1 :])
    try:
        path_text = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("non-ASCII bytes in the request target") from None
    path = normalize_path(path_text)
    host, port = split_host(raw_host)
    if not host:
        if head.http_version == "1.0" and not raw_host:
            host = ""
        else:
            raise BadRequest("invalid Host header")
    return Target(host=host, port=port, raw_host=raw_host, path=path, query=query)


def redirect_response(route: Route, exchange: Exchange, target: Target) -> Response:
    """Answer a route's ``redirect`` action (Pomerium/Envoy redirect semantics)."""
    redirect = route.redirect
    if redirect is None:  # pragma: no cover - only called for redirect routes
        raise GatehouseError("not a redirect route")
    scheme = "https" if redirect.https_redirect else (redirect.scheme_redirect or exchange.scheme)
    host = redirect.host_redirect or target.host
    port = redirect.port_redirect if redirect.port_redirect else target.port
    if redirect.https_redirect and not redirect.port_redirect:
        port = None
    default_port = 443 if scheme == "https" else 80
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    if redirect.path_redirect is not None:
        path = redirect.path_redirect
    elif redirect.prefix_rewrite is not None and route.match_kind == 1:
        path = redirect.prefix_rewrite + target.path[len(route.match_value) :]
    else:
        path = target.path
    query = "" if redirect.strip_query or not target.query else "?" + target.query.decode("ascii", "replace")
    return Response.redirect(f"{scheme}://{netloc}{path}{query}", redirect.response_code)
