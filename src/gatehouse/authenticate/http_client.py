"""The HTTP client for gatehouse's calls to the identity provider.

An ``httpx.AsyncClient`` (callers and tests keep httpx's API and ``MockTransport``) over
:class:`~gatehouse.http.httpx_transport.PooledTransport`, gatehouse's own keep-alive pool:
about a fifth of the CPU of httpx's default transport per call. Settings that hold for
every IdP call:

- TLS peers verified against the system's roots plus ``certificate_authority`` (as
  Pomerium uses it for every outbound TLS connection); certifi's bundle only when the
  system has no roots at all (a bare container);
- timeouts on connect and on the whole response (:data:`DEFAULT_TIMEOUT`);
- responses larger than :data:`MAX_RESPONSE_BYTES` refused while they arrive;
- no redirects followed, no proxies or environment settings, no cookies kept (an IdP's
  cookie must not ride along on a later call made for another user);
- ``Accept-Encoding: identity``: size limits hold for the bytes we keep.
"""

from __future__ import annotations

import ssl
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from ..config.options import Options
from ..errors import ConfigError
from ..http.httpx_transport import PooledTransport
from ..observability.dependencies import Observer, TimedTransport

#: Timeouts for every IdP call (seconds): a stuck IdP must not hold a worker.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: Largest IdP response accepted (bytes): above every document limit the callers check
#: (discovery and JWKS 512 KiB, userinfo 256 KiB), so theirs give the precise message.
MAX_RESPONSE_BYTES = 1024 * 1024


def trusted_ca_pem(options: Options) -> bytes:
    """The global ``certificate_authority_file`` or ``certificate_authority`` (a path, PEM
    or base64 of PEM), or nothing.

    Raises:
        ConfigError: the file cannot be read, or the value is none of the three forms.
    """
    from ..tls.certificates import pem_source

    if options.certificate_authority_file:
        return pem_source(options.certificate_authority_file, "certificate_authority_file")
    if options.certificate_authority:
        return pem_source(options.certificate_authority, "certificate_authority")
    return b""


def idp_tls_context(trusted_ca_pem: bytes = b"") -> ssl.SSLContext:
    """The client context for https IdPs: system roots plus ``trusted_ca_pem``.

    Raises:
        ConfigError: ``trusted_ca_pem`` holds no loadable certificate.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not ctx.cert_store_stats().get("x509_ca"):
        import certifi  # httpx's dependency: the bundle httpx itself would have used

        ctx.load_verify_locations(cafile=certifi.where())
    if trusted_ca_pem.strip():
        try:
            ctx.load_verify_locations(cadata=trusted_ca_pem.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError([f"certificate_authority: not a PEM certificate ({exc})"]) from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def new_http_client(
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    observe: Observer | None = None,
    *,
    trusted_ca_pem: bytes = b"",
) -> httpx.AsyncClient:
    """The client for IdP calls (see the module docstring); with ``observe``, every
    call's duration and outcome is reported (metrics)."""
    transport: httpx.AsyncBaseTransport = PooledTransport(
        idp_tls_context(trusted_ca_pem), max_response_bytes=MAX_RESPONSE_BYTES
    )
    if observe is not None:
        transport = TimedTransport(transport, observe)
    return httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        transport=transport,
        headers={"Accept-Encoding": "identity"},
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )
