"""The metrics listener's TLS context from Pomerium's ``metrics_certificate*`` and
``metrics_client_ca*`` keys: a hardened server context (``tls/``), requiring a client
certificate signed by the client CA when one is set (as Pomerium's Envoy listener does)."""

from __future__ import annotations

import ssl

from ..config.options import Options
from ..errors import ConfigError
from ..tls.certificates import CertificatePem, load_certificate, pem_source


def metrics_tls_context(options: Options) -> ssl.SSLContext | None:
    """The context, or ``None`` without a metrics certificate.

    Raises:
        ConfigError: a value that is not a certificate, key or CA bundle, or does not load.
    """
    cert = options.metrics_certificate or options.metrics_certificate_file
    key = options.metrics_certificate_key or options.metrics_certificate_key_file
    if not cert or not key:
        return None
    pem = CertificatePem(
        cert=pem_source(cert, "metrics_certificate"),
        key=pem_source(key, "metrics_certificate_key"),
        source="metrics_certificate",
    )
    ctx = load_certificate(pem).context
    ca = options.metrics_client_ca or options.metrics_client_ca_file
    if ca:
        try:
            ctx.load_verify_locations(cadata=pem_source(ca, "metrics_client_ca").decode())
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError([f"metrics_client_ca: not a CA bundle ({exc})"]) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
