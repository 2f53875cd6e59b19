"""TLS-ALPN-01 (RFC 8737) for autocert: the challenge type, its certificate, and the
validation handshakes every worker answers.

The ``acme`` library dropped its TLS-ALPN-01 classes (5.x has HTTP-01 and DNS-01 only);
:class:`TLSALPN01` is registered through the library's own extension point, so an order's
``tls-alpn-01`` challenge parses into it and is answered with ``answer_challenge``.

Theory of operation. The worker placing an order writes the challenge certificate (key
first, then the self-signed certificate) to ``<ca dir>/tls-alpn/<host>.pem`` before it
asks the CA to validate, and removes it when the order ends. The CA connects to the TLS
listener with SNI ``host`` and ALPN exactly ``acme-tls/1``; whichever worker accepts the
connection finds that hello marked (:mod:`gatehouse.tls.client_hello`), reads the file
(loaded once per change, then cached) and switches the handshake to it: the certificate
is served and ``acme-tls/1`` negotiated; the HTTP server closes such a connection as soon
as the handshake is done. Any other hello - no ALPN, more protocols, another name, no
pending challenge - takes the ordinary path and never sees the challenge certificate.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import re
import ssl
from pathlib import Path
from typing import Any

from acme import challenges
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from josepy.jwk import JWK

from ..constants import ACME_TLS_ALPN
from ..errors import ConfigError
from . import client_hello
from .certificates import CertificatePem, load_certificate

log = logging.getLogger("gatehouse.autocert")

#: The challenge type's name (RFC 8737 §3).
TLS_ALPN_01 = "tls-alpn-01"
#: id-pe-acmeIdentifier (RFC 8737 §6.1).
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: Lifetime of a challenge certificate (it lives as long as one order), days.
CHALLENGE_CERT_DAYS = 7
#: Challenge certificates kept loaded per worker (one per host being ordered).
_CACHE_MAX = 64
#: A host name that may name a file: lower-case DNS labels only (SNI is checked against
#: the autocert hosts first; this is the second fence).
_HOST = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")


class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The answer to a TLS-ALPN-01 challenge: an empty object posted to its URL."""

    typ = TLS_ALPN_01


class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737's challenge: a certificate for the name, carrying the key authorization."""

    response_cls = TLSALPN01Response
    typ = TLS_ALPN_01

    def validation(self, account_key: JWK, **kwargs: Any) -> str:
        """The key authorization the challenge certificate digests."""
        return self.key_authorization(account_key)


# The library's own registry (how its HTTP-01 and DNS-01 are registered); a future
# version that brings TLS-ALPN-01 back keeps its own.
if TLS_ALPN_01 not in challenges.Challenge.TYPES:
    challenges.Challenge.register(TLSALPN01)
    challenges.ChallengeResponse.register(TLSALPN01Response)


def challenge_certificate(host: str, key_authorization: str) -> bytes:
    """Key and self-signed certificate (PEM) answering a TLS-ALPN-01 challenge for ``host``.

    RFC 8737 §3: the only subjectAltName is the dNSName being validated, and a critical
    acmeIdentifier extension holds the DER OCTET STRING of SHA-256(key authorization).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    octet_string = bytes((0x04, len(digest))) + digest  # DER: tag 4, short length
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=CHALLENGE_CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, octet_string), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def challenge_path(ca_dir: Path, host: str) -> Path:
    """Where the challenge certificate of ``host`` is kept while its order is pending."""
    return ca_dir / "tls-alpn" / f"{host}.pem"


class AlpnResponder:
    """Answers TLS-ALPN-01 validation handshakes from the challenge files of one CA
    directory (see the module docstring); called from the listener's server-name callback.
    """

    def __init__(self, ca_dir: Path, hosts: list[str]) -> None:
        self.ca_dir = ca_dir
        (ca_dir / "tls-alpn").mkdir(parents=True, exist_ok=True, mode=0o700)
        self.hosts = frozenset(hosts)
        self._cache: dict[str, tuple[tuple[int, int], ssl.SSLContext]] = {}

    def validation_context(
        self, sock: ssl.SSLObject | ssl.SSLSocket, server_name: str
    ) -> ssl.SSLContext | None:
        """The challenge certificate's context for this handshake, or ``None`` (the
        ordinary path) unless the hello offered exactly ``acme-tls/1`` for a name with a
        pending challenge."""
        if not client_hello.offered_only_acme(sock):
            return None
        host = server_name.lower().rstrip(".")
        ctx = self._context(host) if host in self.hosts and _HOST.match(host) else None
        if ctx is None:
            log.info(
                "autocert: acme-tls/1 handshake without a pending challenge; "
                "ordinary certificate served",
                extra={"host": host[:253]},
            )
            return None
        client_hello.ask_no_client_certificate(sock)
        log.info("autocert: TLS-ALPN-01 validation handshake", extra={"host": host})
        return ctx

    def _context(self, host: str) -> ssl.SSLContext | None:
        path = challenge_path(self.ca_dir, host)
        try:
            st = path.stat()
        except OSError:
            self._cache.pop(host, None)
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(host)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            data = path.read_bytes()
            at = data.find(b"-----BEGIN CERTIFICATE-----")
            if at <= 0:
                raise ValueError("not a key followed by a certificate")
            loaded = load_certificate(
                CertificatePem(cert=data[at:], key=data[:at], source=f"tls-alpn-01 {host}")
            )
        except (OSError, ValueError, ConfigError) as exc:
            log.error(
                "autocert: TLS-ALPN-01 challenge certificate does not load",
                extra={"host": host, "error": str(exc)[:300]},
            )
            return None
        ctx = loaded.context
        # Offer only acme-tls/1: the validation connection then negotiates it (RFC 8737
        # §3), and no HTTP protocol can be negotiated with the challenge certificate.
        ctx.set_alpn_protocols([ACME_TLS_ALPN])
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[host] = (stamp, ctx)
        return ctx
