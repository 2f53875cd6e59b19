"""Header rewriting between client and upstream, both ways.

Towards the upstream: hop-by-hop headers (RFC 9110 §7.6.1) and every header named in
``Connection`` are dropped; so is every client-sent identity header
(``X-Pomerium-Jwt-Assertion*``, ``X-Pomerium-Claim-*``, the ``jwt_claims_headers`` names)
on every route, whatever the options: an upstream must never see an identity header
gatehouse did not write. That holds for every spelling an upstream may read as the same
header: CGI, WSGI, PHP and Rack turn ``_`` and ``-`` into one variable, so a name holding
``_`` is compared with ``_`` read as ``-`` (only such names pay for it), and
``headers_with_underscores_action: DROP_HEADER`` drops them all. gatehouse's own
credentials stay behind too: its session cookie, an ``Authorization`` holding a
programmatic token, ``X-Pomerium-Authorization``, and on a route whose
``bearer_token_format`` is an ``idp_*`` one, ``Authorization: Bearer`` (the IdP token
that was the request's session; see ``authenticate.bearer``). On routes
that pass identity headers, the client's own assertion is kept as
``X-Pomerium-Jwt-Assertion-For`` so a chain of services sees the original caller.
``X-Forwarded-For`` is appended to, ``X-Forwarded-Proto``/``X-Forwarded-Host`` are set,
and ``Host`` follows ``preserve_host_header``/``host_rewrite``.

Towards the client: hop-by-hop headers dropped, ``rewrite_response_headers`` applied
(:mod:`gatehouse.proxy.rewrites`), the route's response headers set.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..constants import (
    ASSERTION_FOR_HEADER,
    ASSERTION_HEADER,
    HOP_BY_HOP,
    IDENTITY_HEADER_PREFIXES,
    PROGRAMMATIC_AUTH_SCHEME,
    PROGRAMMATIC_BEARER_PREFIX,
)
from .balancer import Target
from .rewrites import rewrite_response_headers
from .router import UNDERSCORES_ALLOW, Route

_NO_TOKENS: frozenset[bytes] = frozenset()


#: ``Connection`` values that name no other header (the usual ones: a fast path).
_PLAIN_CONNECTION = frozenset(
    {b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade"}
)


def _tokens(value: bytes | None) -> frozenset[bytes]:
    """Header names a ``Connection`` value lists, beyond those always dropped (RFC 9110 §7.6.1)."""
    if value is None or value in _PLAIN_CONNECTION:
        return _NO_TOKENS
    tokens = {t.strip().lower() for t in value.split(b",")}
    tokens -= HOP_BY_HOP
    tokens.discard(b"close")
    return frozenset(tokens) if tokens else _NO_TOKENS


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    value: bytes | None = None
    for name, v in headers:
        if name == b"connection":
            value = v if value is None else value + b"," + v
    return _tokens(value)


def is_programmatic_authorization(value: bytes) -> bool:
    """True for an ``Authorization`` value holding a gatehouse session token.

    Wider than what gatehouse accepts (any case, extra spaces): whatever looks like one
    of its tokens is a credential valid on every route, and no upstream needs it.
    """
    scheme, _, rest = value.strip().partition(b" ")
    scheme = scheme.lower()
    if scheme == PROGRAMMATIC_AUTH_SCHEME:
        return True
    return scheme == b"bearer" and rest.lstrip()[:9].lower() == PROGRAMMATIC_BEARER_PREFIX


def is_bearer_authorization(value: bytes) -> bool:
    """True for an ``Authorization`` value of the ``Bearer`` scheme (any case, RFC 6750)."""
    scheme = value.strip().partition(b" ")[0]
    return scheme.lower() == b"bearer"


def bearer_token(authorization: bytes) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (``""`` when empty), or ``None``
    for another scheme and for gatehouse's own ``Bearer Pomerium-…`` tokens."""
    scheme, _, rest = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    token = rest.strip()
    if token[:9].lower() == b"pomerium-":
        return None
    return token.decode("latin-1")


