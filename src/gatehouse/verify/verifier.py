"""Verify an ``X-Pomerium-Jwt-Assertion`` and return who the user is.

Checks, in order (RFC 7515 §5.2, RFC 7519 §7.2): compact form and strict base64url;
header ``alg`` is ES256 or RS256 (``none`` and every HMAC are refused before any key is
looked at), no ``crit``; the ``kid`` names a key of that same algorithm in the JWKS; the
signature; then ``exp``, ``iat`` (and ``nbf`` if present) with a leeway, ``iss`` and
``aud``; and a non-empty ``sub``.

Works the same for Pomerium's assertions: same header, claims and key endpoint.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .errors import (
    ExpiredToken,
    InvalidSignature,
    MalformedToken,
    MissingClaim,
    TokenNotYetValid,
    UnknownKey,
    UnsupportedAlgorithm,
    WrongAudience,
    WrongIssuer,
)
from .jwks import Fetcher, JwksCache, PublicKey, b64url_decode

#: Longest token accepted (characters); assertions are ~0.6-2 KB.
MAX_TOKEN_CHARS = 16 * 1024
#: The only algorithms accepted (RFC 8725 §3.1: an explicit allow-list).
ALLOWED_ALGS = frozenset({"ES256", "RS256"})
#: Path of the key set on every gatehouse / Pomerium host.
JWKS_PATH = "/.well-known/pomerium/jwks.json"


@dataclass(frozen=True, slots=True)
class Identity:
    """The verified user behind a request."""

    sub: str
    email: str
    name: str
    groups: tuple[str, ...]
    #: Every claim of the token (read-only).
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def session_id(self) -> str:
        sid = self.claims.get("sid")
        return sid if isinstance(sid, str) else ""


def issuer_host(issuer: str) -> str:
    """``"app.example.com"`` for both issuer forms (``hostOnly`` and ``https://host/``)."""
    if "://" in issuer:
        return (urlsplit(issuer).hostname or "").lower()
    return issuer.strip().rstrip("/").lower()


def jwks_url_for(issuer: str) -> str:
    """The JWKS URL on the issuer's host (keeping scheme and port when a URL is given)."""
    if "://" in issuer:
        parts = urlsplit(issuer)
        return f"{parts.scheme}://{parts.netloc}{JWKS_PATH}"
    return f"https://{issuer_host(issuer)}{JWKS_PATH}"


class Verifier:
    """Verifies assertions from one issuer (a gatehouse or Pomerium route host).

    Args:
        jwks_url: where the keys are; default
            ``https://<issuer host>/.well-known/pomerium/jwks.json``.
        issuer: the route's host, in either form (``app.example.com`` or
            ``https://app.example.com/``): both denote the same host and either is accepted.
        audience: acceptable ``aud`` values; default the issuer's host.
        leeway_s: clock skew tolerated on ``exp``, ``iat`` and ``nbf``.
    """

    def __init__(
        self,
        jwks_url: str | None = None,
        *,
        issuer: str,
        audience: str | Iterable[str] | None = None,
        leeway_s: float = 60.0,
        timeout_s: float = 5.0,
        min_refetch_interval_s: float = 10.0,
        fetch: Fetcher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuer = issuer_host(issuer)
        if not self._issuer:
            raise ValueError("issuer must name a host")
        if audience is None:
            audience = [self._issuer]
        elif isinstance(audience, str):
            audience = [audience]
        self._audience = frozenset(audience)
        self._leeway_s = leeway_s
        self._clock = clock
        self.keys = JwksCache(
            jwks_url or jwks_url_for(issuer),
            timeout_s=timeout_s,
            min_refetch_interval_s=min_refetch_interval_s,
            fetch=fetch,
        )

    def verify(self, token: str) -> Identity:
        """Verify ``token``; may block on fetching keys.

        Raises:
            VerificationError: a subclass naming the reason (see :mod:`.errors`).
        """
        header, signing_input, signature, payload_b64 = _split(token)
        key = self.keys.get(_kid(header))
        return self._finish(header, key, signing_input, signature, payload_b64)

    async def averify(self, token: str) -> Identity:
        """Like :meth:`verify`; a key fetch, when needed, runs in a thread."""
        header, signing_input, signature, payload_b64 = _split(token)
        kid = _kid(header)
        key = self.keys.peek(kid)
        if key is None:
            key = await asyncio.to_thread(self.keys.get, kid)
        return self._finish(header, key, signing_input, signature, payload_b64)

    def _finish(
        self,
        header: dict[str, Any],
        key: PublicKey,
        signing_input: bytes,
        signature: bytes,
        payload_b64: str,
    ) -> Identity:
        if key.alg != header["alg"]:
            raise UnsupportedAlgorithm(
                f"token says {header['alg']} but key {key.kid[:16]}... is {key.alg}"
            )
        _check_signature(key, signing_input, signature)
        claims = _json_object(payload_b64, "payload")
        self._check_claims(claims)
        groups = claims.get("groups")
        return Identity(
            sub=claims["sub"],
            email=_str(claims.get("email")),
            name=_str(claims.get("name")),
            groups=tuple(g for g in groups if isinstance(g, str))
            if isinstance(groups, list)
            else (),
            claims=MappingProxyType(claims),
        )

    def _check_claims(self, claims: dict[str, Any]) -> None:
        now = self._clock()
        exp = _number(claims, "exp")
        iat = _number(claims, "iat")
        if now > exp + self._leeway_s:
            raise ExpiredToken(f"expired at {exp:.0f}, now {now:.0f}")
        if iat > now + self._leeway_s:
            raise TokenNotYetValid(f"issued in the future ({iat:.0f}, now {now:.0f})")
        if "nbf" in claims and _number(claims, "nbf") > now + self._leeway_s:
            raise TokenNotYetValid("not valid before nbf")
        iss = claims.get("iss")
        if not isinstance(iss, str):
            raise MissingClaim("iss is missing or not a string")
        if issuer_host(iss) != self._issuer:
            raise WrongIssuer(f"issuer {iss[:100]!r} is not {self._issuer!r}")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
        if not auds:
            raise MissingClaim("aud is missing")
        if not any(isinstance(a, str) and a in self._audience for a in auds):
            raise WrongAudience(
                f"audience {str(aud)[:100]!r} is not one of {sorted(self._audience)}"
            )
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise MissingClaim("sub is missing or empty")


def _split(token: str) -> tuple[dict[str, Any], bytes, bytes, str]:
    if not isinstance(token, str) or not token:
        raise MalformedToken("no token")
    if len(token) > MAX_TOKEN_CHARS:
        raise MalformedToken(f"token longer than {MAX_TOKEN_CHARS} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken("not a compact JWS (three dot-separated parts)")
    header_b64, payload_b64, sig_b64 = parts
    header = _json_object(header_b64, "header")
    alg = header.get("alg")
    if alg not in ALLOWED_ALGS:
        raise UnsupportedAlgorithm(f"alg {str(alg)[:20]!r} is not allowed (only ES256, RS256)")
    if "crit" in header:
        raise MalformedToken("critical header parameters are not supported")
    try:
        signature = b64url_decode(sig_b64)
    except ValueError as exc:
        raise MalformedToken("signature is not base64url") from exc
    return header, f"{header_b64}.{payload_b64}".encode("ascii"), signature, payload_b64


def _kid(header: dict[str, Any]) -> str:
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnknownKey("token header has no kid")
    return kid


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate member name")  # RFC 7515 §5.2 step 4
    return out


def _json_object(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(part), object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedToken(f"{what} is not base64url JSON") from exc
    if not isinstance(value, dict):
        raise MalformedToken(f"{what} is not a JSON object")
    return value


def _check_signature(key: PublicKey, signing_input: bytes, signature: bytes) -> None:
    try:
        if isinstance(key.key, ec.EllipticCurvePublicKey):
            if len(signature) != 64:  # RFC 7518 §3.4: r || s, 32 bytes each
                raise InvalidSignature("ES256 signature is not 64 bytes")
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            key.key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key.key, rsa.RSAPublicKey):
            key.key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:  # pragma: no cover - JwksCache keeps only these two
            raise UnsupportedAlgorithm("unsupported key type")
    except _CryptoInvalidSignature as exc:
        raise InvalidSignature("signature does not verify") from exc


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MissingClaim(f"{name} is missing or not a number")
    return float(value)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


__all__ = ["ALLOWED_ALGS", "Identity", "Verifier", "issuer_host", "jwks_url_for"]
