"""Access and decision log lines shaped by Pomerium's ``access_log_fields`` and
``authorize_log_fields`` (the names are checked in :mod:`gatehouse.config.log_fields`).

Values follow Pomerium's (``internal/controlplane/grpc_accesslog.go``, ``authorize/log.go``):
``duration`` in milliseconds, ``path`` and ``referer`` without their query, ``headers`` an
object of canonical header names (``X-Foo``). Credentials never reach a log: the values
of credential headers are ``[redacted]``, and in ``query`` the values of parameters that
carry gatehouse or OpenID secrets are too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ..config.log_fields import HEADERS_FIELD, HEADERS_PREFIX

REDACTED = "[redacted]"
#: Request headers whose values are credentials.
_SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-pomerium-authorization",
        "x-pomerium-jwt-assertion",
    }
)
#: Query parameters whose values are credentials (hand-offs, programmatic logins, OAuth).
_SECRET_PARAMS = frozenset(
    {"pomerium_jwt", "code", "state", "id_token", "access_token", "refresh_token", "token"}
)


def canonical_header(name: str) -> str:
    """Go's ``http.CanonicalHeaderKey``: ``x-foo-bar`` -> ``X-Foo-Bar``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _headers(fields: Iterable[str], raw: list[tuple[bytes, bytes]]) -> dict[str, str] | None:
    everything = False
    wanted: set[str] = set()
    for field in fields:
        if field == HEADERS_FIELD:
            everything = True
        elif field.startswith(HEADERS_PREFIX):
            wanted.add(field[len(HEADERS_PREFIX) :].lower())
    if not everything and not wanted:
        return None
    out: dict[str, str] = {}
    for name, value in raw:
        text = name.decode("latin-1").lower()
        if everything or text in wanted:
            shown = REDACTED if text in _SECRET_HEADERS else value.decode("latin-1")
            key = canonical_header(text)
            out[key] = f"{out[key]},{shown}" if key in out else shown
    return out


def _query(raw: str) -> str:
    if not raw:
        return ""
    pairs = parse_qsl(raw, keep_blank_values=True)
    if not any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
        return raw
    return urlencode([(k, REDACTED if k.lower() in _SECRET_PARAMS else v) for k, v in pairs])


def _header(raw: list[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in raw:
        if key == name:
            return value.decode("latin-1")
    return ""


def access_line(
    fields: list[str],
    *,
    time: str,
    headers: list[tuple[bytes, bytes]],
    method: str,
    target: str,
    status: int,
    size: int,
    duration_s: float,
    route: str | None,
    proxied: bool,
    error: str | None,
    client: str,
    request_id: str | None,
) -> dict[str, Any]:
    """One access-log line with exactly ``fields`` (plus ``time`` and ``message``)."""
    path, _, query = target.partition("?")
    out: dict[str, Any] = {"time": time, "level": "info", "message": "http-request"}
    for field in fields:
        if field == "upstream-cluster" or field == "cluster-stat-name":
            out[field] = route or ""
        elif field == "method":
            out[field] = method
        elif field == "authority":
            out[field] = _header(headers, b"host")
        elif field == "path":
            out[field] = path
        elif field == "query":
            out[field] = _query(query)
        elif field == "user-agent":
            out[field] = _header(headers, b"user-agent")
        elif field == "referer":
            out[field] = _header(headers, b"referer").partition("?")[0]
        elif field == "forwarded-for":
            out[field] = _header(headers, b"x-forwarded-for")
        elif field == "request-id":
            out[field] = request_id or _header(headers, b"x-request-id")
        elif field == "duration":
            out[field] = round(duration_s * 1000, 3)
        elif field == "size":
            out[field] = size
        elif field == "response-code":
            out[field] = status
        elif field == "response-code-details":
            # Envoy's words where they apply: via_upstream for a proxied response.
            out[field] = "via_upstream" if proxied and error is None else (error or "local")
        elif field == "ip":
            out[field] = client
    shown = _headers(fields, headers)
    if shown is not None:
        out[HEADERS_FIELD] = shown
    return out


def authorize_fields(
    fields: list[str],
    *,
    headers: list[tuple[bytes, bytes]],
    method: str,
    path: str,
    query: str,
    host: str,
    client: str,
    route_name: str,
    route_id: str | None,
    session_id: str | None,
    user_id: str | None,
    email: str | None,
    claims: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ``authorize_log_fields`` of one decision (fields without a value are left out)."""
    out: dict[str, Any] = {}
    for field in fields:
        if field in ("request-id", "check-request-id"):
            out[field] = _header(headers, b"x-request-id")
        elif field == "method":
            out[field] = method
        elif field == "path":
            out[field] = path
        elif field == "query":
            out[field] = _query(query)
        elif field == "host":
            out[field] = host
        elif field == "ip":
            out[field] = client
        elif field == "session-id" and session_id:
            out[field] = session_id
        elif field == "user":
            out[field] = user_id or ""
        elif field == "email":
            out[field] = email or ""
        elif field == "route-id" and route_id:
            out[field] = route_id
        elif field == "cluster-stat-name":
            out[field] = route_name
        elif field == "id-token-claims" and claims is not None:
            out[field] = claims
    shown = _headers(fields, headers)
    if shown is not None:
        out[HEADERS_FIELD] = shown
    return out
