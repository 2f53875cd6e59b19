"""ID token validation (OpenID Connect Core 1.0 §3.1.3.7), given the IdP's keys.

Pure: no I/O. Parsing and signature checks are joserfc's; this module decides which key
and algorithm are acceptable and which claims must hold:

- ``alg`` must be one the IdP lists in ``id_token_signing_alg_values_supported`` and one
  we implement; ``none`` never. HMAC (``HS*``) only with the client secret as the key
  (§10.1), asymmetric algorithms only with a key from the IdP's JWKS, matched by ``kid``.
- ``iss`` equals the discovered issuer, ``aud`` contains the client id, ``azp`` (when
  present, and required with several audiences) is the client id, ``exp`` is in the
  future and ``iat`` not in the future (both with leeway), ``sub`` is present, and
  ``nonce`` is the one of this sign-in (compared in constant time).

:func:`validate_access_token` checks a JWT access token (``bearer_token_format:
idp_access_token`` with ``idp_access_token_allowed_audiences``) the same way, except that
HMAC is never accepted (an access token is no client's to sign with its secret), ``aud``
must name one of the allowed audiences, and ``azp``/``nonce``/``iat`` are not required.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey

from .errors import InvalidIdToken
from .providers import TENANT_PLACEHOLDER

#: Clock skew tolerated on ``exp``, ``iat`` and ``nbf`` (seconds).
DEFAULT_LEEWAY_S = 60
#: An ID token longer than this (characters) is refused before parsing.
MAX_ID_TOKEN_CHARS = 16 * 1024

#: Algorithms we accept, by the key type they need. ``none`` is deliberately absent.
ALGORITHM_KEY_TYPES: Mapping[str, type[Key]] = {
    **{f"RS{n}": RSAKey for n in (256, 384, 512)},
    **{f"PS{n}": RSAKey for n in (256, 384, 512)},
    "ES256": ECKey,
    "ES384": ECKey,
    "ES512": ECKey,
    "EdDSA": OKPKey,
    "Ed25519": OKPKey,
    **{f"HS{n}": OctKey for n in (256, 384, 512)},
}

PROTOCOL_CLAIMS = frozenset(
    {"iss", "aud", "azp", "exp", "iat", "nbf", "nonce", "auth_time", "at_hash", "c_hash", "sub"}
)


class UnknownSigningKey(InvalidIdToken):
    """No JWKS key has the token's ``kid``: the caller may refetch the keys once."""


@dataclass(frozen=True, slots=True)
class IdTokenRules:
    """What one ID token must satisfy."""

    issuer: str
    client_id: str
    client_secret: str
    #: The IdP's ``id_token_signing_alg_values_supported``.
    allowed_algs: tuple[str, ...]
    #: The sign-in's nonce; ``None`` for a token from a refresh (§12.2: no nonce check).
    nonce: str | None
    #: The issuer may be a ``{tenantid}`` template (Azure multi-tenant).
    tenant_issuer: bool = False
    leeway_s: int = DEFAULT_LEEWAY_S


@dataclass(frozen=True, slots=True)
class AccessTokenRules:
    """What a JWT access token must satisfy."""

    issuer: str
    #: ``idp_access_token_allowed_audiences``: ``aud`` (a string or a list) must hold one.
    audiences: tuple[str, ...]
    #: The IdP's announced signing algorithms (its ID token list: the keys are the same).
    allowed_algs: tuple[str, ...]
    tenant_issuer: bool = False
    leeway_s: int = DEFAULT_LEEWAY_S


#: A compact JWS split and decoded once (header, payload), not yet verified.
ParsedToken = jws.CompactSignature


def parse_token(token: str | ParsedToken) -> ParsedToken:
    """``token`` split and decoded, unverified: its header chooses the key, and the same
    object is then verified (parsed once per token, not once per step)."""
    if isinstance(token, jws.CompactSignature):
        return token
    if not isinstance(token, str) or len(token) > MAX_ID_TOKEN_CHARS or token.count(".") != 2:
        raise InvalidIdToken("ID token is not a compact JWS")
    try:
        return jws.extract_compact(token.encode("ascii"))
    except (JoseError, ValueError, UnicodeError) as exc:
        raise InvalidIdToken(f"ID token header unreadable: {exc}") from exc


def token_header(token: str | ParsedToken) -> Mapping[str, Any]:
    """The protected header of a compact JWS, unverified (to choose the key)."""
    return parse_token(token).headers()


def validate_id_token(
    token: str | ParsedToken, keys: Sequence[Key], rules: IdTokenRules, now: float
) -> dict[str, Any]:
    """Verify ``token`` and return its claims.

    Raises:
        UnknownSigningKey: its ``kid`` is not among ``keys`` (refetch, then call again).
        InvalidIdToken: anything else is wrong.
    """
    claims = _verified_claims(
        token, keys, rules.allowed_algs, rules.client_secret, "ID token", hmac_ok=True
    )
    _check_claims(claims, rules, now)
    return claims


