"""The per-request pipeline: one coroutine that reads top to bottom.

    parse target → gatehouse's own endpoints → match route → route action
    → (session → authorize → identity headers: added by later stages) → forward → log

Each step is a named call that returns a value or raises a typed
:class:`~gatehouse.errors.GatehouseError`; :meth:`Pipeline.__call__` turns errors into
responses in one place (:mod:`gatehouse.proxy.responses`) and writes one access-log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Coroutine, Sequence
from time import monotonic as _now
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..authorize.client_cert import client_certificate
from ..authorize.criteria.certificate import denied_for_certificate
from ..authorize.decision import Outcome as DecisionOutcome
from ..authorize.input import PolicyInput
from ..config.base import normalize_origin
from ..constants import HEALTHZ_PATH, PING_PATH, POMERIUM_PREFIX
from ..errors import (
    BadRequest,
    CrossOriginUpgrade,
    Forbidden,
    GatehouseError,
    InvalidClientCertificate,
    NotFound,
    ServiceUnavailable,
    SignInRequired,
    UpgradeRefused,
    UpstreamError,
)
from ..http.exchange import Exchange, Phase
from ..http.messages import Headers, Request, Response
from ..http.tunnel import Tunnel
from ..http.upstream import ConnectionPool
from ..observability.log_fields import access_line, authorize_fields
from ..observability.logs import AccessLog, now_iso
from ..observability.metrics import Metrics
from ..sessions.model import Session
from .balancer import start_health_checks
from .forward import Outcome, forward
from .header_template import RequestFacts, render
from .headers import bearer_token, has_underscore_header
from .paths import normalize_request_path
from .responses import error_response, request_id
from .rewrites import upstream_host
from .router import UNDERSCORES_REJECT, Route, split_host
from .state import EndpointHandler, ProxyState

log = logging.getLogger("gatehouse.proxy")

#: Largest body gatehouse reads for its own endpoints (sign-out forms), bytes.
INTERNAL_BODY_LIMIT = 64 * 1024

_T = TypeVar("_T")


class Target:
    """The request target, split and normalised."""

    # Plain classes, not dataclasses, here: mypyc compiles them to C structs (one per request).
    __slots__ = ("host", "path", "port", "query", "raw_host")

    def __init__(
        self, host: str, port: int | None, raw_host: bytes, path: str, query: bytes
    ) -> None:
        self.host = host
        self.port = port
        self.raw_host = raw_host
        self.path = path
        self.query = query


class _Access:
    """What the pipeline learned about a request, for its access-log line."""

    __slots__ = ("decision", "host", "request_id", "user")

    def __init__(self) -> None:
        self.user: str | None = None
        self.decision: str | None = None
        self.host: str | None = None
        #: Set when gatehouse answers with an error page (shown there and logged).
        self.request_id: str | None = None


def _cookie(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The value of cookie ``name`` from raw Cookie headers (RFC 6265 §5.4), or ``None``."""
    prefix = name + b"="
    for key, value in headers:
        if key != b"cookie":
            continue
        at = value.find(prefix)
        while at >= 0:
            # A match must start a cookie-pair: at the start, or after ";" and spaces.
            # Walk back by index, not by slicing: a header of many near-matches must
            # cost linear time, not quadratic.
            i = at - 1
            while i >= 0 and value[i] in (0x20, 0x09):
                i -= 1
            if i < 0 or value[i] == 0x3B:
                end = value.find(b";", at)
                raw = value[at + len(prefix) :] if end < 0 else value[at + len(prefix) : end]
                return raw.strip().strip(b'"').decode("latin-1")
            at = value.find(prefix, at + 1)
    return None


