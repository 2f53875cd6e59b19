"""Route options (Pomerium's ``routes:`` entries): matching, upstreams, rewrites and actions.

Only the shape and the per-route rules are checked here; :mod:`gatehouse.proxy.router`
compiles a validated :class:`RouteOptions` into the fast matcher the hot path uses.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import Field, field_validator, model_validator

from .auth import BearerTokenFormat
from .base import HeaderMap, StrictModel, StringList, any_case, normalize_origin_setting
from .durations import Duration
from .re2 import check_re2, check_substitution
from .rewrites import RewriteHeader, check_header_name
from .sub_policies import SubPolicy
from .upstream_health import BalancingOptions

_REDIRECT_CODES = {
    "MOVED_PERMANENTLY": 301,
    "FOUND": 302,
    "SEE_OTHER": 303,
    "TEMPORARY_REDIRECT": 307,
    "PERMANENT_REDIRECT": 308,
}
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

#: ``from`` URLs split once: the validator, and the matcher, cross-checks and logs that
#: read a route's scheme, host and port, would otherwise split each one several times
#: (10,000 routes: ~0.1 s). Bounded, as reloads bring new URLs; the stdlib's own cache
#: holds 128.
_split_from = functools.lru_cache(maxsize=32_768)(urlsplit)


def _check_host(host: str, *, wildcard_ok: bool) -> None:
    labels = host.split(".")
    for i, label in enumerate(labels):
        if label == "*" and i == 0 and wildcard_ok and len(labels) > 1:
            continue
        if not _HOST_LABEL.match(label) and not label.replace("_", "").isalnum():
            raise ValueError(f"invalid host name {host!r}")


class UpstreamURL(StrictModel):
    """One ``to`` endpoint: an http(s) URL with an optional load-balancing weight."""

    url: str
    #: `h2c`: HTTP/2 without TLS (prior knowledge), as Pomerium's `to: h2c://` (gRPC).
    scheme: Literal["http", "https", "h2c"]
    host: str
    port: int
    #: The URL's path, without a trailing ``/``; put in front of every forwarded path.
    path: str
    weight: int = 1

    @classmethod
    def parse(cls, text: str) -> UpstreamURL:
        """Parse ``http://host:port/path[,weight]``."""
        raw, sep, weight_text = text.rpartition(",") if "," in text else (text, "", "")
        weight = 1
        if sep:
            if not weight_text.strip().isdigit() or int(weight_text) < 1:
                raise ValueError(f"invalid weight in {text!r}: expected a positive integer")
            weight = int(weight_text)
        try:
            parts = urlsplit(raw.strip())
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"invalid upstream URL {raw!r}: {exc}") from None
        if parts.scheme not in ("http", "https", "h2c"):
            raise ValueError(f"upstream URL {raw!r} must start with http://, https:// or h2c://")
        if not parts.hostname:
            raise ValueError(f"upstream URL {raw!r} has no host")
        if parts.username or parts.password:
            raise ValueError(f"upstream URL {raw!r} must not carry credentials")
        if parts.query or parts.fragment:
            raise ValueError(f"upstream URL {raw!r} must not have a query or fragment")
        return cls(
            url=raw.strip(),
            scheme=parts.scheme,  # type: ignore[arg-type]
            host=parts.hostname,
            port=port or (443 if parts.scheme == "https" else 80),
            path=parts.path.rstrip("/"),
            weight=weight,
        )


#: ``to`` URLs parsed once per distinct text: 10,000 routes to one upstream parse it once
#: (~6 us each, a fifth of validating a route). The instances are immutable, so routes
#: share them; bounded as ``_split_from`` is. A text that fails raises again each time.
_parse_upstream = functools.lru_cache(maxsize=32_768)(UpstreamURL.parse)


