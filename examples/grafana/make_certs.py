"""Make the example's TLS certificates once: a private CA and gatehouse's certificate.

    python make_certs.py CERT_DIR CA_DIR

Writes ``CERT_DIR/cert.pem`` and ``CERT_DIR/key.pem`` (gatehouse's certificate for the
public names and for the ``gatehouse`` service name that Grafana uses on the compose
network) and ``CA_DIR/ca.pem``, the CA certificate that Grafana trusts
(``GF_AUTH_JWT_TLS_CLIENT_CA``) and that you may import into your browser. The CA's
private key is never written: nobody can issue another certificate under this CA. An
existing certificate is kept until it is within 30 days of expiry.
Run by the ``certs`` service of docker-compose.yaml, before gatehouse starts.
"""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Every name a client reaches gatehouse by: browsers (the public names) and Grafana
#: (the compose service name, in GF_AUTH_JWT_JWK_SET_URL).
NAMES = ("grafana.localhost", "authenticate.localhost", "gatehouse")
VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)


def _still_good(cert_file: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return False
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return left > RENEW_BEFORE and set(alt.get_values_for_type(x509.DNSName)) == set(NAMES)


def make(cert_dir: Path, ca_dir: Path, names: tuple[str, ...] = NAMES) -> bool:
    """Write the files unless a good certificate is there; True when new ones were made."""
    if _still_good(cert_dir / "cert.pem") and (ca_dir / "ca.pem").exists():
        return False
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatehouse example CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALIDITY + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_dir.mkdir(parents=True, exist_ok=True)
    key_file = cert_dir / "key.pem"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    (cert_dir / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (ca_dir / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    made = make(Path(argv[0]), Path(argv[1]))
    print("made new certificates" if made else "certificates still valid, kept")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
