"""The certificate served when none is configured: self-signed, generated at start-up.

Pomerium does the same, so a config without certificates starts. Clients see an untrusted
certificate; ``run`` logs a warning once saying so.
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .certificates import CertificatePem

#: How long a generated certificate is valid; one is generated per start, days.
SELF_SIGNED_VALIDITY_DAYS = 365
#: Back-dating of notBefore, against clients whose clock is a little behind.
_CLOCK_SKEW = datetime.timedelta(hours=1)

_cache: dict[tuple[str, ...], CertificatePem] = {}


def generate(names: list[str]) -> CertificatePem:
    """A new self-signed P-256 certificate for ``names`` (DNS names or IP addresses)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatehouse self-signed")])
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificatePem(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "generated self-signed certificate",
    )


def fallback(names: list[str]) -> CertificatePem:
    """The process's generated certificate for ``names``, made on first use.

    ``run`` asks before forking, so every worker of one machine serves the same one.
    """
    key = tuple(sorted(set(names)))
    pem = _cache.get(key)
    if pem is None:
        pem = _cache[key] = generate(list(key))
    return pem
