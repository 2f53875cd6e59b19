"""Why an assertion was refused: one exception class per reason, each with a stable code.

Hierarchy::

    VerificationError                   reason
    ├── MalformedToken                  "malformed"          not a compact JWS with JSON parts
    ├── UnsupportedAlgorithm            "unsupported_alg"    alg is not ES256/RS256 (none, HS256...)
    ├── UnknownKey                      "unknown_kid"        kid missing or not in the JWKS
    ├── InvalidSignature                "bad_signature"      the signature does not verify
    ├── ExpiredToken                    "expired"            exp (+ leeway) has passed
    ├── TokenNotYetValid                "not_yet_valid"      iat or nbf (- leeway) is in the future
    ├── WrongIssuer                     "wrong_issuer"
    ├── WrongAudience                   "wrong_audience"
    ├── MissingClaim                    "missing_claim"      sub/exp/iat/iss/aud absent or mistyped
    └── KeysUnavailable                 "jwks_unavailable"   the JWKS could not be fetched or read

``reason`` is safe to log and to match on; the message adds detail for logs.
"""

from __future__ import annotations


class VerificationError(Exception):
    """The assertion was not accepted."""

    reason = "invalid"


class MalformedToken(VerificationError):
    reason = "malformed"


class UnsupportedAlgorithm(VerificationError):
    reason = "unsupported_alg"


class UnknownKey(VerificationError):
    reason = "unknown_kid"


class InvalidSignature(VerificationError):
    reason = "bad_signature"


class ExpiredToken(VerificationError):
    reason = "expired"


class TokenNotYetValid(VerificationError):
    reason = "not_yet_valid"


class WrongIssuer(VerificationError):
    reason = "wrong_issuer"


class WrongAudience(VerificationError):
    reason = "wrong_audience"


class MissingClaim(VerificationError):
    reason = "missing_claim"


class KeysUnavailable(VerificationError):
    reason = "jwks_unavailable"


__all__ = [
    "ExpiredToken",
    "InvalidSignature",
    "KeysUnavailable",
    "MalformedToken",
    "MissingClaim",
    "TokenNotYetValid",
    "UnknownKey",
    "UnsupportedAlgorithm",
    "VerificationError",
    "WrongAudience",
    "WrongIssuer",
]