def has_underscore_header(headers: list[tuple[bytes, bytes]]) -> bool:
    """True when a header name holds ``_`` (for ``REJECT_REQUEST``)."""
    for name, _ in headers:
        if b"_" in name:
            return True
    return False


def _managed_spelling(name: bytes, remove: frozenset[bytes]) -> bool:
    """True when ``name`` (an underscore spelling with ``_`` made ``-``) is a header
    gatehouse strips, sets or rewrites: forwarding it would let a CGI/WSGI/PHP/Rack
    upstream, which reads ``_`` and ``-`` as one, see the client's value for it."""
    return (
        name in HOP_BY_HOP
        or name in remove
        or name.startswith(IDENTITY_HEADER_PREFIXES)
        or name.startswith(b"x-forwarded-")
        or name.startswith(b"x-pomerium-")
    )


def _without_cookie(value: bytes, name: bytes) -> bytes:
    """``value`` without gatehouse's session cookie ``name`` and its sign-in binding
    cookie (``name_binding``, or ``__Host-name_binding`` over HTTPS)."""
    prefix = name + b"="
    if value.startswith(prefix) and b";" not in value:
        return b""  # the common case: gatehouse's cookie is the only one
    binding = name + b"_binding="
    return b"; ".join(
        part
        for part in (p.strip() for p in value.split(b";"))
        if part
        and not part.startswith(prefix)
        and not part.startswith(binding)
        and not (part.startswith(b"__Host-") and part[7:].startswith(binding))
    )


