"""Compact JWS signing (RFC 7515 §7.1) with ``cryptography``, built by hand for speed.

Only what assertions need: ES256 (RFC 7518 §3.4, signature = 32-byte ``r`` || 32-byte
``s``) and RS256 (§3.3, PKCS#1 v1.5). The protected header is
``{"alg":..,"kid":..,"typ":"JWT"}``, encoded once per key. All parts are base64url without
padding. A general JOSE library costs 30-100% more per token (see ``bench/identity_bench.py``),
and tokens from outside are never parsed here: this module only produces.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .keys import SigningKey

_SHA256 = hashes.SHA256()
_ECDSA_SHA256 = ec.ECDSA(_SHA256)
_PKCS1 = padding.PKCS1v15()
_b64 = base64.urlsafe_b64encode
# ASCII output: a lone surrogate from an IdP claim must not break encoding.
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def b64url(data: bytes) -> bytes:
    """base64url without padding (RFC 7515 §2), as bytes."""
    return _b64(data).rstrip(b"=")


class JwsSigner:
    """Signs compact JWS with one key; the header part is computed once."""

    __slots__ = ("_header_b64", "_sign", "key")

    def __init__(self, key: SigningKey) -> None:
        if key.private_key is None:
            raise ValueError(f"key {key.kid} has no private part and cannot sign")
        self.key = key
        header = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
        self._header_b64 = b64url(_dumps(header).encode()) + b"."
        private = key.private_key
        if isinstance(private, ec.EllipticCurvePrivateKey):

            def sign_es256(data: bytes) -> bytes:
                r, s = decode_dss_signature(private.sign(data, _ECDSA_SHA256))
                return r.to_bytes(32, "big") + s.to_bytes(32, "big")

            self._sign = sign_es256
        elif isinstance(private, rsa.RSAPrivateKey):

            def sign_rs256(data: bytes) -> bytes:
                return private.sign(data, _PKCS1, _SHA256)

            self._sign = sign_rs256
        else:  # pragma: no cover - keys.make_key admits only these two
            raise ValueError("unsupported key type")

    def sign(self, claims: dict[str, Any]) -> str:
        """The compact serialization of ``claims`` signed with this key."""
        signing_input = self._header_b64 + b64url(_dumps(claims).encode())
        return (signing_input + b"." + b64url(self._sign(signing_input))).decode("ascii")


__all__ = ["JwsSigner", "b64url"]