class RedirectAction(StrictModel):
    """Pomerium's ``redirect`` action: answer with a redirect instead of proxying."""

    #: Redirect to `https` (and the default port unless `port_redirect`).
    https_redirect: bool = False
    #: Redirect to this scheme.
    scheme_redirect: Annotated[Literal["http", "https"], any_case("http", "https")] | None = None
    #: Redirect to this host.
    host_redirect: str | None = None
    #: Redirect to this port.
    port_redirect: int | None = Field(default=None, ge=1, le=65535)
    #: Redirect to this path.
    path_redirect: str | None = None
    #: Replace the route's matched `prefix` with this in the redirect's path.
    prefix_rewrite: str | None = None
    #: The redirect's status: 301, 302, 303, 307 or 308 (or a name such as `FOUND`).
    response_code: int = 301
    #: Drop the query string from the redirect location.
    strip_query: bool = False

    @field_validator("response_code", mode="before")
    @classmethod
    def _code(cls, value: Any) -> Any:
        if isinstance(value, str) and value.upper() in _REDIRECT_CODES:
            return _REDIRECT_CODES[value.upper()]
        if value not in (301, 302, 303, 307, 308):
            raise ValueError("response_code must be one of 301, 302, 303, 307, 308")
        return value

    @field_validator("host_redirect", "path_redirect", "prefix_rewrite")
    @classmethod
    def _wire_safe(cls, value: str | None) -> str | None:
        if value is not None and _UNSAFE.search(value):
            raise ValueError("must not contain spaces or control characters")
        return value

    @model_validator(mode="after")
    def _one_path(self) -> RedirectAction:
        if self.path_redirect is not None and self.prefix_rewrite is not None:
            raise ValueError("use either path_redirect or prefix_rewrite, not both")
        return self


class DirectResponse(StrictModel):
    """Pomerium's ``response`` action: answer with a fixed status and body."""

    #: The response status (200 to 599).
    status: int = Field(default=200, ge=200, le=599)
    #: The response body.
    body: str = ""