def upstream_request_head(
    *,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    connection: bytes | None,
    route: Route,
    host_header: bytes,
    original_host: bytes,
    client_ip: str,
    scheme: str,
    body_framing: bytes | None,
    upgrade: bytes | None,
    identity_headers: Sequence[tuple[bytes, bytes]] | None,
    session_cookie: bytes | None = None,
    set_headers: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """Serialise the request head to send upstream (HTTP/1.1, ends with a blank line).

    ``body_framing`` is the framing header line to add (``content-length: N`` or
    ``transfer-encoding: chunked``), or ``None`` for no body. ``identity_headers`` are
    gatehouse's own assertion and claim headers, or ``None`` when the route passes none.
    ``session_cookie`` is gatehouse's cookie name: that cookie is removed, since the
    session handle is a credential the upstream has no use for. ``set_headers`` are the
    route's ``set_request_headers`` rendered for this request (the templated ones).
    """
    connection_named = _tokens(connection)
    remove = route.remove_request_headers
    underscores = route.underscores_action
    out = [method, b" ", target, b" HTTP/1.1\r\nhost: ", host_header, b"\r\n"]
    xff: bytes | None = None
    client_assertion: bytes | None = None
    for name, value in headers:
        if name in HOP_BY_HOP or name == b"host" or name in remove:
            continue
        if b"_" in name:
            # DROP_HEADER drops them all (REJECT_REQUEST was answered before forwarding);
            # ALLOW still drops the spellings of headers gatehouse owns.
            if underscores != UNDERSCORES_ALLOW or _managed_spelling(
                name.replace(b"_", b"-"), remove
            ):
                continue
        elif name.startswith(b"x-"):
            if name.startswith(IDENTITY_HEADER_PREFIXES):
                if name == ASSERTION_HEADER and client_assertion is None:
                    client_assertion = value
                continue
            if name == b"x-forwarded-for":
                xff = value if xff is None else xff + b", " + value
                continue
            if name in (b"x-forwarded-proto", b"x-forwarded-host"):
                continue
        if connection_named and name in connection_named:
            continue
        if name == b"authorization" and (
            is_programmatic_authorization(value)
            or (route.strip_bearer and is_bearer_authorization(value))
        ):
            continue  # a gatehouse session token, or the IdP token that was the session
        if name == b"cookie" and session_cookie is not None and session_cookie in value:
            value = _without_cookie(value, session_cookie)
            if not value:
                continue
        out.append(name)
        out.append(b": ")
        out.append(value)
        out.append(b"\r\n")
    client = client_ip.encode()
    out.append(b"x-forwarded-for: ")
    out.append((xff + b", " + client) if xff else client)
    out.append(b"\r\n")
    out.append(b"x-forwarded-proto: ")
    out.append(scheme.encode())
    out.append(b"\r\nx-forwarded-host: ")
    out.append(original_host)
    out.append(b"\r\n")
    for name, value in route.set_request_headers:
        out.append(name)
        out.append(b": ")
        out.append(value)
        out.append(b"\r\n")
    for name, value in set_headers:
        out.append(name)
        out.append(b": ")
        out.append(value)
        out.append(b"\r\n")
    if identity_headers is not None:
        if client_assertion is not None:
            out.append(ASSERTION_FOR_HEADER)
            out.append(b": ")
            out.append(client_assertion)
            out.append(b"\r\n")
        for name, value in identity_headers:
            out.append(name)
            out.append(b": ")
            out.append(value)
            out.append(b"\r\n")
    if upgrade is not None:
        out.append(b"connection: upgrade\r\nupgrade: ")
        out.append(upgrade)
        out.append(b"\r\n")
    if body_framing is not None:
        out.append(body_framing)
        out.append(b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


#: Fields that must not travel as request trailers (RFC 9110 §6.5.1: framing, routing,
#: request modifiers, authentication, content handling), beside those
#: :func:`upstream_request_head` strips or sets.
TRAILER_FORBIDDEN = HOP_BY_HOP | frozenset(
    {
        b"host",
        b"authorization",
        b"cookie",
        b"set-cookie",
        b"content-length",
        b"content-type",
        b"content-encoding",
        b"content-range",
        b"cache-control",
        b"max-forwards",
        b"pragma",
        b"range",
        b"forwarded",
        b"x-real-ip",
        b"via",
    }
)


def upstream_trailers(
    trailers: list[tuple[bytes, bytes]], route: Route
) -> list[tuple[bytes, bytes]]:
    """The client's request trailers that may go to an HTTP/2 upstream.

    A trailer must never carry what the head may not: no identity header, no
    ``X-Forwarded-*``, nothing the route removes or sets, no field RFC 9110 §6.5.1 keeps
    out of trailers, and no name with ``_`` (read as ``-`` by some upstreams).
    """
    remove = route.remove_request_headers
    out: list[tuple[bytes, bytes]] = []
    for name, value in trailers:
        if (
            name[:1] == b":"
            or b"_" in name
            or name in TRAILER_FORBIDDEN
            or name in remove
            or name.startswith(b"x-forwarded-")
            or name.startswith(b"x-pomerium-")
            or name.startswith(IDENTITY_HEADER_PREFIXES)
            or name.startswith(b"if-")
        ):
            continue
        out.append((name, value))
    return out


def client_response_block(headers: list[tuple[bytes, bytes]], route: Route) -> bytes:
    """The upstream's response headers as the client gets them, serialised
    (``name: value\\r\\n`` lines; framing headers are added by the exchange)."""
    if route.options.rewrite_response_headers:
        headers = rewrite_response_headers(headers, route.options.rewrite_response_headers)
    connection_named = _connection_tokens(headers)
    overrides = route.set_response_headers
    override_names = route.set_response_header_names
    out: list[bytes] = []
    for name, value in headers:
        if name in HOP_BY_HOP or name in override_names:
            continue
        if connection_named and name in connection_named:
            continue
        out.append(name)
        out.append(b": ")
        out.append(value)
        out.append(b"\r\n")
    block = b"".join(out)
    return block + route.set_response_block if overrides else block


def upstream_address(
    route: Route,
    target: Target,
    host_override: bytes | None,
    original_host: bytes,
    path: str,
    query: bytes,
) -> tuple[bytes, bytes]:
    """The Host and request target sent to ``target`` (HTTP/1.1 and HTTP/2 alike): the
    rewrite's Host, else the client's (``preserve_host``), the route's ``host_rewrite`` or
    the target's own; the target's path prefix before the request's path."""
    host = host_override or (
        original_host if route.preserve_host else route.host_rewrite or target.host_header
    )
    upstream_path = (target.url_path + path) if target.url_path else path
    return host, upstream_path.encode("utf-8") + (b"?" + query if query else b"")
