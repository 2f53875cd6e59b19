"""A cached JSON Web Key Set fetched over HTTP(S) with ``urllib`` (stdlib only).

Theory of operation: keys are kept for the ``Cache-Control: max-age`` the server sent
(60 s from gatehouse and Pomerium), clamped to [1 s, 1 h]. A token whose ``kid`` is not
in a fresh set triggers one refetch, at most once per ``min_refetch_interval_s``, so a
flood of tokens with random kids cannot turn into a flood of fetches. A failed fetch is
not retried for a second and never falls back to stale keys: a key removed from the
set must stop verifying (fail closed). A lock makes concurrent threads share one fetch.

Only keys usable for ES256 (EC P-256) and RS256 (RSA >= 2048 bits) are kept; others are
ignored, so a verifier can never be tricked into HMAC or ``none``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .errors import KeysUnavailable, UnknownKey

#: Cache lifetime when the server sends no ``max-age`` (seconds).
DEFAULT_MAX_AGE_S = 60.0
#: Bounds for a server-sent ``max-age`` (seconds): at least 1 s so a ``no-cache`` server
#: is not fetched for every token, at most 1 h so removed keys stop working.
MIN_MAX_AGE_S = 1.0
MAX_MAX_AGE_S = 3600.0
#: Largest JWKS body read (bytes): a few keys take ~1 KB.
MAX_JWKS_BYTES = 1 << 20
#: Pause after a failed fetch before trying again (seconds).
FAILURE_BACKOFF_S = 1.0

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\b", re.IGNORECASE)

#: ``fetch(url, timeout_s) -> (body, cache_control header or None)``.
Fetcher = Callable[[str, float], tuple[bytes, str | None]]


@dataclass(frozen=True, slots=True)
class PublicKey:
    kid: str
    alg: str  # "ES256" or "RS256"
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2).

    Raises:
        ValueError: padding, characters outside the alphabet, or an impossible length.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise ValueError("not base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def urllib_fetch(url: str, timeout_s: float) -> tuple[bytes, str | None]:
    """GET ``url`` with urllib; the body (bounded) and its ``Cache-Control``."""
    if not url.startswith(("https://", "http://")):
        raise KeysUnavailable(f"JWKS URL must be http(s): {url!r}")
    req = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        resp = urllib.request.urlopen(req, timeout=timeout_s)  # noqa: S310
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the connection
        raise KeysUnavailable(f"JWKS {url} answered {exc.code}") from None
    with resp:
        body = resp.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise KeysUnavailable(f"JWKS from {url} is larger than {MAX_JWKS_BYTES} bytes")
        return body, resp.headers.get("Cache-Control")


def parse_jwks(body: bytes) -> dict[str, PublicKey]:
    """The usable signature keys of a JWKS document, by ``kid``.

    Raises:
        KeysUnavailable: the body is not a JWK Set.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeysUnavailable("JWKS is not JSON") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise KeysUnavailable('JWKS has no "keys" list')
    out: dict[str, PublicKey] = {}
    for jwk in doc["keys"]:
        key = _parse_jwk(jwk) if isinstance(jwk, dict) else None
        if key is not None and key.kid not in out:
            out[key.kid] = key
    return out


def _parse_jwk(jwk: dict[str, Any]) -> PublicKey | None:
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid or jwk.get("use", "sig") != "sig":
        return None
    try:
        if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            x, y = b64url_decode(jwk["x"]), b64url_decode(jwk["y"])
            if len(x) != 32 or len(y) != 32:
                return None
            nums = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            )
            key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey = nums.public_key()  # on-curve check
            alg = "ES256"
        elif jwk.get("kty") == "RSA":
            n = int.from_bytes(b64url_decode(jwk["n"]), "big")
            e = int.from_bytes(b64url_decode(jwk["e"]), "big")
            rsa_key = rsa.RSAPublicNumbers(e, n).public_key()
            if rsa_key.key_size < 2048:
                return None
            alg, key = "RS256", rsa_key
        else:
            return None
    except (KeyError, TypeError, ValueError):
        return None
    if jwk.get("alg", alg) != alg:
        return None
    return PublicKey(kid, alg, key)


class JwksCache:
    """Keys from one JWKS URL, refreshed as described in the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        min_refetch_interval_s: float = 10.0,
        fetch: Fetcher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._timeout_s = timeout_s
        self._min_refetch_s = min_refetch_interval_s
        self._fetch = fetch or urllib_fetch
        self._clock = clock
        self._keys: dict[str, PublicKey] = {}
        self._expires = -float("inf")
        self._fetched_at = -float("inf")
        self._failed_at = -float("inf")
        self._lock = threading.Lock()

    def peek(self, kid: str) -> PublicKey | None:
        """The key when it is known and the set is fresh; never does I/O."""
        if self._clock() < self._expires:
            return self._keys.get(kid)
        return None

    def get(self, kid: str) -> PublicKey:
        """The key for ``kid``, fetching when the set is stale or the kid is new (blocking).

        Raises:
            UnknownKey: the kid is not in the (refetched) set.
            KeysUnavailable: the set could not be fetched.
        """
        key = self.peek(kid)
        if key is not None:
            return key
        with self._lock:
            now = self._clock()
            if now >= self._expires:
                self._refresh(now)
            elif kid not in self._keys and now - self._fetched_at >= self._min_refetch_s:
                self._refresh(now)
            key = self._keys.get(kid)
        if key is None:
            raise UnknownKey(f"no key with kid {kid[:80]!r} in {self.url}")
        return key

    def _refresh(self, now: float) -> None:
        if now - self._failed_at < FAILURE_BACKOFF_S:
            raise KeysUnavailable(f"fetching {self.url} failed moments ago")
        try:
            body, cache_control = self._fetch(self.url, self._timeout_s)
            keys = parse_jwks(body)
        except KeysUnavailable:
            self._fail(now)
            raise
        except (OSError, ValueError) as exc:  # URLError/HTTPError/timeouts are OSErrors
            self._fail(now)
            raise KeysUnavailable(f"cannot fetch {self.url}: {exc}") from exc
        self._keys = keys
        self._fetched_at = now
        self._expires = now + _max_age(cache_control)

    def _fail(self, now: float) -> None:
        # Fail closed: stale keys are dropped, so a removed key cannot keep verifying.
        self._failed_at = now
        self._keys = {}
        self._expires = -float("inf")


def _max_age(cache_control: str | None) -> float:
    if not cache_control:
        return DEFAULT_MAX_AGE_S
    m = _MAX_AGE.search(cache_control)
    if m is not None:
        return min(max(float(m.group(1)), MIN_MAX_AGE_S), MAX_MAX_AGE_S)
    if _NO_CACHE.search(cache_control):
        return MIN_MAX_AGE_S
    return DEFAULT_MAX_AGE_S


__all__ = ["JwksCache", "PublicKey", "b64url_decode", "parse_jwks", "urllib_fetch"]
