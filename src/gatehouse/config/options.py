"""The complete options model: every package's options composed, plus cross-field rules.

Keys and meanings follow Pomerium's configuration reference; gatehouse's own additions
are marked so in their comments. Pomerium keys that gatehouse deliberately ignores are
listed in :data:`IGNORED_POMERIUM_KEYS` and produce a warning instead of an error.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from .auth import AuthOptions
from .identity import IdentityOptions
from .routes import RouteOptions
from .server import ServerOptions

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
    "http_redirect_addr": "run a route with a redirect action instead",
    "autocert": "automatic certificates are not supported; use certificates",
    "use_proxy_protocol": "the PROXY protocol is not supported",
}


class Options(ServerOptions, AuthOptions, IdentityOptions):
    """Everything gatehouse can be told, validated and immutable."""

    #: The routes, matched in this order (see below).
    routes: list[RouteOptions] = Field(default_factory=list)
    #: Pomerium's legacy name for ``routes``; appended after them.
    policy: list[RouteOptions] = Field(default_factory=list)
    #: `host:port` for Prometheus metrics at `/metrics` (port 0 picks a free one, logged).
    metrics_address: str | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> Options:
        problems: list[str] = []
        if not self.insecure_server:
            has_cert = bool(
                self.certificates
                or (self.certificate_file and self.certificate_key_file)
                or (self.certificate and self.certificate_key)
            )
            if not has_cert:
                problems.append(
                    "TLS needs certificate_file and certificate_key_file (or certificates); "
                    "set insecure_server: true to serve plain HTTP behind another TLS terminator"
                )
            for i, route in enumerate(self.all_routes):
                if route.from_scheme == "http":
                    problems.append(
                        f"routes[{i}].from: http:// is only allowed with insecure_server: true"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def all_routes(self) -> list[RouteOptions]:
        return [*self.routes, *self.policy]

    def route_pass_identity_headers(self, route: RouteOptions) -> bool:
        """The route's ``pass_identity_headers``, falling back to the global value."""
        if route.pass_identity_headers is not None:
            return route.pass_identity_headers
        return self.pass_identity_headers
