"""Certificates for the TLS tests, made with ``cryptography``: a CA, leaves, client certs.

:class:`Authority` signs leaves; :meth:`Authority.issue` returns an :class:`Issued` whose
PEMs can be written into the test's directory (:meth:`Issued.write`) or inlined.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class Issued:
    """A certificate and its key, PEM-encoded."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def b64(self) -> tuple[str, str]:
        """Base64 of the certificate and key PEMs (Pomerium's inline form)."""
        return base64.b64encode(self.cert_pem).decode(), base64.b64encode(self.key_pem).decode()

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert = directory / f"{name}.crt"
        key = directory / f"{name}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key

    @property
    def serial(self) -> int:
        return self.cert.serial_number


class Authority:
    """A private CA for one test."""

    def __init__(self, name: str = "gatehouse test CA", parent: Authority | None = None) -> None:
        """A root CA, or with ``parent`` an intermediate CA it signs."""
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.parent = parent
        self.cert: x509.Certificate
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(parent.cert.subject if parent else subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
        )
        if parent is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
                critical=False,
            )
        self.cert = builder.sign(parent.key if parent else self.key, hashes.SHA256())

    def crl(self, *revoked: int, signer: Authority | None = None) -> bytes:
        """A PEM CRL of this CA listing ``revoked`` serials (signed by ``signer``'s key to
        forge one)."""
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - datetime.timedelta(minutes=5))
            .next_update(now + datetime.timedelta(days=1))
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - datetime.timedelta(minutes=1))
                .build()
            )
        key = (signer or self).key
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, name: str = "ca") -> Path:
        path = directory / f"{name}.crt"
        path.write_bytes(self.cert_pem)
        return path

    def issue(
        self,
        *names: str,
        client: bool = False,
        valid_for: datetime.timedelta = datetime.timedelta(days=7),
        common_name: str | None = None,
        emails: tuple[str, ...] = (),
        uris: tuple[str, ...] = (),
        expired: bool = False,
    ) -> Issued:
        """A leaf for ``names`` (DNS names or IP addresses), a client one with ``client``;
        ``expired``: valid until an hour ago."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        if expired:
            now -= valid_for + datetime.timedelta(hours=1)
        alt: list[x509.GeneralName] = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        alt += [x509.RFC822Name(e) for e in emails]
        alt += [x509.UniformResourceIdentifier(u) for u in uris]
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [x509.NameAttribute(NameOID.COMMON_NAME, common_name or (names or ("x",))[0])]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + valid_for)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
        )
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)
