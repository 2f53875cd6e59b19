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

:meth:`IdpClient.post_form` (the token and revocation calls) hands its request straight to
the transport chain (metrics wrapper, pool): none of the client's per-call machinery
(URL merging and parsing, cookie jar, redirect and auth loops) does anything for those
calls, and it cost more CPU than the call itself. The settings above hold all the same:
the same transport, timeouts and default headers, and no cookies or redirects.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import urlencode

import httpx

from ..config.options import Options
from ..errors import ConfigError
from ..http.httpx_transport import PooledTransport
from ..observability.dependencies import OPERATION, Observer

#: Timeouts for every IdP call (seconds): a stuck IdP must not hold a worker.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: Largest IdP response accepted (bytes): above every document limit the callers check
#: (discovery and JWKS 512 KiB, userinfo 256 KiB), so theirs give the precise message.
MAX_RESPONSE_BYTES = 1024 * 1024
#: Parsed endpoint URLs kept by :meth:`IdpClient.post_form` (a handful per IdP), and as
#: many merged header sets.
MAX_PARSED_URLS = 32
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


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


class IdpClient(httpx.AsyncClient):
    """The IdP client: an ``httpx.AsyncClient`` with a direct path for form posts."""

    def __init__(self, transport: httpx.AsyncBaseTransport, timeout: httpx.Timeout) -> None:
        super().__init__(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            transport=transport,
            headers={"Accept-Encoding": "identity"},
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )
        self._direct = transport
        self._timeouts = timeout.as_dict()
        self._urls: dict[str, httpx.URL] = {}
        self._merged: dict[tuple[tuple[str, str], ...], httpx.Headers] = {}

    async def post_form(
        self,
        url: str,
        form: Iterable[tuple[str, str]],
        headers: Iterable[tuple[str, str]],
        operation: str,
    ) -> httpx.Response:
        """POST ``form`` (``application/x-www-form-urlencoded``) to ``url`` and read the
        whole answer; what ``post(url, data=..., headers=...)`` sends, for less CPU.

        Raises:
            httpx.HTTPError: as ``post`` would (transport failure, timeout, size limit).
        """
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = httpx.URL(url)
            if len(self._urls) < MAX_PARSED_URLS:
                self._urls[url] = parsed
        fixed = tuple(headers)
        merged = self._merged.get(fixed)
        if merged is None:
            # The client's defaults under the call's own (the same few per IdP client;
            # httpx.Request copies them, so one Headers object serves every call).
            merged = self.headers.copy()
            merged.update(list(fixed))
            merged.setdefault("Content-Type", FORM_CONTENT_TYPE)
            if len(self._merged) < MAX_PARSED_URLS:
                self._merged[fixed] = merged
        request = httpx.Request(
            "POST",
            parsed,
            content=urlencode(dict(form)).encode("utf-8"),  # as httpx encodes ``data``
            headers=merged,
            extensions={"timeout": self._timeouts, OPERATION: operation},
        )
        response = await self._direct.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response


class TimedTransport(httpx.AsyncBaseTransport):
    """Times every request of the IdP client; a transport error or a 5xx counts as failed."""

    def __init__(self, inner: httpx.AsyncBaseTransport, observe: Observer) -> None:
        self._inner = inner
        self._observe = observe

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        operation = str(request.extensions.get(OPERATION, "other"))
        started = time.monotonic()
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            self._observe("idp", operation, time.monotonic() - started, False)
            raise
        self._observe("idp", operation, time.monotonic() - started, response.status_code < 500)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def new_http_client(
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    observe: Observer | None = None,
    *,
    trusted_ca_pem: bytes = b"",
) -> IdpClient:
    """The client for IdP calls (see the module docstring); with ``observe``, every
    call's duration and outcome is reported (metrics)."""
    transport: httpx.AsyncBaseTransport = PooledTransport(
        idp_tls_context(trusted_ca_pem), max_response_bytes=MAX_RESPONSE_BYTES
    )
    if observe is not None:
        transport = TimedTransport(transport, observe)
    return IdpClient(transport, timeout)
