"""What the IdP issues: its signing key, ID tokens, and opaque codes and tokens.

ID tokens are compact JWS signed with the IdP's own key (ES256 or RS256; separate from
gatehouse's assertion key), minted with :class:`~gatehouse.identity.jws.JwsSigner`.
Tokens that come back to us (``id_token_hint``) are verified with joserfc.

Codes, access tokens and refresh tokens are opaque random strings (256 bits). The store
keeps only their SHA-256, so a leaked state file does not leak usable tokens. Each
code/token points at a :class:`Grant`: who, which client, what scope, since when.
Refresh tokens belong to a *family* (one per code redemption): rotation keeps the family,
and reuse of a spent refresh token or code kills the whole family (OAuth 2.0 Security BCP
§4.14.2, RFC 6749 §4.1.2), taking its access tokens with it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from ..identity.jws import JwsSigner
from ..identity.keys import SigningKey, decode_key_text, make_key, parse_pem_keys

#: Bytes of randomness in codes and tokens.
TOKEN_BYTES = 32
#: Longest token accepted from a client (characters); ours are 43.
MAX_TOKEN_CHARS = 512

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """The store key part for a token (its SHA-256, hex)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def pkce_s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier)))."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def half_hash(token: str) -> str:
    """``at_hash`` (OpenID Connect Core §3.1.3.6): left half of SHA-256, base64url."""
    digest = hashlib.sha256(token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Grant:
    """What a code, access token or refresh token stands for."""

    client_id: str
    sub: str
    scope: tuple[str, ...]
    auth_time: int
    #: The IdP browser session it came from (``sid`` claim).
    sid: str
    #: Refresh-token family; ``""`` when no refresh token was issued.
    family: str = ""
    nonce: str = ""
    #: Only for codes: what the token request must repeat.
    redirect_uri: str = ""
    code_challenge: str = ""

    def dumps(self) -> str:
        data = asdict(self)
        data["scope"] = list(self.scope)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> Grant | None:
        try:
            data = json.loads(text)
            data["scope"] = tuple(str(s) for s in data["scope"])
            return cls(**data)
        except (ValueError, TypeError, KeyError):
            return None


class IdpKey:
    """The IdP's signing key: signs ID tokens, publishes its JWKS, verifies its own tokens."""

    def __init__(self, key: str | bytes | PrivateKey | None) -> None:
        """``key``: a PEM (text or bytes, or base64 of a PEM), a private key, or ``None``
        to generate a P-256 key (per process: several workers must be given one key).

        Raises:
            gatehouse.errors.ConfigError: unreadable or unsupported key.
        """
        if key is None:
            key = ec.generate_private_key(ec.SECP256R1())
        if isinstance(key, str | bytes):
            data = decode_key_text(key) if isinstance(key, str) else key
            signing: SigningKey = parse_pem_keys(data, "idp signing key")[0]
        else:
            signing = make_key(key, "idp signing key")
        self.key = signing
        self._signer = JwsSigner(signing)
        public: dict[str, str | list[str]] = dict(signing.jwk)
        self._verify_key = (
            ECKey.import_key(public) if public["kty"] == "EC" else RSAKey.import_key(public)
        )

    @property
    def alg(self) -> str:
        return self.key.alg

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [dict(self.key.jwk)]}

    def sign(self, claims: dict[str, Any]) -> str:
        return self._signer.sign(claims)

    def verify(self, token: str) -> dict[str, Any] | None:
        """Claims of a token this key signed (expiry not checked), or ``None``."""
        if not token or len(token) > 8 * 1024:
            return None
        try:
            decoded = jwt.decode(token, self._verify_key, algorithms=[self.key.alg])
        except (JoseError, ValueError, TypeError):
            return None
        claims = decoded.claims
        return claims if isinstance(claims, dict) else None


__all__ = [
    "MAX_TOKEN_CHARS",
    "Grant",
    "IdpKey",
    "half_hash",
    "new_token",
    "pkce_s256",
    "token_hash",
]
