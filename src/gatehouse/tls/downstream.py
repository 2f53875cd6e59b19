"""Downstream mTLS compiled from the options: which trust judges which route, and what the
listener's handshake asks (Pomerium's ``downstream_mtls`` and route
``tls_downstream_client_ca``).

- A route's client CA is its own ``tls_downstream_client_ca`` when set, else the global
  ``downstream_mtls.ca``; the CRL, ``max_verify_depth`` and SAN matchers are global.
- A route with neither has no client CA: every request counts as having a valid
  certificate (Pomerium's ``isValidClientCertificate`` with an empty CA).
- The listener asks for a certificate when any CA is configured; with
  ``reject_connection`` it requires one valid for the bundle of every CA (Envoy's
  listener ``trusted_ca``), otherwise it takes any and the request path judges it.
- Unless ``enforcement: policy``, a request on a route with a client CA and without a
  valid certificate for it is denied with 495 before the policy runs (Pomerium adds an
  ``invalid_client_certificate`` deny rule to every policy and answers it first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config.mtls import DownstreamMTLS
from ..config.options import Options
from ..timeslice import Steps, drive
from .certificates import pem_source
from .client_auth import ClientCertMode
from .client_trust import ClientTrust, compile_san_rules, load_ca_bundle, load_crls


@dataclass(frozen=True, slots=True)
class DownstreamTrust:
    """The compiled downstream mTLS settings of one config."""

    mode: ClientCertMode = ClientCertMode.NONE
    #: Deny (495) requests without a valid certificate before the policy.
    default_deny: bool = False
    #: The global CA's trust, or ``None``.
    default: ClientTrust | None = None
    #: Route index -> the trust of its own ``tls_downstream_client_ca``.
    routes: dict[int, ClientTrust] = field(default_factory=dict)
    #: Every CA (global and routes'), for the handshake.
    bundle_pem: bytes = b""
    handshake: ClientTrust | None = None

    def for_route(self, index: int) -> ClientTrust | None:
        return self.routes.get(index, self.default)


#: Routes looked at between two points where a sliced reload may pause (reading a route's
#: two CA keys costs ~0.5 us: 10,000 routes took ~5 ms in one stretch).
ROUTES_PER_STEP = 512


def compile_downstream(options: Options) -> DownstreamTrust:
    """Read every client CA and CRL of ``options``.

    Raises:
        ConfigError: a CA or CRL that cannot be read or parsed.
    """
    return drive(downstream_steps(options))


def downstream_steps(options: Options) -> Steps[DownstreamTrust]:
    """:func:`compile_downstream` as a generator pausing every :data:`ROUTES_PER_STEP`
    routes (a reload sliced on the event loop, :mod:`gatehouse.timeslice`)."""
    settings = options.downstream_mtls or DownstreamMTLS()
    crl_text = settings.crl or settings.crl_file
    crls = (
        load_crls(pem_source(crl_text, "downstream_mtls.crl"), "downstream_mtls.crl")
        if crl_text
        else []
    )
    sans = compile_san_rules(settings)

    def trust(pem: bytes, source: str) -> ClientTrust:
        return ClientTrust(
            load_ca_bundle(pem, source),
            crls,
            max_depth=settings.depth,
            san_rules=sans,
            source=source,
        )

    bundle: list[bytes] = []
    default = None
    ca_text = settings.ca or settings.ca_file
    if ca_text:
        pem = pem_source(ca_text, "downstream_mtls.ca")
        default = trust(pem, "downstream_mtls.ca")
        bundle.append(pem)
    routes: dict[int, ClientTrust] = {}
    for i, route in enumerate(options.all_routes):
        if i % ROUTES_PER_STEP == ROUTES_PER_STEP - 1:
            yield
        text = route.tls_downstream_client_ca or route.tls_downstream_client_ca_file
        if text:
            where = f"routes[{i}].tls_downstream_client_ca"
            pem = pem_source(text, where)
            routes[i] = trust(pem, where)
            bundle.append(pem)
    if not bundle:
        return DownstreamTrust()
    bundle_pem = b"\n".join(p.strip() for p in bundle) + b"\n"
    reject = settings.mode == "reject_connection"
    return DownstreamTrust(
        mode=ClientCertMode.REQUIRE if reject else ClientCertMode.REQUEST,
        default_deny=settings.mode != "policy",
        default=default,
        routes=routes,
        bundle_pem=bundle_pem,
        handshake=trust(bundle_pem, "downstream_mtls (listener)") if reject else None,
    )