def validate_access_token(
    token: str | ParsedToken, keys: Sequence[Key], rules: AccessTokenRules, now: float
) -> dict[str, Any]:
    """Verify a JWT access token and return its claims (RFC 9068 §4, with the audience
    list of ``idp_access_token_allowed_audiences``).

    Raises:
        UnknownSigningKey: its ``kid`` is not among ``keys`` (refetch, then call again).
        InvalidIdToken: anything else is wrong.
    """
    # Only the IdP's published keys sign access tokens: an HMAC "signature" could only be
    # checked against a secret the token's bearer might know.
    claims = _verified_claims(token, keys, rules.allowed_algs, "", "access token", hmac_ok=False)
    issuer = _issuer_for(claims, rules.issuer, rules.tenant_issuer)
    registry = jwt.JWTClaimsRegistry(
        now=int(now),
        leeway=rules.leeway_s,
        iss={"essential": True, "value": issuer},
        sub={"essential": True},
        exp={"essential": True},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise InvalidIdToken(f"access token claims invalid: {exc}") from exc
    if not isinstance(claims["sub"], str):
        raise InvalidIdToken("access token sub is not a string")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(a, str) and a in rules.audiences for a in audiences):
        raise InvalidIdToken(f"access token aud {aud!r} is not an allowed audience")
    return claims


def _issuer_for(claims: Mapping[str, Any], issuer: str, tenant_issuer: bool) -> str:
    """The issuer a token must name: ``issuer``, with a tenant template filled in."""
    if tenant_issuer and TENANT_PLACEHOLDER in issuer:
        tid = claims.get("tid")
        if not isinstance(tid, str) or not tid or "/" in tid:
            raise InvalidIdToken("token has no usable tid for a tenant issuer")
        issuer = issuer.replace(TENANT_PLACEHOLDER, tid)
    return issuer


def _verified_claims(
    token: str | ParsedToken,
    keys: Sequence[Key],
    allowed_algs: tuple[str, ...],
    client_secret: str,
    what: str,
    *,
    hmac_ok: bool,
) -> dict[str, Any]:
    """The claims of ``token`` once its signature checks out with one of the keys its
    header may name (``what`` names the token in errors).

    Raises:
        UnknownSigningKey: its ``kid`` is not among ``keys``.
        InvalidIdToken: an algorithm not accepted, or no key verifies the signature.
    """
    parsed = parse_token(token)
    header = parsed.headers()
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHM_KEY_TYPES:
        raise InvalidIdToken(f"{what} alg {alg!r} is not accepted")
    if not hmac_ok and ALGORITHM_KEY_TYPES[alg] is OctKey:
        raise InvalidIdToken(f"{what} alg {alg!r} (HMAC) is not accepted")
    if alg not in allowed_algs:
        raise InvalidIdToken(f"{what} alg {alg!r} is not one the IdP announced")
    last: Exception | None = None
    for key in _candidate_keys(header, alg, keys, client_secret):
        # What jwt.decode does, on the token parsed once: verify, then a JSON object.
        try:
            if not jws.validate_compact(parsed, key, algorithms=[alg]):
                raise BadSignatureError()
        except (JoseError, ValueError) as exc:
            last = exc
            continue
        try:
            claims = json.loads(parsed.payload)
        except ValueError as exc:
            raise InvalidIdToken(f"{what} payload is not JSON") from exc
        if not isinstance(claims, dict):
            raise InvalidIdToken(f"{what} payload is not a JSON object")
        return claims
    raise InvalidIdToken(f"{what} signature invalid: {last!r}")


def _candidate_keys(
    header: Mapping[str, Any], alg: str, keys: Sequence[Key], client_secret: str
) -> list[Key]:
    key_type = ALGORITHM_KEY_TYPES[alg]
    if key_type is OctKey:
        # §10.1: symmetric signatures use the client secret's octets as the key.
        if not client_secret:
            raise InvalidIdToken("HMAC-signed ID token but no client secret")
        return [OctKey.import_key(client_secret.encode())]
    kid = header.get("kid")
    typed = [k for k in keys if isinstance(k, key_type) and k.alg in (None, alg)]
    if kid is None:
        if not typed:
            raise InvalidIdToken(f"no {key_type.__name__} in the IdP's JWKS for alg {alg}")
        return typed
    matching = [k for k in typed if k.kid == kid]
    if not matching:
        raise UnknownSigningKey(f"no IdP key with kid {kid!r} for alg {alg}")
    return matching


def _check_claims(claims: dict[str, Any], rules: IdTokenRules, now: float) -> None:
    issuer = _issuer_for(claims, rules.issuer, rules.tenant_issuer)
    registry = jwt.JWTClaimsRegistry(
        now=int(now),
        leeway=rules.leeway_s,
        iss={"essential": True, "value": issuer},
        sub={"essential": True},
        aud={"essential": True, "value": rules.client_id},
        exp={"essential": True},
        iat={"essential": True},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise InvalidIdToken(f"ID token claims invalid: {exc}") from exc
    if not isinstance(claims["sub"], str):
        raise InvalidIdToken("ID token sub is not a string")
    aud = claims["aud"]
    audiences = aud if isinstance(aud, list) else [aud]
    azp = claims.get("azp")
    if azp is not None and azp != rules.client_id:
        raise InvalidIdToken(f"ID token azp {azp!r} is not this client")
    if len(audiences) > 1 and azp is None:
        raise InvalidIdToken("ID token has several audiences and no azp")
    if rules.nonce is not None:
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not hmac.compare_digest(
            nonce.encode(), rules.nonce.encode()
        ):
            raise InvalidIdToken("ID token nonce does not match this sign-in")
