"""Per-route rewrites of the upstream Host and of response headers (Pomerium's
``host_rewrite_header``, ``host_path_regex_rewrite_*`` and ``rewrite_response_headers``).

Both are read from the route's options only on routes that set them, so other routes pay
one attribute test per request.

Host (Envoy's ``RouteAction.host_rewrite_header`` / ``host_rewrite_path_regex``): the
value of a request header, or the request path (before any path rewrite, query removed)
substituted with an RE2 pattern. An absent or empty result leaves the client's Host, as
Envoy leaves the header intact. Anything that is not a host[:port] is refused (400):
the client writes the header, and the Host line must stay one well-formed token.

Response headers: Pomerium's Lua filter, entry by entry: a present header (its values
joined by ``,``, as Envoy's Lua ``headers:get`` does) whose value starts with ``prefix``
gets the prefix replaced by ``value``, and replaces every copy of that header.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ..config.re2 import python_substitution
from ..config.rewrites import RewriteHeader
from ..errors import BadRequest
from .router import Route

#: A Host value: reg-name or IPv4 (letters, digits, ``-._~`` and sub-delims are more than
#: RFC 3986 allows a DNS name; ``_`` is common in internal names) or ``[IPv6]``, then an
#: optional port. Length capped at 255 (RFC 1035 §2.3.4 for names).
_HOST = re.compile(rb"(?:[A-Za-z0-9._~-]{1,255}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


@lru_cache(maxsize=256)
def _compiled(pattern: str, substitution: str) -> tuple[re.Pattern[str], str]:
    return re.compile(pattern), python_substitution(substitution)


def upstream_host(route: Route, headers: list[tuple[bytes, bytes]], path: str) -> bytes | None:
    """The Host to send upstream for a route with a host rewrite from the request, or
    ``None`` to keep the client's.

    Raises:
        BadRequest: the header or the substitution gives something that is not a host.
    """
    options = route.options
    value: bytes | None = None
    if options.host_rewrite_header is not None:
        wanted = options.host_rewrite_header.lower().encode("latin-1")
        for name, raw in headers:
            if name == wanted:
                value = raw.strip()
                break
        what = options.host_rewrite_header
    elif options.host_path_regex_rewrite_pattern is not None:
        pattern, sub = _compiled(
            options.host_path_regex_rewrite_pattern,
            options.host_path_regex_rewrite_substitution or "",
        )
        value = pattern.sub(sub, path).encode("utf-8")
        what = "host_path_regex_rewrite"
    else:
        return None
    if not value:
        return None
    if not _HOST.fullmatch(value):
        raise BadRequest(f"{what} gives an invalid upstream Host {value[:100]!r}")
    return value


def rewrite_response_headers(
    headers: list[tuple[bytes, bytes]], rules: list[RewriteHeader]
) -> list[tuple[bytes, bytes]]:
    """``headers`` (lower-case names) with ``rules`` applied in order."""
    for rule in rules:
        name = rule.header.lower().encode("latin-1")
        values = [v for n, v in headers if n == name]
        if not values:
            continue
        current = b",".join(values)
        prefix = rule.prefix.encode("utf-8")
        if current.startswith(prefix):
            current = rule.value.encode("utf-8") + current[len(prefix) :]
        at = next(i for i, (n, _) in enumerate(headers) if n == name)
        headers = [h for h in headers if h[0] != name]
        headers.insert(at, (name, current))
    return headers
