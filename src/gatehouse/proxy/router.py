"""Compile routes from the config and match a request's host and path to one.

Matching follows Pomerium: routes are tried in config order and the first whose ``from``
host (exact, or a ``*.`` wildcard for one or more leading labels) and path condition
(``prefix`` string prefix, ``path`` exact, ``regex`` full match) fit wins. A ``from``
without a port matches any port; one with a port only that port.

The lookup (:mod:`.route_index`) indexes routes by host, port and path, so its cost does
not grow with the number of routes, and gives exactly the linear scan's answer.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from ..config.options import Options
from ..config.routes import DirectResponse, RedirectAction, RouteOptions
from ..constants import CREDENTIAL_HEADERS
from ..tls.downstream import DownstreamTrust
from ..tls.upstream import has_https_upstream, upstream_context
from .balancer import Balancer, SharedEndpoints
from .header_template import HeaderTemplate, is_template, parse
from .route_index import (
    MATCH_ANY,
    MATCH_PATH,
    MATCH_PREFIX,
    MATCH_REGEX,
    HostIndex,
    build_index,
    index_steps,
)

#: ``headers_with_underscores_action`` compiled (Envoy's values).
UNDERSCORES_ALLOW = 0
UNDERSCORES_DROP = 1
UNDERSCORES_REJECT = 2
_UNDERSCORE_ACTIONS = {
    "ALLOW": UNDERSCORES_ALLOW,
    "DROP_HEADER": UNDERSCORES_DROP,
    "REJECT_REQUEST": UNDERSCORES_REJECT,
}


def _encode_headers(headers: dict[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())


@dataclass(frozen=True, slots=True, eq=False, init=False)
class Route:
    """A route compiled for the hot path."""

    index: int
    name: str
    options: RouteOptions
    host: str
    wildcard_suffix: str | None
    port: int | None
    match_kind: int
    match_value: str
    match_regex: re.Pattern[str] | None
    balancer: Balancer | None
    redirect: RedirectAction | None
    response: DirectResponse | None
    prefix_rewrite: str | None
    regex_rewrite: tuple[re.Pattern[str], str] | None
    preserve_host: bool
    host_rewrite: bytes | None
    #: Lower-case names never forwarded from the client: configured, the set headers'
    #: names, the ``jwt_claims_headers`` names and gatehouse's credential headers.
    remove_request_headers: frozenset[bytes]
    #: One of the ``UNDERSCORES_*`` values.
    underscores_action: int
    set_request_headers: tuple[tuple[bytes, bytes], ...]
    #: Global defaults merged with the route's, lower-case names; "" values removed.
    set_response_headers: tuple[tuple[bytes, bytes], ...]
    #: The names of ``set_response_headers``, and the headers serialised (hot path).
    set_response_header_names: frozenset[bytes]
    set_response_block: bytes
    timeout_s: float
    idle_timeout_s: float
    allow_websockets: bool
    #: ``Upgrade`` protocols tunnelled (lower case): ``websocket`` with allow_websockets,
    #: ``spdy/3.1`` with allow_spdy, and the ``allow_upgrades`` names.
    upgrades: frozenset[bytes]
    #: Whether an upgrade's ``Origin`` must be the route's own or in ``allowed_origins``.
    origin_check: bool
    #: Normalised origins (``scheme://host[:port]``) allowed besides the route's own.
    allowed_origins: frozenset[str]
    pass_identity_headers: bool
    #: The compiled policy (set by authorize at config load; ``None`` = public route).
    policy: Any = None
    #: The route's client CA (``tls.client_trust.ClientTrust``; set at config load), or
    #: ``None``: then every request counts as having a valid client certificate.
    client_trust: Any = None
    #: Deny (495) a request without a valid client certificate before the policy.
    client_cert_required: bool = False
    #: ``bearer_token_format`` is an ``idp_*`` one: ``Authorization: Bearer`` is the
    #: gatehouse credential here and is not forwarded (``authenticate.bearer``).
    strip_bearer: bool = False
    #: ``set_request_headers`` values with ``$`` substitutions, rendered per request
    #: (the plain ones are in ``set_request_headers``).
    request_header_templates: tuple[tuple[bytes, HeaderTemplate], ...] = ()

    def __init__(
        self,
        index: int,
        name: str,
        options: RouteOptions,
        host: str,
        wildcard_suffix: str | None,
        port: int | None,
        match_kind: int,
        match_value: str,
        match_regex: re.Pattern[str] | None,
        balancer: Balancer | None,
        redirect: RedirectAction | None,
        response: DirectResponse | None,
        prefix_rewrite: str | None,
        regex_rewrite: tuple[re.Pattern[str], str] | None,
        preserve_host: bool,
        host_rewrite: bytes | None,
        remove_request_headers: frozenset[bytes],
        underscores_action: int,
        set_request_headers: tuple[tuple[bytes, bytes], ...],
        set_response_headers: tuple[tuple[bytes, bytes], ...],
        set_response_header_names: frozenset[bytes],
        set_response_block: bytes,
        timeout_s: float,
        idle_timeout_s: float,
        allow_websockets: bool,
        upgrades: frozenset[bytes],
        origin_check: bool,
        allowed_origins: frozenset[str],
        pass_identity_headers: bool,
        policy: Any = None,
        client_trust: Any = None,
        client_cert_required: bool = False,
        strip_bearer: bool = False,
        request_header_templates: tuple[tuple[bytes, HeaderTemplate], ...] = (),
    ) -> None:
        # Written out rather than generated by ``dataclass``: compiled, the fields are
        # stored directly (~0.1 us a route) where the generated ``__init__`` ran as
        # Python, one ``object.__setattr__`` call per field (~6 us a route, 60 ms of
        # compiling 10,000 routes). Same fields, order and defaults as declared above.
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "options", options)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "wildcard_suffix", wildcard_suffix)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "match_kind", match_kind)
        object.__setattr__(self, "match_value", match_value)
        object.__setattr__(self, "match_regex", match_regex)
        object.__setattr__(self, "balancer", balancer)
        object.__setattr__(self, "redirect", redirect)
        object.__setattr__(self, "response", response)
        object.__setattr__(self, "prefix_rewrite", prefix_rewrite)
        object.__setattr__(self, "regex_rewrite", regex_rewrite)
        object.__setattr__(self, "preserve_host", preserve_host)
        object.__setattr__(self, "host_rewrite", host_rewrite)
        object.__setattr__(self, "remove_request_headers", remove_request_headers)
        object.__setattr__(self, "underscores_action", underscores_action)
        object.__setattr__(self, "set_request_headers", set_request_headers)
        object.__setattr__(self, "set_response_headers", set_response_headers)
        object.__setattr__(self, "set_response_header_names", set_response_header_names)
        object.__setattr__(self, "set_response_block", set_response_block)
        object.__setattr__(self, "timeout_s", timeout_s)
        object.__setattr__(self, "idle_timeout_s", idle_timeout_s)
        object.__setattr__(self, "allow_websockets", allow_websockets)
        object.__setattr__(self, "upgrades", upgrades)
        object.__setattr__(self, "origin_check", origin_check)
        object.__setattr__(self, "allowed_origins", allowed_origins)
        object.__setattr__(self, "pass_identity_headers", pass_identity_headers)
        object.__setattr__(self, "policy", policy)
        object.__setattr__(self, "client_trust", client_trust)
        object.__setattr__(self, "client_cert_required", client_cert_required)
        object.__setattr__(self, "strip_bearer", strip_bearer)
        object.__setattr__(self, "request_header_templates", request_header_templates)

    def matches_host(self, host: str, port: int | None) -> bool:
        if self.port is not None:
            # A Host without a port means the scheme's default port (RFC 9110 §7.2).
            effective = port if port is not None else self.default_port
            if effective != self.port:
                return False
        if self.wildcard_suffix is not None:
            return host.endswith(self.wildcard_suffix) and len(host) > len(self.wildcard_suffix)
        return host == self.host

    @property
    def default_port(self) -> int:
        return 443 if self.options.from_scheme == "https" else 80

    def matches_path(self, path: str) -> bool:
        kind = self.match_kind
        if kind == MATCH_ANY:
            return True
        if kind == MATCH_PREFIX:
            return path.startswith(self.match_value)
        if kind == MATCH_PATH:
            return path == self.match_value
        regex = self.match_regex
        return regex is not None and regex.fullmatch(path) is not None

    def rewrite_path(self, path: str) -> str:
        """The path to send upstream (prefix or regex rewrite, then the ``to`` URL's path)."""
        if self.prefix_rewrite is not None and self.match_kind == MATCH_PREFIX:
            path = self.prefix_rewrite + path[len(self.match_value) :]
        elif self.prefix_rewrite is not None:
            path = self.prefix_rewrite + path.lstrip("/") if path != "/" else self.prefix_rewrite
        elif self.regex_rewrite is not None:
            pattern, substitution = self.regex_rewrite
            path = pattern.sub(substitution, path)
        if not path.startswith("/"):
            path = "/" + path
        return path


def attach_client_trust(route: Route, client_cas: DownstreamTrust, index: int) -> None:
    """Give a compiled route its client CA (``downstream_mtls`` or its own
    ``tls_downstream_client_ca``) and whether requests without a valid certificate are
    denied before its policy."""
    trust = client_cas.for_route(index)
    object.__setattr__(route, "client_trust", trust)
    object.__setattr__(route, "client_cert_required", trust is not None and client_cas.default_deny)


class RouteParts:
    """What compiling one config's routes computes once instead of per route.

    The parts that depend only on the global options (the merged response headers, the
    identity header names never forwarded, the underscores action), and immutable values
    that routes with equal settings share: the response-header block by the route's
    ``set_response_headers``, the never-forwarded set by the route's request header
    settings, and plain-text upstream endpoints (:class:`~.balancer.Balancer`). With
    10,000 routes that differ only in ``from``, each of these is made once, not 10,000
    times. One instance serves one :class:`~.compile_cache.RouteCompiler` call.
    """

    __slots__ = (
        "claim_headers",
        "endpoints",
        "removes",
        "response_headers",
        "responses",
        "underscores_action",
    )

    def __init__(self, options: Options) -> None:
        self.response_headers: dict[str, str] = options.response_headers()
        #: Identity headers gatehouse writes under configured names, in the spelling an
        #: upstream framework reads them in (``_`` and ``-`` alike), and credentials only
        #: gatehouse reads: never forwarded from the client.
        self.claim_headers: frozenset[bytes] = frozenset(
            {h.lower().replace("_", "-").encode("latin-1") for h in options.jwt_claims_headers}
            | CREDENTIAL_HEADERS
        )
        self.underscores_action = _UNDERSCORE_ACTIONS[options.headers_with_underscores_action]
        #: ``repr(set_response_headers)`` -> (headers, their names, the serialised block).
        self.responses: dict[
            str, tuple[tuple[tuple[bytes, bytes], ...], frozenset[bytes], bytes]
        ] = {}
        #: The never-forwarded sets made so far, each kept once.
        self.removes: dict[frozenset[bytes], frozenset[bytes]] = {}
        #: Plain-text endpoints and their Host header (see ``Balancer.from_route``).
        self.endpoints: SharedEndpoints = {}

    def response_block(
        self, route: RouteOptions
    ) -> tuple[tuple[tuple[bytes, bytes], ...], frozenset[bytes], bytes]:
        """The route's response headers (global defaults merged with its own, lower-case
        names, ``""`` values removed), their names, and the serialised block."""
        key = repr(route.set_response_headers)
        found = self.responses.get(key)
        if found is not None:
            return found
        response_headers = dict(self.response_headers)
        lower = {k.lower(): k for k in response_headers}
        for name, val in route.set_response_headers.items():
            if name.lower() in lower:
                del response_headers[lower[name.lower()]]
            if val != "":
                response_headers[name] = val
                lower[name.lower()] = name
        encoded = _encode_headers(response_headers)
        block = b"".join(k + b": " + v + b"\r\n" for k, v in encoded)
        made = (encoded, frozenset(k for k, _ in encoded), block)
        self.responses[key] = made
        return made

    def removed(self, names: set[bytes]) -> frozenset[bytes]:
        """``names`` with the identity and credential headers, one frozenset per content."""
        value = frozenset(names) | self.claim_headers
        return self.removes.setdefault(value, value)


def _balancer(options: Options, route: RouteOptions, index: int, parts: RouteParts) -> Balancer:
    """The route's balancer, with the client contexts (HTTP/1.1 and ``h2``, same trust
    and client certificate) for its https upstreams."""
    if not has_https_upstream(route):
        return Balancer.from_route(route, endpoints=parts.endpoints)
    where = f"routes[{index}]"
    return Balancer.from_route(
        route,
        upstream_context(options, route, where),
        upstream_context(options, route, where, alpn="h2"),
        endpoints=parts.endpoints,
    )


def compile_route(
    options: Options, route: RouteOptions, index: int, parts: RouteParts | None = None
) -> Route:
    """Compile one validated route (``parts``: shared by the routes of one config; made
    for this route alone when not given)."""
    if parts is None:
        parts = RouteParts(options)
    host = route.from_host
    wildcard_suffix = host[1:] if host.startswith("*.") else None
    if route.prefix is not None:
        kind, value = MATCH_PREFIX, route.prefix
    elif route.path is not None:
        kind, value = MATCH_PATH, route.path
    elif route.regex is not None:
        kind, value = MATCH_REGEX, route.regex
    else:
        kind, value = MATCH_ANY, ""
    set_response, set_response_names, set_response_block = parts.response_block(route)
    set_request = _encode_headers(route.set_request_headers)
    remove = {h.lower().encode("latin-1") for h in route.remove_request_headers}
    remove.update(k for k, _ in set_request)
    templates = tuple(
        (k, parse(v.decode("latin-1"))) for k, v in set_request if is_template(v.decode("latin-1"))
    )
    set_request = tuple((k, v) for k, v in set_request if b"$" not in v)
    upgrades = {p.encode("ascii") for p in route.allow_upgrades}
    if route.allow_websockets:
        upgrades.add(b"websocket")
    if route.allow_spdy:
        upgrades.add(b"spdy/3.1")
    origin_check = route.websocket_origin_check or options.websocket_origin_check
    allowed_origins = (
        route.websocket_allowed_origins
        if route.websocket_allowed_origins is not None
        else options.websocket_allowed_origins
    )
    return Route(
        index=index,
        name=route.display_name,
        options=route,
        host=host,
        wildcard_suffix=wildcard_suffix,
        port=route.from_port,
        match_kind=kind,
        match_value=value,
        match_regex=re.compile(value) if kind == MATCH_REGEX else None,
        balancer=_balancer(options, route, index, parts) if route.to else None,
        redirect=route.redirect,
        response=route.response,
        prefix_rewrite=route.prefix_rewrite,
        regex_rewrite=(
            (
                re.compile(route.regex_rewrite_pattern),
                _go_substitution(route.regex_rewrite_substitution or ""),
            )
            if route.regex_rewrite_pattern
            else None
        ),
        preserve_host=route.preserve_host_header,
        host_rewrite=route.host_rewrite.encode("latin-1") if route.host_rewrite else None,
        remove_request_headers=parts.removed(remove),
        underscores_action=parts.underscores_action,
        set_request_headers=set_request,
        set_response_headers=set_response,
        set_response_header_names=set_response_names,
        set_response_block=set_response_block,
        timeout_s=route.timeout if route.timeout is not None else options.default_upstream_timeout,
        idle_timeout_s=route.idle_timeout,
        allow_websockets=route.allow_websockets,
        upgrades=frozenset(upgrades),
        origin_check=origin_check == "same-origin",
        allowed_origins=frozenset(allowed_origins),
        pass_identity_headers=options.route_pass_identity_headers(route),
        strip_bearer=options.route_bearer_token_format(route) != "default",
        request_header_templates=templates,
    )


def _go_substitution(sub: str) -> str:
    r"""Envoy/RE2 substitutions use ``\1``; Python's ``re.sub`` does too, but also needs
    ``\g<1>`` when a digit follows. Convert ``\N`` to ``\g<N>`` so both read the same."""
    return re.sub(r"\\(\d+)", r"\\g<\1>", sub)


class Router:
    """Routes in config order, indexed by host, port and path (see :mod:`.route_index`)."""

    def __init__(
        self,
        routes: Sequence[Route],
        previous: Router | None = None,
        *,
        index: HostIndex[Route] | None = None,
    ) -> None:
        """``previous``: the router of the config before, whose per-host tables are kept
        where a host's routes are the same objects (see :func:`.route_index.index_steps`);
        ``index``: the index of ``routes``, built already (:func:`router_steps`)."""
        self.routes = tuple(routes)
        if index is None:
            index = build_index(
                self.routes,
                previous._index if previous is not None else None,
                previous.routes if previous is not None else (),
            )
        self._index: HostIndex[Route] = index

    def parts(self) -> list[object]:
        """The routes and host groups (to free a replaced router a few at a time)."""
        return [*self.routes, *self._index.groups()]

    def candidates(self, host: str, port: int | None) -> tuple[Route, ...]:
        """Every route serving ``host`` and ``port``, in config order."""
        return self._index.candidates(host, port)

    def serves(self, host: str, port: int | None) -> bool:
        """Whether any route serves ``host`` and ``port`` (whatever the path)."""
        return self._index.first_for_host(host, port) is not None

    def first_for_host(self, host: str, port: int | None) -> Route | None:
        """The first route in config order serving ``host`` and ``port``, any path."""
        return self._index.first_for_host(host, port)

    def match(self, host: str, port: int | None, path: str) -> Route | None:
        """The first route matching ``host`` (lower case, no port) and ``path``, or ``None``."""
        return self._index.match(host, port, path)


def router_steps(
    routes: Sequence[Route], previous: Router | None = None
) -> Generator[None, None, Router]:
    """:class:`Router` ``(routes, previous)`` built by a generator that pauses every few
    hundred routes (a reload sliced on the event loop, :mod:`gatehouse.timeslice`)."""
    kept = tuple(routes)
    index = yield from index_steps(
        kept,
        previous._index if previous is not None else None,
        previous.routes if previous is not None else (),
    )
    return Router(kept, index=index)


def split_host(value: bytes | None) -> tuple[str, int | None]:
    """Split a Host header into (lower-case name, port); ("", None) when absent or bad."""
    if not value:
        return "", None
    try:
        text = value.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return "", None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return "", None
        host, rest = text[: end + 1], text[end + 1 :]
        if rest.startswith(":") and rest[1:].isdigit():
            return host, int(rest[1:])
        return (host, None) if not rest else ("", None)
    host, sep, port = text.partition(":")
    if sep:
        if not port.isdigit() or not 0 < int(port) < 65536:
            return "", None
        return host.rstrip("."), int(port)
    return host.rstrip("."), None