class Pipeline:
    """Serves every request of one worker from the current :class:`ProxyState`."""

    def __init__(
        self,
        state: ProxyState,
        pool: ConnectionPool,
        access_log: AccessLog,
        metrics: Metrics | None = None,
    ) -> None:
        self.state = state
        start_health_checks(state.router.routes)
        self.pool = pool
        self.access_log = access_log
        self.metrics = metrics
        self.ready = True
        #: ``log.isEnabledFor(DEBUG)``, read once (logging's check is Python code, and the
        #: level is set at start-up).
        self._debug = log.isEnabledFor(logging.DEBUG)

    def needs_task(self, exchange: Exchange) -> bool:
        """Never up front: every request starts without a Task (``http.server.drive_inline``).

        What a request is can only be told from its normalised path, so the steps that
        call out (gatehouse's own endpoints, session-store reads and refreshes: libraries
        such as httpx need ``current_task()``) move themselves into a Task once routing
        has decided (:meth:`_in_task`). Guessing from the raw target instead let
        ``//.pomerium/sign_out`` reach an endpoint outside a Task.
        """
        return False

    async def _in_task(self, step: Coroutine[Any, Any, _T]) -> _T:
        """Run ``step`` in a Task when the request is being driven without one."""
        if asyncio.current_task() is not None:
            return await step
        return await asyncio.ensure_future(step)

    def swap_state(self, state: ProxyState) -> None:
        """Serve new requests from ``state`` (requests in flight keep theirs)."""
        self.state = state
        # In the loop: routes are compiled outside it (check, reload thread).
        start_health_checks(state.router.routes)

    async def __call__(self, exchange: Exchange) -> None:
        state = self.state
        route: Route | None = None
        outcome: Outcome | None = None
        error: GatehouseError | None = None
        access = _Access()
        try:
            target = parse_target(exchange, state.options.allow_path_parameters)
            access.host = target.host
            handler = self._endpoint_for(state, target)
            if handler is not None:
                await self._in_task(self._internal(exchange, target, handler))
            else:
                route = state.router.match(target.host, target.port, target.path)
                if route is None:
                    raise NotFound(f"no route for {target.host}{target.path}")
                outcome = await self._route(exchange, target, route, state, access)
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
                log.error("request failed: %s", exc, extra={"route": route.name if route else None})
        if error is not None and exchange.phase is Phase.RECEIVING:
            if isinstance(error, BadRequest):
                exchange.keep_alive = False  # the framing or target cannot be trusted
            self._send(exchange, self._error_page(error, exchange, state, access), route)
        if outcome is not None and outcome.tunnel is not None and route is not None:
            if self.metrics is not None:
                self.metrics.tunnels.inc()
            try:
                await self._hold_tunnel(exchange, route, outcome, access)
            finally:
                if self.metrics is not None:
                    self.metrics.tunnels.dec()
        self._log(exchange, route, outcome, error, access)
        tally = state.decisions
        if tally is not None and route is not None and access.decision is not None:
            tally.record(route.name, access.user, access.decision)
        if self.metrics is not None:
            self._record(exchange, route, outcome, error, access)

    def _record(
        self,
        exchange: Exchange,
        route: Route | None,
        outcome: Outcome | None,
        error: GatehouseError | None,
        access: _Access,
    ) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        name = route.name if route is not None else ""
        status = (
            exchange.status if exchange.phase is not Phase.ABORTED else (exchange.status or 499)
        )
        metrics.request(
            name,
            exchange.head.method.decode("ascii", "replace"),
            status,
            _now() - exchange.start_time,
        )
        if outcome is not None and outcome.upstream:
            metrics.upstream_duration.labels(name).observe(outcome.upstream_duration_s)
        if isinstance(error, UpstreamError):
            kind = "timeout" if error.status == 504 else type(error).__name__
            metrics.upstream_errors.labels(name, kind).inc()
        elif isinstance(error, ServiceUnavailable):
            dependency = "idp" if "Idp" in type(error).__name__ else "session_store"
            metrics.dependency_errors.labels(dependency).inc()
        if access.decision is not None and route is not None:
            metrics.decisions.labels(name, access.decision).inc()

    def _error_page(
        self, error: GatehouseError, exchange: Exchange, state: ProxyState, access: _Access
    ) -> Response:
        """The response for ``error``, with a request id that the access log also gets."""
        access.request_id = request_id(exchange.head)
        csrf: str | None = None
        if isinstance(error, Forbidden) and error.session_id and state.auth is not None:
            csrf = state.auth.csrf_for(error.session_id)
        return error_response(
            error, exchange.head, request_id=access.request_id, host=access.host, csrf=csrf
        )

    def _endpoint_for(self, state: ProxyState, target: Target) -> EndpointHandler | None:
        """gatehouse's own handler for this request, if any (checked before routes)."""
        path = target.path
        handler = state.endpoints.get(path)
        if handler is not None:
            return handler
        if path == PING_PATH:
            return self._ping
        if path == HEALTHZ_PATH:
            return self._healthz
        if state.console_host is not None and target.host == state.console_host:
            # The console host is also a route host for sign-in (hand-off, sign-out).
            if path.startswith(POMERIUM_PREFIX) or path == POMERIUM_PREFIX[:-1]:
                handler = state.route_host_endpoints.get(path)
                if handler is None:
                    raise NotFound(f"no gatehouse endpoint {path}")
                return handler
            return state.console
        if state.authenticate_host is not None and target.host == state.authenticate_host:
            handler = state.authenticate_endpoints.get(path)
            if handler is None:
                raise NotFound(f"no authenticate endpoint {path}")
            return handler
        if path.startswith(POMERIUM_PREFIX) or path == POMERIUM_PREFIX[:-1]:
            handler = state.route_host_endpoints.get(path)
            if handler is None or not state.router.serves(target.host, target.port):
                raise NotFound(f"no gatehouse endpoint {path}")
            return handler
        return None

    async def _route(
        self, exchange: Exchange, target: Target, route: Route, state: ProxyState, access: _Access
    ) -> Outcome | None:
        if route.client_cert_required:
            # Before any action, as Pomerium's deny rule is part of every route's policy.
            check_client_certificate(exchange, route)
        if route.response is not None:
            self._send(exchange, Response.text(route.response.body, route.response.status), route)
            return None
        if route.redirect is not None:
            self._send(exchange, redirect_response(route, exchange, target), route)
            return None
        head = exchange.head
        upgrade = head.upgrade
        if upgrade is not None:
            upgrade = self._upgrade_for(exchange, target, route, upgrade)
        if route.underscores_action == UNDERSCORES_REJECT and has_underscore_header(head.headers):
            raise BadRequest("header name with an underscore (headers_with_underscores_action)")
        # Sessions known without I/O (nearly every request) are decided without a coroutine.
        done, session = self._session_cached(exchange, target, route, state)
        if not done:
            session = await self._session_loaded(exchange, target, route, state)
        session = self._decide(exchange, target, route, state, access, session)
        identity: Sequence[tuple[bytes, bytes]] | None = None
        if route.pass_identity_headers:
            identity = []
            minter = state.minter
            if session is not None and minter is not None:
                assertion = minter.mint(session, target.host, state.specs[route.index])
                identity = assertion.wire_headers
        set_headers = (
            self._rendered_headers(exchange, target, route, state, session)
            if route.request_header_templates
            else ()
        )
        host_override: bytes | None = None
        options = route.options
        if options.host_rewrite_header or options.host_path_regex_rewrite_pattern:
            # Before the path rewrite, as Envoy does; without it, the client's Host.
            host_override = upstream_host(route, head.headers, target.path) or target.raw_host
        path = route.rewrite_path(target.path)
        return await forward(
            exchange,
            route,
            self.pool,
            path=path,
            query=target.query,
            original_host=target.raw_host,
            identity_headers=identity,
            session_cookie=state.session_cookie,
            upgrade=upgrade,
            host_override=host_override,
            hash_key=_hash_key(route, session, exchange.client_ip),
            set_headers=set_headers,
        )

    def _rendered_headers(
        self,
        exchange: Exchange,
        target: Target,
        route: Route,
        state: ProxyState,
        session: Session | None,
    ) -> list[tuple[bytes, bytes]]:
        """The route's ``set_request_headers`` with ``${pomerium.*}`` substituted."""

        def jwt() -> str:
            minter = state.minter
            if session is None or minter is None:
                return ""
            return minter.mint(session, target.host, state.specs[route.index]).jwt

        facts = RequestFacts(
            access_token=session.access_token if session is not None else "",
            id_token=session.id_token if session is not None else "",
            jwt=jwt,
            peer_chain=exchange.peer_chain,
            headers=exchange.head.headers,
        )
        return render(route.request_header_templates, facts)

    def _upgrade_for(
        self, exchange: Exchange, target: Target, route: Route, upgrade: bytes
    ) -> bytes | None:
        """The ``Upgrade`` to ask of the upstream, ``None`` to send a plain request, or raise.

        Only the route's permitted protocols become tunnels (after a tunnel's first request
        nothing is authorized per request, so ``h2c`` would open every path). ``h2c`` is
        otherwise served as plain HTTP/1.1, as Envoy does (RFC 9113 §3.1 deprecates it; a
        client falls back); any other protocol is refused (403), as Envoy does for an
        upgrade type a route does not enable.

        Raises:
            UpgradeRefused: a protocol the route does not allow, or a cross-site Origin.
        """
        protocol = upgrade.strip().lower()
        if protocol not in route.upgrades:
            if protocol == b"h2c":
                return None
            raise UpgradeRefused(f"upgrade {protocol[:40]!r} not allowed on route {route.name}")
        if route.origin_check:
            self._check_origin(exchange, target, route)
        return upgrade

    def _check_origin(self, exchange: Exchange, target: Target, route: Route) -> None:
        """Refuse an upgrade opened by a page of another origin (cross-site WebSocket
        hijacking: browsers send the victim's cookie with any site's WebSocket).

        The route's own origin is the scheme of its ``from`` with the request's host and
        port; a request without ``Origin`` (not a browser, RFC 6455 §4.1) passes.

        Raises:
            CrossOriginUpgrade: ``Origin`` is ``null``, malformed or another origin.
        """
        own: str | None = None
        for name, value in exchange.head.headers:
            if name != b"origin":
                continue
            text = value.decode("latin-1")
            origin = normalize_origin(text)
            if own is None:
                scheme = route.options.from_scheme
                netloc = target.host
                if target.port is not None and target.port != (443 if scheme == "https" else 80):
                    netloc = f"{netloc}:{target.port}"
                own = f"{scheme}://{netloc}"
            if origin is None or (origin != own and origin not in route.allowed_origins):
                log.warning(
                    "upgrade refused: cross-origin",
                    extra={"route": route.name, "origin": text[:200], "expected": own},
                )
                raise CrossOriginUpgrade(f"Origin {text[:200]!r} is not {own}")

    async def _authorize(
        self, exchange: Exchange, target: Target, route: Route, state: ProxyState, access: _Access
    ) -> Session | None:
        """Load the session and evaluate the route's policy; raise unless allowed."""
        done, session = self._session_cached(exchange, target, route, state)
        if not done:
            session = await self._session_loaded(exchange, target, route, state)
        return self._decide(exchange, target, route, state, access, session)

    def _session_cached(
        self, exchange: Exchange, target: Target, route: Route, state: ProxyState
    ) -> tuple[bool, Session | None]:
        """``(True, session or None)`` when the request's session is known without I/O
        (nearly every request: no cookie, or a cached session that needs no refresh);
        ``(False, None)`` when it must be read from the store or refreshed."""
        policy = route.policy
        if (
            policy is not None
            and policy.allows_everyone
            and not route.pass_identity_headers
            and not route.request_header_templates
        ):
            return True, None  # public, and no identity to forward: no session needed
        auth = state.auth
        if auth is None:
            return True, None
        head = exchange.head
        authorization = head.get(b"authorization")
        bearer = state.bearer
        if bearer is not None and authorization is not None:
            rule = bearer.rules.get(route.index)
            if rule is not None:
                token = bearer_token(authorization)
                if token is not None:
                    # The IdP token, not the cookie, is this request's session.
                    return bearer.cached(rule, token)
        cookie = _cookie(head.headers, state.session_cookie or b"")
        if cookie is None and authorization is None:
            return True, None
        auth_text = authorization.decode("latin-1") if authorization else None
        hit, session = auth.session_cached(cookie, auth_text, target.host)
        if hit and session is not None and auth.sessions.needs_refresh(session):
            return False, None
        return hit, session

    async def _session_loaded(
        self, exchange: Exchange, target: Target, route: Route, state: ProxyState
    ) -> Session | None:
        """The request's session from the store (or a bearer token verified), refreshed
        when due (the I/O path)."""
        return await self._in_task(self._load_session(exchange, target, route, state))

    async def _load_session(
        self, exchange: Exchange, target: Target, route: Route, state: ProxyState
    ) -> Session | None:
        auth = state.auth
        if auth is None:  # pragma: no cover - _session_cached answers without auth
            return None
        head = exchange.head
        bearer = state.bearer
        if bearer is not None:
            rule = bearer.rules.get(route.index)
            raw = head.get(b"authorization")
            if rule is not None and raw is not None:
                token = bearer_token(raw)
                if token is not None:
                    return await bearer.session(rule, token)
        cookie = _cookie(head.headers, state.session_cookie or b"")
        authorization = head.get(b"authorization")
        auth_text = authorization.decode("latin-1") if authorization else None
        session = await auth.session_for(cookie, auth_text, target.host)
        if session is not None and auth.sessions.needs_refresh(session):
            session = await auth.sessions.refresh_if_needed(session, auth.refresh)
        return session

    def _decide(
        self,
        exchange: Exchange,
        target: Target,
        route: Route,
        state: ProxyState,
        access: _Access,
        session: Session | None,
    ) -> Session | None:
        """Evaluate the route's policy for ``session``; return it if allowed, else raise."""
        head = exchange.head
        auth = state.auth
        policy = route.policy
        if (
            session is not None
            and auth is not None
            and not auth.session_fits(session, route.options)
        ):
            # Made through another route's OAuth client: as no session, so the user signs in
            # through this route's (Pomerium's ReadSessionHandleAndCheckIDP).
            session = None
        access.user = session.email or session.user_id if session is not None else None
        if policy is None or policy.allows_everyone:
            access.decision = "allow"
            if state.options.authorize_log_fields is not None:
                self._authorize_log(exchange, target, route, session, "allow", None)
            return session
        cors = policy.reads_cors_headers
        chain = exchange.peer_chain
        trust = route.client_trust
        decision = policy.evaluate(
            PolicyInput(
                method=head.method.decode("ascii", "replace"),
                path=target.path,
                source_ip=exchange.client_ip,
                session=session,
                now=time.time(),
                origin=(head.get(b"origin") or b"").decode("latin-1") if cors else "",
                access_control_request_method=(
                    (head.get(b"access-control-request-method") or b"").decode("latin-1")
                    if cors
                    else ""
                ),
                client_certificate=client_certificate(chain[0]) if chain else None,
                client_certificate_valid=trust is None or trust.check(chain, time.time()) is None,
            )
        )
        outcome = decision.outcome
        if outcome is DecisionOutcome.ALLOW:
            access.decision = "allow"
            if state.options.authorize_log_fields is not None:
                # Pomerium logs every check when asked for its fields: allows at info too.
                self._authorize_log(exchange, target, route, session, "allow", decision)
            elif self._debug:
                # Allows are in the access log (route, user, decision); the rule detail
                # costs a few microseconds, so it is written only at debug level.
                log.debug(
                    "access allow",
                    extra={"policy": {**decision.log_fields(), "user": access.user or ""}},
                )
            return session
        fields = decision.log_fields()
        fields["user"] = access.user or ""
        fields["decision"] = outcome.value
        access.decision = outcome.value
        if state.options.authorize_log_fields is not None:
            self._authorize_log(exchange, target, route, session, outcome.value, decision)
        else:
            log.info("access %s", outcome.value, extra={"policy": fields})
        if denied_for_certificate(decision):
            raise InvalidClientCertificate("denied by policy: no valid client certificate")
        if outcome is DecisionOutcome.NEEDS_LOGIN:
            original = f"{route.options.from_scheme}://{target.raw_host.decode('latin-1')}" + (
                head.target.decode("latin-1") if head.target[:1] == b"/" else target.path
            )
            if auth is None:
                raise SignInRequired("sign-in required", None)
            scheme = route.options.from_scheme
            binding = _cookie(head.headers, auth.binding_cookie(scheme).encode("latin-1"))
            redirect = auth.sign_in_redirect(
                original,
                scheme,
                binding,
                auth.route_idp_id(route.options),
                route.options.depends_on,
            )
            if redirect is None:
                raise SignInRequired("sign-in required", None)
            raise SignInRequired("sign-in required", redirect[0], redirect[1])
        details = decision.explain().splitlines() if route.options.show_error_details else None
        raise Forbidden(
            "denied by policy",
            details,
            user=access.user,
            route=route.name,
            session_id=session.id if session is not None else None,
        )

    def _authorize_log(
        self,
        exchange: Exchange,
        target: Target,
        route: Route,
        session: Session | None,
        outcome: str,
        decision: Any,
    ) -> None:
        """The decision line with Pomerium's ``authorize_log_fields`` (and the rule detail)."""
        fields = self.state.options.authorize_log_fields or []
        head = exchange.head
        extra = authorize_fields(
            fields,
            headers=head.headers,
            method=head.method.decode("ascii", "replace"),
            path=target.path,
            query=target.query.decode("ascii", "replace"),
            host=target.host,
            client=exchange.client_ip,
            route_name=route.name,
            route_id=route.options.id,
            session_id=session.id if session is not None else None,
            user_id=session.user_id if session is not None else None,
            email=session.email if session is not None else None,
            claims=dict(session.claims) if session is not None else None,
        )
        policy = decision.log_fields() if decision is not None else {}
        log.info("access %s", outcome, extra={**extra, "decision": outcome, "policy": policy})

    async def _internal(self, exchange: Exchange, target: Target, handler: EndpointHandler) -> None:
        head = exchange.head
        body = await exchange.read_body(INTERNAL_BODY_LIMIT) if head.has_body else b""
        request = Request(
            method=head.method.decode("ascii", "replace"),
            scheme=exchange.scheme,
            host=target.host,
            port=target.port,
            path=target.path,
            query=target.query.decode("ascii", "replace"),
            headers=Headers.from_raw(head.headers),
            client_ip=exchange.client_ip,
            body=body,
        )
        response = await handler(request)
        self._send(exchange, response, None)

    async def _ping(self, request: Request) -> Response:
        return Response.text("OK")

    async def _healthz(self, request: Request) -> Response:
        ok = self.ready
        body: dict[str, Any] = {
            "status": "ok" if ok else "draining",
            "config": self.state.digest[:12],
        }
        return Response.json(body, 200 if ok else 503, [("Cache-Control", "no-store")])

    def _send(self, exchange: Exchange, response: Response, route: Route | None) -> None:
        """Send a response gatehouse made, with the route's (or global) response headers."""
        extra = route.set_response_headers if route is not None else self.state.response_headers
        present = {k.lower() for k, _ in response.headers}
        for name, value in extra:
            text = name.decode("latin-1")
            if text not in present:
                response.headers.append((text, value.decode("latin-1")))
        exchange.send(response)

    async def _hold_tunnel(
        self, exchange: Exchange, route: Route, outcome: Outcome, access: _Access
    ) -> None:
        """Keep a tunnel's coroutine alive: idle timeout and periodic re-authorization.

        Every ``websocket_reauthorize_interval`` the session is re-read (a sign-out ends
        it) and the current policy (after a reload, the new one) is re-evaluated; a tunnel
        that is no longer allowed is closed.
        """
        tunnel = outcome.tunnel
        if tunnel is None:
            return
        try:
            await self._watch_tunnel(exchange, route, tunnel, access)
        finally:
            exchange.bytes_sent += tunnel.bytes_down
            exchange.bytes_received += tunnel.bytes_up

    async def _watch_tunnel(
        self, exchange: Exchange, route: Route, tunnel: Tunnel, access: _Access
    ) -> None:
        idle = route.idle_timeout_s
        reauth = self.state.options.websocket_reauthorize_interval
        next_check = time.monotonic() + reauth if reauth > 0 else float("inf")
        while not tunnel.closed.done():
            wait = min(idle / 4 if idle > 0 else 5.0, 5.0, max(0.05, next_check - time.monotonic()))
            try:
                await asyncio.wait_for(asyncio.shield(tunnel.closed), timeout=wait)
            except TimeoutError:
                now = time.monotonic()
                if idle > 0 and now - tunnel.last_activity > idle:
                    log.info("closing idle tunnel", extra={"route": route.name})
                    tunnel.close()
                elif now >= next_check:
                    next_check = now + reauth
                    if not await self._still_allowed(exchange):
                        log.info(
                            "closing tunnel: no longer authorized",
                            extra={"route": route.name, "user": access.user},
                        )
                        access.decision = "revoked"
                        tunnel.close()

    async def _still_allowed(self, exchange: Exchange) -> bool:
        """Re-run the session and policy steps for a tunnelled request against the current state."""
        state = self.state
        try:
            target = parse_target(exchange, state.options.allow_path_parameters)
            route = state.router.match(target.host, target.port, target.path)
            protocol = (exchange.head.upgrade or b"").strip().lower()
            if route is None or protocol not in route.upgrades:
                return False
            if route.client_cert_required:  # a reload may have changed the client CA
                check_client_certificate(exchange, route)
            # Sign-outs reach the session cache through store invalidation (immediate
            # with Redis pub/sub, within the cache's max age otherwise).
            await self._authorize(exchange, target, route, state, _Access())
        except GatehouseError:
            return False
        return True

    def _log(
        self,
        exchange: Exchange,
        route: Route | None,
        outcome: Outcome | None,
        error: GatehouseError | None,
        access_info: _Access,
    ) -> None:
        access = self.access_log
        if not access.enabled:
            return
        head = exchange.head
        host = access_info.host
        if host is None:
            host = split_host(head.get(b"host"))[0]
        target = head.target
        qmark = target.find(b"?")
        aborted = exchange.phase is Phase.ABORTED
        wanted = self.state.options.access_log_fields
        if wanted is not None:
            access.write(
                access_line(
                    wanted,
                    time=now_iso(),
                    headers=head.headers,
                    method=head.method.decode("ascii", "replace"),
                    target=target.decode("ascii", "replace")[:4096],
                    status=(exchange.status or 499) if aborted else exchange.status,
                    size=exchange.bytes_sent,
                    duration_s=_now() - exchange.start_time,
                    route=route.name if route else None,
                    proxied=bool(outcome and outcome.upstream),
                    error=type(error).__name__ if error is not None else None,
                    client=exchange.client_ip,
                    request_id=access_info.request_id,
                )
            )
            return
        access.request(
            route=route.name if route else None,
            method=head.method.decode("ascii", "replace"),
            host=host,
            # Never the query: it may carry tokens (hand-offs, programmatic logins).
            path=(target if qmark < 0 else target[:qmark]).decode("ascii", "replace")[:2048],
            status=(exchange.status or 499) if aborted else exchange.status,
            bytes_sent=exchange.bytes_sent,
            bytes_in=exchange.bytes_received,
            duration_s=_now() - exchange.start_time,
            upstream=outcome.upstream if outcome else None,
            upstream_s=outcome.upstream_duration_s if outcome else None,
            client=exchange.client_ip,
            user=access_info.user,
            decision=access_info.decision,
            aborted=aborted,
            error=type(error).__name__ if error is not None else None,
            request_id=access_info.request_id,
        )


