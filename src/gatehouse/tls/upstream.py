"""TLS to upstreams: one client context per distinct route setting, built at config load.

Pomerium's meanings (``config/envoyconfig/clusters.go``):

- trust: the route's ``tls_custom_ca``/``tls_custom_ca_file`` *instead of* the system's
  roots; otherwise the system's roots plus the global ``certificate_authority``
  (``_file``);
- ``tls_skip_verify``: neither the chain nor the name is checked;
- the name checked, and sent as SNI, is ``tls_upstream_server_name``, else
  ``tls_server_name``, else the ``to`` host (the balancer passes it per connection);
- ``tls_client_cert``/``tls_client_key`` (``_file``): the certificate presented to an
  upstream that asks for one (mutual TLS).

Each setting gets two contexts that differ only in ALPN: ``http/1.1`` for proxied
HTTP/1.1 requests and ``h2`` for gRPC calls to the same upstream (``proxy/forward_h2``),
so both protocols trust, verify and present certificates identically.

Contexts are cached by what they are made of, so thousands of routes with the same
settings share one (loading the system's roots costs milliseconds and memory).
"""

from __future__ import annotations

import functools
import os
import ssl
import tempfile

from ..config.options import Options
from ..config.routes import RouteOptions
from ..errors import ConfigError
from .certificates import pem_source


def _read_file(path: str, what: str) -> bytes:
    try:
        with open(os.path.expanduser(path), "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError([f"{what}: cannot read {path}: {exc.strerror}"]) from None


def _value(inline: str | None, path: str | None, what: str) -> bytes:
    if path:
        return _read_file(path, f"{what}_file")
    if inline:
        return pem_source(inline, what)
    return b""


def upstream_context(
    options: Options, route: RouteOptions, where: str = "route", alpn: str = "http/1.1"
) -> ssl.SSLContext:
    """The client context for ``route``'s https upstreams, offering ``alpn`` only.

    Raises:
        ConfigError: a CA, certificate or key that cannot be read or loaded.
    """
    custom_ca = _value(route.tls_custom_ca, route.tls_custom_ca_file, f"{where}.tls_custom_ca")
    global_ca = b""
    if not custom_ca:
        global_ca = _value(
            options.certificate_authority,
            options.certificate_authority_file,
            "certificate_authority",
        )
    cert = _value(route.tls_client_cert, route.tls_client_cert_file, f"{where}.tls_client_cert")
    key = _value(route.tls_client_key, route.tls_client_key_file, f"{where}.tls_client_key")
    try:
        return _build(custom_ca, global_ca, cert, key, route.tls_skip_verify, alpn)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError([f"{where}: upstream TLS settings do not load: {exc}"]) from None


@functools.lru_cache(maxsize=256)
def _build(
    custom_ca: bytes, global_ca: bytes, cert: bytes, key: bytes, skip_verify: bool, alpn: str
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if custom_ca:
        ctx.load_verify_locations(cadata=custom_ca.decode("ascii", "replace"))
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if global_ca:
            ctx.load_verify_locations(cadata=global_ca.decode("ascii", "replace"))
    if skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        _load_client_pair(ctx, cert, key)
    ctx.set_alpn_protocols([alpn])
    return ctx


def _load_client_pair(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl loads chains only from files: private temporary files, removed at once.
    with tempfile.TemporaryDirectory() as tmp:
        cert_path = os.path.join(tmp, "client.pem")
        key_path = os.path.join(tmp, "client.key")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        with open(cert_path, "wb") as f:
            f.write(cert)
        ctx.load_cert_chain(cert_path, key_path)


def has_https_upstream(route: RouteOptions) -> bool:
    return any(url.scheme == "https" for url in route.to or ())
