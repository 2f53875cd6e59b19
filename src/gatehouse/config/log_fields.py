"""Pomerium's ``access_log_fields`` and ``authorize_log_fields``: the field names
gatehouse accepts, and why the others are refused.

Names and defaults are Pomerium's (``pkg/logfields/access.go``, ``authorize.go``); a
``headers.<Name>`` entry logs one request header, ``headers`` all of them (credential
headers are logged as ``[redacted]``: gatehouse never logs a secret). When a key is unset,
gatehouse writes its own access and decision lines (docs/operations.md); when set, those
lines carry exactly the listed fields, under Pomerium's names.
"""

from __future__ import annotations

from pydantic import field_validator

from .base import StrictModel, StringList
from .rewrites import check_header_name

HEADERS_FIELD = "headers"
HEADERS_PREFIX = "headers."

#: Access-log fields gatehouse writes, in Pomerium's default order first.
ACCESS_FIELDS = (
    "upstream-cluster",
    "method",
    "authority",
    "path",
    "user-agent",
    "referer",
    "forwarded-for",
    "request-id",
    "duration",
    "size",
    "response-code",
    "response-code-details",
    "cluster-stat-name",
    "ip",
    "query",
)
#: Pomerium's default ``access_log_fields``.
DEFAULT_ACCESS_FIELDS = ACCESS_FIELDS[:12]
ACCESS_REFUSED = {
    "client-certificate": "the client certificate is not passed to the access log",
}

#: Authorize-log fields gatehouse writes.
AUTHORIZE_FIELDS = (
    "request-id",
    "check-request-id",
    "method",
    "path",
    "host",
    "ip",
    "session-id",
    "impersonate-session-id",
    "impersonate-user-id",
    "impersonate-email",
    "removed-groups-count",
    "service-account-id",
    "user",
    "email",
    "envoy-route-checksum",
    "envoy-route-id",
    "route-checksum",
    "route-id",
    "cluster-stat-name",
    "query",
    "id-token-claims",
    "body",
    "mcp-method",
    "mcp-tool",
    "mcp-tool-parameters",
)
#: Pomerium's default ``authorize_log_fields``.
DEFAULT_AUTHORIZE_FIELDS = AUTHORIZE_FIELDS[:18]
#: Accepted but never written: gatehouse has nothing for them (Pomerium omits them too
#: when empty: no impersonation, no service accounts, no Envoy route table, no MCP, and
#: no request body read for authorization, which Pomerium does only for MCP).
AUTHORIZE_ALWAYS_EMPTY = frozenset(
    {
        "impersonate-session-id",
        "impersonate-user-id",
        "impersonate-email",
        "service-account-id",
        "envoy-route-checksum",
        "envoy-route-id",
        "removed-groups-count",
        "body",
        "mcp-method",
        "mcp-tool",
        "mcp-tool-parameters",
    }
)
AUTHORIZE_REFUSED = {
    "id-token": "gatehouse never logs tokens; use id-token-claims",
}


def check_fields(
    key: str, fields: list[str], known: tuple[str, ...], refused: dict[str, str]
) -> list[str]:
    """``fields`` if every one is known (or a ``headers.<Name>``), else ``ValueError``."""
    for field in fields:
        if field == HEADERS_FIELD or (
            field.startswith(HEADERS_PREFIX) and len(field) > len(HEADERS_PREFIX)
        ):
            continue
        if field in refused:
            raise ValueError(f"field {field!r} is not supported by gatehouse ({refused[field]})")
        if field not in known:
            raise ValueError(
                f"unknown {key} field {field!r}; expected one of {', '.join(known)}, "
                "headers or headers.<Name>"
            )
    return fields


def _check_header_names(fields: list[str]) -> None:
    for field in fields:
        if field.startswith(HEADERS_PREFIX):
            check_header_name(field[len(HEADERS_PREFIX) :])


class LogFieldOptions(StrictModel):
    """The two keys, composed into :class:`~gatehouse.config.options.Options`."""

    #: Pomerium's access-log fields, by name (Pomerium's default: upstream-cluster, method,
    #: authority, path, user-agent, referer, forwarded-for, request-id, duration, size,
    #: response-code, response-code-details; also ip, query, cluster-stat-name, `headers`,
    #: `headers.<Name>`); the access line then has exactly these. Unset = gatehouse's own line.
    access_log_fields: StringList | None = None
    #: Pomerium's authorize-log fields (default: request-id, check-request-id, method, path,
    #: host, ip, session-id, impersonate-*, removed-groups-count, service-account-id, user,
    #: email, envoy-route-checksum, envoy-route-id, route-checksum, route-id; also query,
    #: cluster-stat-name, id-token-claims, `headers`, `headers.<Name>`); fields gatehouse
    #: has no value for (impersonation, body, mcp-*) are omitted, as Pomerium omits empty
    #: ones; id-token is refused. Unset = gatehouse's own line.
    authorize_log_fields: StringList | None = None

    @field_validator("access_log_fields")
    @classmethod
    def _access_log_fields(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            check_fields("access_log_fields", value, ACCESS_FIELDS, ACCESS_REFUSED)
            _check_header_names(value)
        return value

    @field_validator("authorize_log_fields")
    @classmethod
    def _authorize_log_fields(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            check_fields("authorize_log_fields", value, AUTHORIZE_FIELDS, AUTHORIZE_REFUSED)
            _check_header_names(value)
        return value