def check_client_certificate(exchange: Exchange, route: Route) -> None:
    """Pomerium's default ``invalid_client_certificate`` deny rule, answered before the
    policy and before any sign-in (``handleResult``).

    Raises:
        InvalidClientCertificate: no certificate, or one not valid for the route's CA.
    """
    trust = route.client_trust
    if trust is None:
        return
    problem = trust.check(exchange.peer_chain, time.time())
    if problem is not None:
        log.info(
            "access deny: no valid client certificate",
            extra={"route": route.name, "why": problem, "client": exchange.client_ip},
        )
        raise InvalidClientCertificate(problem)


def _hash_key(route: Route, session: Session | None, client_ip: str) -> bytes | None:
    """What a hashing route's balancer hashes, as Pomerium's hash policy: the SHA-256 of
    the session id (``x-pomerium-routing-key``), else the client IP."""
    balancer = route.balancer
    if balancer is None or not balancer.hashing:
        return None
    if session is not None:
        return hashlib.sha256(session.id.encode()).digest()
    return client_ip.encode()


def parse_target(exchange: Exchange, allow_path_parameters: bool = False) -> Target:
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
            raw = (parts.path or "/").encode() + (
                b"?" + parts.query.encode() if parts.query else b""
            )
        else:
            raise BadRequest("unsupported request target form")
    qmark = raw.find(b"?")
    raw_path, query = (raw, b"") if qmark < 0 else (raw[:qmark], raw[qmark + 1 :])
    try:
        path_text = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("non-ASCII bytes in the request target") from None
    path = normalize_request_path(path_text, allow_parameters=allow_path_parameters)
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
    query = (
        ""
        if redirect.strip_query or not target.query
        else "?" + target.query.decode("ascii", "replace")
    )
    return Response.redirect(f"{scheme}://{netloc}{path}{query}", redirect.response_code)
