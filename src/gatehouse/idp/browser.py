"""The IdP's own browser state: a sealed session cookie and CSRF tokens for its forms.

The session cookie (so a user signed in once is not asked again by a second client)
is AES-256-GCM sealed JSON ``{"sid", "sub", "auth_time", "exp"}`` with the cookie name
as associated data. The ``sid`` must also be live in the state store: ending the session
deletes it there, so a copied cookie is dead everywhere, in every worker.

CSRF (sign-in and sign-out forms): a random per-browser cookie, and in each form
``HMAC(key, cookie || purpose)``. A cross-site page can post the form but cannot read
the cookie, so cannot compute the token (double-submit, bound to a server key).
Keys come from one secret through HKDF; workers must share the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: Cookie names; scoped to the IdP's path so route hosts never see them.
SESSION_COOKIE = "_gatehouse_idp"
CSRF_COOKIE = "_gatehouse_idp_csrf"
#: Longest cookie value accepted for unsealing (bytes): larger is not ours.
MAX_COOKIE_CHARS = 2048
_NONCE_BYTES = 12


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


@dataclass(frozen=True, slots=True)
class BrowserSession:
    """Who is signed in to the IdP in this browser, since when."""

    sid: str
    sub: str
    auth_time: int
    exp: int


class BrowserState:
    """Seals session cookies and makes/checks CSRF tokens with keys derived from ``secret``."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the IdP browser secret must be at least 32 bytes")
        self._aead = AESGCM(_derive(secret, b"gatehouse idp session cookie"))
        self._csrf_key = _derive(secret, b"gatehouse idp csrf")

    # -- session cookie ------------------------------------------------------------------
    def seal(self, session: BrowserSession) -> str:
        payload = json.dumps(
            {
                "sid": session.sid,
                "sub": session.sub,
                "auth_time": session.auth_time,
                "exp": session.exp,
            },
            separators=(",", ":"),
        ).encode()
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _b64e(nonce + self._aead.encrypt(nonce, payload, SESSION_COOKIE.encode()))

    def unseal(self, value: str | None, now: float) -> BrowserSession | None:
        """The session in a cookie value, or ``None`` if absent, forged or expired."""
        if not value or len(value) > MAX_COOKIE_CHARS:
            return None
        raw = _b64d(value)
        if raw is None or len(raw) <= _NONCE_BYTES:
            return None
        try:
            payload = self._aead.decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], SESSION_COOKIE.encode()
            )
            data = json.loads(payload)
            session = BrowserSession(
                sid=str(data["sid"]),
                sub=str(data["sub"]),
                auth_time=int(data["auth_time"]),
                exp=int(data["exp"]),
            )
        except (InvalidTag, ValueError, KeyError, TypeError):
            return None
        return session if session.exp > now else None

    # -- CSRF ----------------------------------------------------------------------------
    @staticmethod
    def new_csrf_cookie() -> str:
        return secrets.token_urlsafe(32)

    def csrf_token(self, cookie_value: str, purpose: str) -> str:
        mac = hmac.new(self._csrf_key, f"{cookie_value}|{purpose}".encode(), hashlib.sha256)
        return _b64e(mac.digest())

    def check_csrf(self, cookie_value: str | None, purpose: str, token: str | None) -> bool:
        if not cookie_value or not token or len(cookie_value) > MAX_COOKIE_CHARS:
            return False
        expected = self.csrf_token(cookie_value, purpose)
        return hmac.compare_digest(expected.encode(), token.encode())


__all__ = ["CSRF_COOKIE", "SESSION_COOKIE", "BrowserSession", "BrowserState"]
