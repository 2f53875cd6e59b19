"""Errors of the OpenID Connect relying party, each mapped to a status by who is at fault.

They extend :mod:`gatehouse.errors`, so the one place that turns exceptions into
responses handles them without knowing this package. The message is for logs only.

Hierarchy::

    Unauthenticated (gatehouse.errors)        401
    └── AuthenticationError                   401 sign-in failed; start again
        ├── InvalidState                      400 state missing, tampered, expired, replayed,
        │                                         or not bound to this browser's CSRF cookie
        ├── AuthorizationDenied               401 the IdP answered the callback with ?error=
        ├── TokenRequestRejected              401 the IdP refused a code / refresh token
        │                                         (``error`` holds its OAuth error code)
        └── InvalidIdToken                    401 signature, alg, iss, aud, azp, exp, iat, nonce
    BadRequest (gatehouse.errors)             400
    └── InvalidRedirect                       400 redirect target not allowed, or bad signature
    ServiceUnavailable (gatehouse.errors)     503
    └── IdpUnavailable                        503 IdP unreachable, 5xx, or malformed metadata
"""

from __future__ import annotations

from gatehouse.errors import BadRequest, ServiceUnavailable, Unauthenticated


class AuthenticationError(Unauthenticated):
    """Signing in failed in a way that a fresh sign-in may fix."""

    title = "Sign-in failed"


class InvalidState(AuthenticationError):
    status = 400
    title = "Sign-in failed: invalid or expired sign-in request"


class AuthorizationDenied(AuthenticationError):
    """The IdP redirected back with an OAuth ``error`` (e.g. ``access_denied``)."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"identity provider returned error={error!r} {description!r}")
        self.error = error


class TokenRequestRejected(AuthenticationError):
    """The token endpoint answered 4xx: a reused or expired code, a revoked refresh token."""

    def __init__(self, error: str, description: str = "", *, status_code: int = 400) -> None:
        super().__init__(
            f"token endpoint refused the request ({status_code}): error={error!r} {description!r}"
        )
        self.error = error
        self.status_code = status_code


class InvalidIdToken(AuthenticationError):
    title = "Sign-in failed: invalid ID token"


class InvalidRedirect(BadRequest):
    title = "Bad Request: redirect not allowed"


class IdpUnavailable(ServiceUnavailable):
    title = "Identity provider unavailable"


__all__ = [
    "AuthenticationError",
    "AuthorizationDenied",
    "IdpUnavailable",
    "InvalidIdToken",
    "InvalidRedirect",
    "InvalidState",
    "TokenRequestRejected",
]
