"""Criteria on the client certificate: ``client_certificate``, ``invalid_client_certificate``.

As Pomerium's (``pkg/policy/criteria/client_certificate.go``, ``invalid_client_certificate.go``):

- ``client_certificate`` takes an object whose conditions must all hold: ``fingerprint``
  (SHA-256 of the DER, 64 lower-case hex digits or 32 upper-case colon-separated pairs;
  one or a list), ``spki_hash`` (base64 SHA-256 of the SubjectPublicKeyInfo; one or a
  list), ``san_email``/``san_dns``/``san_uri`` (string matchers on those SANs, any SAN).
  Without a certificate it does not match. The handshake proved the client holds the
  key, so pinning a fingerprint or key is safe even for a certificate no CA vouches for.
- ``invalid_client_certificate`` matches when the route has a client CA and the request
  has no certificate (``client-certificate-required``) or one not valid for that CA
  (``invalid-client-certificate``); it does not match a valid one
  (``valid-client-certificate``) or on a route without a client CA.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

from ..client_cert import ClientCertificate
from ..decision import CriterionOutcome, Decision
from ..input import PolicyInput
from ..matchers import compile_string_matcher
from ..problems import Loc, PolicySyntaxError
from .base import Criterion, need_true, no_sub_path

REASON_OK = "client-certificate-ok"
REASON_UNAUTHORIZED = "client-certificate-unauthorized"
REASON_REQUIRED = "client-certificate-required"
REASON_INVALID = "invalid-client-certificate"
REASON_VALID = "valid-client-certificate"

_LONG_FINGERPRINT = re.compile(r"[0-9A-F]{2}(:[0-9A-F]{2}){31}")
_SHORT_FINGERPRINT = re.compile(r"[0-9a-f]{64}")

CertTest = Callable[[ClientCertificate], bool]


def _strings(data: Any, what: str, loc: Loc) -> list[str]:
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(i, str) for i in items):
        raise PolicySyntaxError(
            loc, f"certificate {what} condition expects a string or a list of strings"
        )
    return items


def _fingerprints(data: Any, loc: Loc) -> frozenset[str]:
    out = set()
    for f in _strings(data, "fingerprint", loc):
        if _SHORT_FINGERPRINT.fullmatch(f):
            out.add(f)
        elif _LONG_FINGERPRINT.fullmatch(f):
            out.add(f.replace(":", "").lower())
        else:
            raise PolicySyntaxError(
                loc, f"unsupported certificate fingerprint format ({f!r}): expected SHA-256 hex"
            )
    return frozenset(out)


def _spki_hashes(data: Any, loc: Loc) -> frozenset[str]:
    out = set()
    for h in _strings(data, "SPKI hash", loc):
        try:
            ok = len(base64.b64decode(h, validate=True)) == 32
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            raise PolicySyntaxError(
                loc, f"certificate SPKI hash must be a base64-encoded SHA-256 hash (was {h!r})"
            )
        out.add(h)
    return frozenset(out)


def _san(attr: str, data: Any, loc: Loc) -> CertTest:
    pred = compile_string_matcher(data, loc)
    return lambda cert: any(pred(v) for v in getattr(cert, attr))


def compile_client_certificate(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("client_certificate", sub_path, loc)
    if not isinstance(data, dict) or not data:
        raise PolicySyntaxError(loc, "expected an object for the certificate matcher")
    tests: list[CertTest] = []
    for key, value in data.items():
        at = (*loc, str(key))
        if key == "fingerprint":
            prints = _fingerprints(value, at)
            tests.append(lambda cert, p=prints: cert.fingerprint in p)  # type: ignore[misc]
        elif key == "spki_hash":
            hashes = _spki_hashes(value, at)
            tests.append(lambda cert, h=hashes: cert.spki_hash in h)  # type: ignore[misc]
        elif key == "san_email":
            tests.append(_san("emails", value, at))
        elif key == "san_dns":
            tests.append(_san("dns_names", value, at))
        elif key == "san_uri":
            tests.append(_san("uris", value, at))
        else:
            raise PolicySyntaxError(at, f"unsupported certificate matcher condition: {key}")
    passed: CriterionOutcome = (True, REASON_OK)
    failed: CriterionOutcome = (False, REASON_UNAUTHORIZED)

    def run(inp: PolicyInput) -> CriterionOutcome:
        cert = inp.client_certificate
        if cert is None:
            return failed
        return passed if all(t(cert) for t in tests) else failed

    return run


_VALID: CriterionOutcome = (False, REASON_VALID)
_REQUIRED: CriterionOutcome = (True, REASON_REQUIRED)
_INVALID: CriterionOutcome = (True, REASON_INVALID)


def invalid_certificate_outcome(inp: PolicyInput) -> CriterionOutcome:
    if inp.client_certificate_valid:
        return _VALID
    return _REQUIRED if inp.client_certificate is None else _INVALID


def compile_invalid_client_certificate(data: Any, sub_path: str, loc: Loc) -> Criterion:
    no_sub_path("invalid_client_certificate", sub_path, loc)
    need_true("invalid_client_certificate", data, loc)
    return invalid_certificate_outcome


def denied_for_certificate(decision: Decision) -> bool:
    """Whether a matching deny rule denied for the client certificate (Pomerium's
    ``invalidClientCertReason``: answered with 495, before any sign-in)."""
    if not decision.matched_deny:
        return False
    return any(
        clause.action == "deny" and clause.matched and _CERT_REASONS.intersection(clause.reasons)
        for clause in decision.clause_results()
    )


_CERT_REASONS = frozenset({REASON_REQUIRED, REASON_INVALID})
