"""The client certificate as the policy sees it: :class:`ClientCertificate`.

Built from the leaf the client sent in the TLS handshake (DER), whether or not it is
valid; validity against the route's CA is a separate fact
(``PolicyInput.client_certificate_valid``). Holds what Pomerium's ``client_certificate``
criterion compares: the SHA-256 fingerprint of the DER (lower-case hex), the base64
SHA-256 of the SubjectPublicKeyInfo (``spki_hash``), and the SANs.
"""

from __future__ import annotations

import base64
import functools
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization


class ClientCertificate:
    """One presented leaf certificate (read-only by convention)."""

    __slots__ = ("der", "dns_names", "emails", "fingerprint", "spki_hash", "uris")

    def __init__(self, der: bytes) -> None:
        #: The certificate, DER.
        self.der = der
        #: SHA-256 of the DER, 64 lower-case hex digits.
        self.fingerprint = hashlib.sha256(der).hexdigest()
        cert = x509.load_der_x509_certificate(der)
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        #: base64 (standard, padded) of the SHA-256 of the SubjectPublicKeyInfo.
        self.spki_hash = base64.b64encode(hashlib.sha256(spki).digest()).decode()
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = x509.SubjectAlternativeName([])
        self.dns_names: tuple[str, ...] = tuple(san.get_values_for_type(x509.DNSName))
        self.emails: tuple[str, ...] = tuple(san.get_values_for_type(x509.RFC822Name))
        self.uris: tuple[str, ...] = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))


@functools.lru_cache(maxsize=1024)
def client_certificate(der: bytes) -> ClientCertificate | None:
    """The parsed leaf, cached (a client sends the same one on every request); ``None``
    when it does not parse (it then matches nothing)."""
    try:
        return ClientCertificate(der)
    except ValueError:
        return None
