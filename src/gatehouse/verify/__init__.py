"""Python SDK for upstreams: verify the identity assertion gatehouse (or Pomerium) forwards.

Needs only the standard library and ``cryptography``. gatehouse and Pomerium send the
same ``X-Pomerium-Jwt-Assertion`` (ES256/RS256 compact JWS, keys at
``/.well-known/pomerium/jwks.json``), so this verifies Pomerium's own assertions too.

    from gatehouse.verify import Verifier
    verifier = Verifier(issuer="app.example.com")      # JWKS URL derived from the host
    identity = verifier.verify(request.headers["X-Pomerium-Jwt-Assertion"])
    identity.sub, identity.email, identity.groups, identity.claims

Middleware: :class:`gatehouse.verify.asgi.VerifyMiddleware` (Starlette/FastAPI) and
:class:`gatehouse.verify.wsgi.VerifyMiddleware` (Flask/Django). Failures raise a
:class:`VerificationError` subclass whose ``reason`` names the check that failed.
"""

from .errors import (
    ExpiredToken,
    InvalidSignature,
    KeysUnavailable,
    MalformedToken,
    MissingClaim,
    TokenNotYetValid,
    UnknownKey,
    UnsupportedAlgorithm,
    VerificationError,
    WrongAudience,
    WrongIssuer,
)
from .verifier import Identity, Verifier

__all__ = [
    "ExpiredToken",
    "Identity",
    "InvalidSignature",
    "KeysUnavailable",
    "MalformedToken",
    "MissingClaim",
    "TokenNotYetValid",
    "UnknownKey",
    "UnsupportedAlgorithm",
    "VerificationError",
    "Verifier",
    "WrongAudience",
    "WrongIssuer",
]