class RouteOptions(BalancingOptions):
    """One entry of ``routes:``; keys and meanings follow Pomerium's route reference."""

    #: A name for logs and metrics.
    name: str | None = None
    #: A stable identifier (Pomerium compatibility).
    id: str | None = None
    #: Free text, shown on the routes portal (`/.pomerium/routes`).
    description: str | None = None
    #: Image shown beside the route on the routes portal: an `https://` or `data:image/`
    #: URL (others are not shown).
    logo_url: str | None = None
    #: The external URL: `https://host` (or `http://` with `insecure_server`); `*.example.com`
    #: matches any subdomain; a port restricts the match to it.
    from_: str = Field(alias="from")
    #: Upstream URL, or a list; `URL,weight` for weighted round robin. An endpoint refusing
    #: connections is skipped for 10 s.
    to: list[UpstreamURL] | None = None
    #: Answer with a redirect instead of proxying (see below).
    redirect: RedirectAction | None = None
    #: Answer with a fixed status and body instead of proxying.
    response: DirectResponse | None = None

    #: Match paths starting with this string.
    prefix: str | None = None
    #: Match exactly this path.
    path: str | None = None
    #: Match paths fully matching this regular expression.
    regex: str | None = None
    #: Replace the matched `prefix` with this before forwarding.
    prefix_rewrite: str | None = None
    #: Rewrite the path with this regular expression...
    regex_rewrite_pattern: str | None = None
    #: ...and this substitution (`\1` for groups).
    regex_rewrite_substitution: str | None = None

    #: Send the client's Host upstream instead of the `to` host.
    preserve_host_header: bool = False
    #: Send this Host upstream.
    host_rewrite: str | None = None
    #: Send the value of this request header as the Host upstream (Envoy's
    #: `host_rewrite_header`); without it, or empty, the client's Host is sent.
    host_rewrite_header: str | None = None
    #: Send as Host the result of this RE2 pattern substituted on the request path
    #: (query removed; Envoy's host rewrite by path regex)...
    host_path_regex_rewrite_pattern: str | None = None
    #: ...and this substitution (`\1` for groups); an empty result sends the client's Host.
    host_path_regex_rewrite_substitution: str | None = None
    #: Headers set on the request to the upstream (replacing the client's). Values may use
    #: Pomerium's substitutions: `${pomerium.access_token}`, `${pomerium.id_token}`,
    #: `${pomerium.jwt}`, `${pomerium.client_cert_fingerprint}`,
    #: `${pomerium.client_cert_san_dns}`, `${pomerium.client_cert_san_email}`,
    #: `${pomerium.request.headers["Name"]}`; `$$` is a `$`; a value that renders empty
    #: is not sent.
    set_request_headers: HeaderMap = Field(default_factory=dict)
    #: Headers removed from the request to the upstream.
    remove_request_headers: StringList = Field(default_factory=list)
    #: Headers set on responses of this route (merged over the global ones; `""` removes one).
    set_response_headers: HeaderMap = Field(default_factory=dict)

    #: Rewrite upstream response headers: `{header, prefix, value}` entries, in order; a value
    #: starting with `prefix` gets it replaced by `value` (e.g. an internal `Location`).
    rewrite_response_headers: list[RewriteHeader] = Field(default_factory=list)

    #: Longest wait for the upstream's response head (504 after); unset = default_upstream_timeout,
    #: 0 = none.
    timeout: Duration | None = None
    #: Longest time without a byte either way on a streaming response or tunnel (0 = none).
    idle_timeout: Duration = 300.0
    #: Allow `Upgrade: websocket` requests; they become a byte tunnel after the upstream's 101.
    allow_websockets: bool = False
    #: Allow `Upgrade: SPDY/3.1` requests (kubectl exec and port-forward), tunnelled likewise.
    allow_spdy: bool = False
    #: Other `Upgrade` protocols tunnelled on this route, by name (e.g. `h2c`); a tunnel is
    #: authorized once, for the path of its first request. Other upgrades get 403, except
    #: `h2c`, which is served as a plain HTTP/1.1 request (as Envoy does).
    allow_upgrades: StringList = Field(default_factory=list)
    #: `same-origin` or `off`; unset = the global `websocket_origin_check`.
    websocket_origin_check: Literal["same-origin", "off"] | None = None
    #: Origins allowed to open upgrades besides the route's own; unset = the global list.
    websocket_allowed_origins: StringList | None = None

    #: Do not verify the upstream's TLS certificate (nor its name).
    tls_skip_verify: bool = False
    #: CA bundle that verifies the upstream's certificate, as a file path (instead of the
    #: system's and `certificate_authority`).
    tls_custom_ca_file: str | None = None
    #: The same as base64 of PEM (or a PEM).
    tls_custom_ca: str | None = None
    #: SNI and certificate name to expect from the upstream (default: the `to` host).
    tls_server_name: str | None = None
    #: Newer Pomerium name for `tls_server_name` (wins when both are set).
    tls_upstream_server_name: str | None = None
    #: Client certificate presented to the upstream (mutual TLS): base64 of PEM (or a PEM)...
    tls_client_cert: str | None = None
    #: ...and its key.
    tls_client_key: str | None = None
    #: The client certificate as a file path...
    tls_client_cert_file: str | None = None
    #: ...and its key.
    tls_client_key_file: str | None = None
    #: Client CA bundle for this route instead of `downstream_mtls.ca`: base64 of PEM
    #: (or a PEM).
    tls_downstream_client_ca: str | None = None
    #: The same as a file path.
    tls_downstream_client_ca_file: str | None = None

    # Identity and policy (used by the identity and authorize packages).
    #: Sign in to this route with another OAuth client of the same IdP (Pomerium's per-route
    #: client): a session made through one client is not accepted on a route of another
    #: (the user signs in again). Unset: the global `idp_client_id`.
    idp_client_id: str | None = None
    #: That client's secret; unset: the global `idp_client_secret`.
    idp_client_secret: str | None = None
    #: The global `bearer_token_format` for this route (unset: the global value).
    bearer_token_format: BearerTokenFormat | None = None
    #: The global `idp_access_token_allowed_audiences` for this route (unset: the global list).
    idp_access_token_allowed_audiences: StringList | None = None
    #: Up to 5 more hosts (`host[:port]`, or URLs: their host is used) the user is signed in
    #: to in the same sign-in: after this route's, the browser passes through each of them
    #: (each sign-in still bound to the browser) before returning.
    depends_on: StringList = Field(default_factory=list)
    #: Send the signed assertion (and claim headers) upstream; the global value applies when unset.
    pass_identity_headers: bool | None = None
    #: `hostOnly` (default) or `uri` for the assertion's `iss`.
    jwt_issuer_format: Annotated[Literal["hostOnly", "uri"], any_case("hostOnly", "uri")] | None = (
        None
    )
    #: PPL policy (one rule or a list), see docs/policy.md.
    policy: Any = None
    #: Legacy: users (email or id) allowed.
    allowed_users: StringList = Field(default_factory=list)
    #: Legacy: email domains allowed.
    allowed_domains: StringList = Field(default_factory=list)
    #: Legacy: `{claim: [values]}` allowed.
    allowed_idp_claims: dict[str, list[Any]] = Field(default_factory=dict)
    #: Legacy: more `allowed_users`/`allowed_domains`/`allowed_idp_claims` lists, merged
    #: into the same allow rule as the route's own (Pomerium's `ToPPL`); `rego` is refused.
    sub_policies: list[SubPolicy] = Field(default_factory=list)
    #: Legacy: everyone, signed in or not.
    allow_public_unauthenticated_access: bool = False
    #: Legacy: anyone signed in.
    allow_any_authenticated_user: bool = False
    #: Legacy: allow CORS preflight requests without a session.
    cors_allow_preflight: bool = False
    #: Show which rules failed on the 403 page.
    show_error_details: bool = False

    @field_validator("to", mode="before")
    @classmethod
    def _parse_to(cls, value: Any) -> Any:
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise ValueError("expected an upstream URL or a non-empty list of them")
        return [_parse_upstream(v) if isinstance(v, str) else v for v in items]

    @field_validator("from_")
    @classmethod
    def _check_from(cls, value: str) -> str:
        try:
            parts: SplitResult = _split_from(value)
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"invalid URL {value!r}: {exc}") from None
        if parts.scheme.startswith(("tcp+", "udp+")) or parts.scheme == "ssh":
            # Pomerium's TCP/UDP tunnels and SSH routes: named, so it is not read as a typo.
            raise ValueError(
                f"{parts.scheme}:// routes are not supported by gatehouse "
                "(it proxies HTTP only: no TCP, UDP or SSH routes)"
            )
        if parts.scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL with a host")
        host = parts.hostname or ""
        if not host:
            raise ValueError("has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be scheme and host only; match paths with prefix, path or regex")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials")
        _check_host(host, wildcard_ok=True)
        return value

    @field_validator("prefix", "path", "prefix_rewrite")
    @classmethod
    def _slash(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must start with /")
        return value

    @field_validator("prefix_rewrite", "regex_rewrite_substitution", "host_rewrite")
    @classmethod
    def _wire_safe(cls, value: str | None) -> str | None:
        # These go into the upstream request line or Host header (RFC 9112 §3, §5.5).
        if value is not None and _UNSAFE.search(value):
            raise ValueError("must not contain spaces or control characters")
        return value

    @field_validator("allow_upgrades")
    @classmethod
    def _protocols(cls, value: list[str]) -> list[str]:
        # RFC 9110 §7.8: protocol-name ["/" protocol-version], both tokens.
        for name in value:
            if not name or not all(part and _TOKEN.fullmatch(part) for part in name.split("/", 1)):
                raise ValueError(f"{name!r} is not an upgrade protocol name (RFC 9110 §7.8)")
        return [name.lower() for name in value]

    @field_validator("websocket_allowed_origins")
    @classmethod
    def _origins(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [normalize_origin_setting(v) for v in value]

    @field_validator("regex", "regex_rewrite_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @field_validator("host_path_regex_rewrite_pattern")
    @classmethod
    def _re2(cls, value: str | None) -> str | None:
        if value is not None:
            check_re2(value)
        return value

    @field_validator("depends_on")
    @classmethod
    def _depends_on(cls, value: list[str]) -> list[str]:
        # Pomerium's Policy.Validate: at most 5; a value with "/" must be a URL (its host).
        if len(value) > 5:
            raise ValueError(f"depends_on is limited to 5 additional hosts, got {len(value)}")
        hosts: list[str] = []
        for item in value:
            host = item.strip()
            if "/" in host:
                try:
                    parts = urlsplit(host)
                except ValueError:
                    parts = urlsplit("")
                if not parts.scheme or not parts.netloc:
                    raise ValueError(f"unsupported depends_on value {item!r}")
                host = parts.netloc
            if not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?", host):
                raise ValueError(f"depends_on value {item!r} is not a host")
            hosts.append(host.lower())
        return hosts

    @field_validator("host_rewrite_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        return None if value is None else check_header_name(value)

    @model_validator(mode="after")
    def _consistent(self) -> RouteOptions:
        actions = [k for k in ("to", "redirect", "response") if getattr(self, k) is not None]
        if len(actions) != 1:
            raise ValueError(
                "a route needs exactly one of to, redirect or response"
                + (f" (has {', '.join(actions)})" if actions else "")
            )
        matchers = [k for k in ("prefix", "path", "regex") if getattr(self, k) is not None]
        if len(matchers) > 1:
            raise ValueError(f"use only one of prefix, path or regex (has {', '.join(matchers)})")
        if (self.regex_rewrite_pattern is None) != (self.regex_rewrite_substitution is None):
            raise ValueError("regex_rewrite_pattern and regex_rewrite_substitution go together")
        for a, b in (
            ("tls_custom_ca", "tls_custom_ca_file"),
            ("tls_client_cert", "tls_client_cert_file"),
            ("tls_client_key", "tls_client_key_file"),
            ("tls_downstream_client_ca", "tls_downstream_client_ca_file"),
        ):
            if getattr(self, a) and getattr(self, b):
                raise ValueError(f"use either {a} or {b}, not both")
        if bool(self.tls_client_cert or self.tls_client_cert_file) != bool(
            self.tls_client_key or self.tls_client_key_file
        ):
            raise ValueError("tls_client_cert and tls_client_key go together")
        if self.preserve_host_header and self.host_rewrite:
            raise ValueError("use either preserve_host_header or host_rewrite, not both")
        pattern = self.host_path_regex_rewrite_pattern
        sub = self.host_path_regex_rewrite_substitution
        if (pattern is None) != (sub is None):
            raise ValueError(
                "host_path_regex_rewrite_pattern and host_path_regex_rewrite_substitution "
                "go together"
            )
        if pattern is not None and sub is not None:
            check_substitution(pattern, sub)
        hosts = [
            k
            for k in ("preserve_host_header", "host_rewrite", "host_rewrite_header")
            if getattr(self, k)
        ] + (["host_path_regex_rewrite_pattern"] if pattern else [])
        if len(hosts) > 1:
            raise ValueError(f"use only one way to set the upstream Host (has {', '.join(hosts)})")
        return self

    @property
    def from_scheme(self) -> str:
        return _split_from(self.from_).scheme

    @property
    def from_host(self) -> str:
        """The ``from`` host in lower case, without the port."""
        return (_split_from(self.from_).hostname or "").lower()

    @property
    def from_port(self) -> int | None:
        return _split_from(self.from_).port

    @property
    def display_name(self) -> str:
        return self.name or self.id or self.from_ + (self.prefix or self.path or self.regex or "")
