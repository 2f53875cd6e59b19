"""TLS termination: one server context, certificates chosen by SNI.

Each certificate's DNS names (subject alternative names, ``*.`` wildcards included) map to
a context holding that certificate; an unknown or absent server name gets the first one.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class CertificatePem:
    """A certificate chain and its key, PEM-encoded."""

    cert: bytes
    key: bytes
    source: str


def _names(cert_pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names.extend(n.lower() for n in san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    if not names:
        names.extend(
            str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        )
    return names


def _context(pair: CertificatePem) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    # ssl only loads chains from files: write them to private temporary files.
    with tempfile.TemporaryDirectory() as tmp:
        cert_path = os.path.join(tmp, "cert.pem")
        key_path = os.path.join(tmp, "key.pem")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pair.key)
        with open(cert_path, "wb") as f:
            f.write(pair.cert)
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError([f"{pair.source}: certificate and key do not load: {exc}"]) from None
    return ctx


def server_context(pairs: list[CertificatePem]) -> ssl.SSLContext:
    """A server SSLContext serving ``pairs``, chosen by SNI.

    Raises:
        ConfigError: no certificate, or one that does not load.
    """
    if not pairs:
        raise ConfigError(["TLS is enabled but no certificate is configured"])
    contexts = [_context(p) for p in pairs]
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}
    for pair, ctx in zip(pairs, contexts, strict=True):
        try:
            names = _names(pair.cert)
        except ValueError as exc:
            raise ConfigError([f"{pair.source}: not a PEM certificate: {exc}"]) from None
        for name in names:
            if name.startswith("*."):
                wildcard.setdefault(name[1:], ctx)
            else:
                exact.setdefault(name, ctx)
    default = contexts[0]

    def choose(
        sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        if not server_name:
            return
        name = server_name.lower()
        ctx = exact.get(name)
        if ctx is None:
            dot = name.find(".")
            ctx = wildcard.get(name[dot:]) if dot > 0 else None
        if ctx is not None and ctx is not default:
            sock.context = ctx

    default.sni_callback = choose
    return default
