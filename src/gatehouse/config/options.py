"""The complete options model: every package's options composed, plus cross-field rules.

Keys and meanings follow Pomerium's configuration reference; gatehouse's own additions
are marked so in their comments. Pomerium keys that gatehouse deliberately ignores are
listed in :data:`IGNORED_POMERIUM_KEYS` and produce a warning instead of an error.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field

from .auth import AuthOptions
from .console import ConsoleOptions
from .identity import IdentityOptions
from .log_fields import LogFieldOptions
from .metrics import ListenerOptions
from .routes import RouteOptions
from .server import ServerOptions
from .tls import TLSOptions
from .upstream_health import UpstreamLimitOptions

#: Pomerium keys with no meaning in a single-binary proxy; accepted with a warning.
IGNORED_POMERIUM_KEYS: dict[str, str] = {
    "services": "gatehouse always runs every service in one process",
    "grpc_address": "gatehouse has no gRPC listener",
    "grpc_insecure": "gatehouse has no gRPC listener",
    "grpc_client_timeout": "gatehouse has no gRPC listener",
    "authorize_service_url": "authorize runs in process",
    "databroker_service_url": "the session store is reached directly",
    "dns_lookup_family": "the system resolver is used",
    "tracing_provider": "tracing is not supported yet",
    "tracing_sample_rate": "tracing is not supported yet",
    "skip_xff_append": "X-Forwarded-For is always appended",
    "xff_num_trusted_hops": "X-Forwarded-For is always appended",
    "use_proxy_protocol": "the PROXY protocol is not supported",
}


class Options(
    ServerOptions,
    AuthOptions,
    IdentityOptions,
    TLSOptions,
    ConsoleOptions,
    LogFieldOptions,
    ListenerOptions,
    UpstreamLimitOptions,
):
    """Everything gatehouse can be told, validated and immutable."""

    #: The routes, matched in this order (see below).
    routes: list[RouteOptions] = Field(default_factory=list)
    #: Pomerium's legacy name for `routes`; appended after them.
    policy: list[RouteOptions] = Field(default_factory=list)
    #: `host:port` for Prometheus metrics at `/metrics` (port 0 picks a free one, logged).
    metrics_address: str | None = None

    @property
    def all_routes(self) -> list[RouteOptions]:
        return [*self.routes, *self.policy]

    def route_pass_identity_headers(self, route: RouteOptions) -> bool:
        """The route's ``pass_identity_headers``, falling back to the global value."""
        if route.pass_identity_headers is not None:
            return route.pass_identity_headers
        return self.pass_identity_headers

    def route_bearer_token_format(self, route: RouteOptions) -> str:
        """The route's ``bearer_token_format``, else the global one (Pomerium's
        ``GetBearerTokenFormatForPolicy``)."""
        return route.bearer_token_format or self.bearer_token_format

    def route_access_token_audiences(self, route: RouteOptions) -> tuple[str, ...] | None:
        """The route's ``idp_access_token_allowed_audiences``, else the global list
        (``None``: neither is set)."""
        audiences = route.idp_access_token_allowed_audiences
        if audiences is None:
            audiences = self.idp_access_token_allowed_audiences
        return None if audiences is None else tuple(audiences)


Location = tuple[str | int, ...]

#: Keys whose value must be an absolute http(s) URL with a host.
_URL_KEYS = ("authenticate_service_url", "idp_provider_url", "signout_redirect_url")


def cross_checks(options: Options) -> list[tuple[Location, str]]:
    """Rules across keys, each as ``(location of the key to blame, message)``.

    Run by the loader after the model has validated each value, so every problem gets the
    line of the key it is about (a pydantic model validator could only blame the top level).
    """
    problems: list[tuple[Location, str]] = []
    for key in _URL_KEYS:
        value = getattr(options, key)
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                problems.append(
                    ((key,), f"must be an absolute http:// or https:// URL, got {value!r}")
                )
    # Without a certificate, TLS serves one generated at start-up (or obtained by autocert),
    # as Pomerium does: no certificate is not a problem.
    if not options.insecure_server:
        for key in ("routes", "policy"):
            for i, route in enumerate(getattr(options, key)):
                if route.from_scheme == "http":
                    problems.append(
                        ((key, i, "from"), "http:// is only allowed with insecure_server: true")
                    )
    return problems


#: Providers whose issuer URL has no default (see `authenticate/providers.py`).
_NEEDS_PROVIDER_URL = frozenset({"oidc", "okta", "auth0", "keycloak", "azure"})


def sign_in_checks(options: Options) -> list[tuple[Location, str]]:
    """What signing in needs besides ``idp_provider`` (checked by ``check`` and ``run``; unit
    tests load partial configs without them)."""
    problems: list[tuple[Location, str]] = []
    provider = options.idp_provider
    if provider is not None:
        if not options.authenticate_service_url:
            problems.append(
                (("idp_provider",), "authenticate_service_url is required with idp_provider")
            )
        if provider != "builtin" and not options.idp_client_id:
            problems.append(
                (("idp_provider",), f"idp_client_id is required with idp_provider: {provider}")
            )
        if provider in _NEEDS_PROVIDER_URL and not options.idp_provider_url:
            problems.append(
                (("idp_provider",), f"idp_provider_url is required with idp_provider: {provider}")
            )
        if provider == "builtin" and not options.idp_users:
            problems.append((("idp_provider",), "builtin needs at least one entry in idp_users"))
    else:
        # A bearer token can only be verified against an IdP: without one, refuse the
        # config rather than let every token be refused at run time.
        if options.bearer_token_format != "default":  # noqa: S105 - a format name
            problems.append(
                (("bearer_token_format",), "idp_provider is required to verify IdP tokens")
            )
        for key in ("routes", "policy"):
            for i, route in enumerate(getattr(options, key)):
                if route.bearer_token_format not in (None, "default"):
                    problems.append(
                        (
                            (key, i, "bearer_token_format"),
                            "idp_provider is required to verify IdP tokens",
                        )
                    )
    return problems
