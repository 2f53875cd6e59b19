"""Client certificate verification: is a presented chain valid for a trust configuration?

A :class:`ClientTrust` is built once per config (the global ``downstream_mtls`` CA, and
one per route with ``tls_downstream_client_ca``) and answers :meth:`ClientTrust.verify`
with Pomerium's rules (``authorize/evaluator/functions.go``):

- the chain must build to one of the CA certificates (``cryptography``'s RFC 5280 path
  validation: signatures, validity periods, CA basic constraints), with the client's own
  intermediates as untrusted helpers;
- the leaf's extended key usage, when present, must allow client authentication (Go's
  ``ExtKeyUsageClientAuth``);
- the chain above the leaf may be at most ``max_verify_depth`` long (0: no limit);
- with SAN matchers, one SAN of the leaf must fully match one of them;
- a CRL for the leaf's issuer (only that one: Envoy's ``only_verify_leaf_cert_crl``) must
  be signed by it and must not list the leaf's serial.

Answers are cached per chain (a client reconnects with the same one).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from ..config.mtls import DownstreamMTLS
from ..errors import ConfigError

#: Chains whose verdict is remembered per trust configuration (Pomerium keeps 100).
VERDICT_CACHE_SIZE = 1024
#: Microsoft's User Principal Name otherName (Pomerium's ``oidUserPrincipalName``).
UPN_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
#: How long a verdict is trusted, seconds: a certificate may expire meanwhile.
VERDICT_TTL_S = 60.0


_NETWORKS = (ipaddress.IPv4Network, ipaddress.IPv6Network)


@dataclass(frozen=True, slots=True)
class SANRule:
    kind: str
    pattern: re.Pattern[str]


def split_pem(data: bytes, label: bytes) -> list[bytes]:
    """Every ``-----BEGIN <label>-----`` block of ``data``, in order."""
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    blocks, at = [], 0
    while (start := data.find(begin, at)) >= 0:
        stop = data.find(end, start)
        if stop < 0:
            break
        blocks.append(data[start : stop + len(end)] + b"\n")
        at = stop + len(end)
    return blocks


def load_ca_bundle(pem: bytes, what: str) -> list[x509.Certificate]:
    """The certificates of a CA bundle.

    Raises:
        ConfigError: no certificate in it, or one that does not parse.
    """
    blocks = split_pem(pem, b"CERTIFICATE")
    if not blocks:
        raise ConfigError([f"{what}: no PEM certificate found"])
    try:
        return [x509.load_pem_x509_certificate(b) for b in blocks]
    except ValueError as exc:
        raise ConfigError([f"{what}: not a PEM certificate: {exc}"]) from None


def load_crls(pem: bytes, what: str) -> list[x509.CertificateRevocationList]:
    """The CRLs of a PEM bundle.

    Raises:
        ConfigError: no CRL in it, or one that does not parse.
    """
    blocks = split_pem(pem, b"X509 CRL")
    if not blocks:
        raise ConfigError([f"{what}: no PEM certificate revocation list found"])
    try:
        return [x509.load_pem_x509_crl(b) for b in blocks]
    except ValueError as exc:
        raise ConfigError([f"{what}: not a PEM certificate revocation list: {exc}"]) from None


def compile_san_rules(settings: DownstreamMTLS) -> tuple[SANRule, ...]:
    return tuple(SANRule(m.type, re.compile(m.pattern)) for m in settings.match_subject_alt_names)


class ClientTrust:
    """Trusted client CAs with the global constraints (CRL, depth, SANs)."""

    def __init__(
        self,
        cas: Sequence[x509.Certificate],
        crls: Sequence[x509.CertificateRevocationList] = (),
        *,
        max_depth: int = 1,
        san_rules: Sequence[SANRule] = (),
        source: str = "downstream_mtls",
    ) -> None:
        self.cas = tuple(cas)
        self.crls = {crl.issuer: crl for crl in crls}
        self.max_depth = max_depth
        self.san_rules = tuple(san_rules)
        self.source = source
        self._store = verification.Store(list(self.cas))
        self._verdicts: OrderedDict[tuple[bytes, ...], tuple[str | None, float]] = OrderedDict()

    def check(self, chain_der: Sequence[bytes], now: float) -> str | None:
        """Why the presented chain (leaf first, DER) is not valid here at Unix time ``now``;
        ``None`` when it is."""
        if not chain_der:
            return "no client certificate"
        key = tuple(chain_der)
        cached = self._verdicts.get(key)
        if cached is not None and now - cached[1] < VERDICT_TTL_S:
            return cached[0]
        try:
            problem = self._problem(chain_der, now)
        except ValueError as exc:  # a certificate that does not parse
            problem = f"unreadable certificate: {exc}"
        self._verdicts[key] = (problem, now)
        self._verdicts.move_to_end(key)
        if len(self._verdicts) > VERDICT_CACHE_SIZE:
            self._verdicts.popitem(last=False)
        return problem

    def _problem(self, chain_der: Sequence[bytes], now: float) -> str | None:
        leaf = x509.load_der_x509_certificate(chain_der[0])
        helpers = [x509.load_der_x509_certificate(d) for d in chain_der[1:]]
        builder = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(datetime.datetime.fromtimestamp(now, datetime.UTC))
            .extension_policies(
                # CAs: RFC 5280 profile (basic constraints, key usage); the leaf: any
                # extensions (internal client certificates often lack AKI or SANs), its
                # EKU checked below as Go does.
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=verification.ExtensionPolicy.permit_all(),
            )
        )
        try:
            verified = builder.build_client_verifier().verify(leaf, helpers)
        except verification.VerificationError as exc:
            return f"chain does not verify: {exc}"
        if not _client_auth_allowed(leaf):
            return "extended key usage does not allow client authentication"
        chain = verified.chain
        if self.max_depth > 0 and len(chain) - 1 > self.max_depth:
            return f"chain depth {len(chain) - 1} exceeds max_verify_depth {self.max_depth}"
        if self.san_rules and not _san_matches(leaf, self.san_rules):
            return "no matching Subject Alternative Name"
        if len(chain) >= 2:
            issuer = chain[1]
            crl = self.crls.get(issuer.subject)
            if crl is not None:
                if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                    name = issuer.subject.rfc4514_string()
                    return f"CRL signature does not verify for issuer {name}"
                if crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None:
                    return f"certificate serial {leaf.serial_number:x} is revoked"
        return None


def _client_auth_allowed(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return (
        ExtendedKeyUsageOID.CLIENT_AUTH in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
    )


def subject_alt_names(cert: x509.Certificate) -> dict[str, list[str]]:
    """The leaf's SANs by Pomerium's type names (``dns``, ``email``, ``ip_address``...)."""
    out: dict[str, list[str]] = {
        k: [] for k in ("dns", "email", "ip_address", "uri", "user_principal_name")
    }
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return out
    out["dns"] = list(san.get_values_for_type(x509.DNSName))
    out["email"] = list(san.get_values_for_type(x509.RFC822Name))
    out["ip_address"] = [
        str(a) for a in san.get_values_for_type(x509.IPAddress) if not isinstance(a, _NETWORKS)
    ]
    out["uri"] = list(san.get_values_for_type(x509.UniformResourceIdentifier))
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id == UPN_OID:
            upn = _der_utf8(other.value)
            if upn is not None:
                out["user_principal_name"].append(upn)
    return out


def _der_utf8(der: bytes) -> str | None:
    """The text of a DER UTF8String (tag 12), or ``None``."""
    if len(der) < 2 or der[0] != 0x0C:
        return None
    length, at = der[1], 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or len(der) < 2 + n:
            return None
        length, at = int.from_bytes(der[2 : 2 + n], "big"), 2 + n
    body = der[at : at + length]
    if len(body) != length:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _san_matches(cert: x509.Certificate, rules: Sequence[SANRule]) -> bool:
    names = subject_alt_names(cert)
    return any(rule.pattern.fullmatch(v) for rule in rules for v in names[rule.kind])
