"""The identity provider's metadata (OpenID Connect Discovery 1.0) and signing keys (JWKS).

Theory of operation: :class:`Discovery` fetches ``{idp_provider_url}/.well-known/
openid-configuration`` on first use, checks that the document names the issuer it was
fetched for (§4.3: otherwise a compromised or mistyped URL could vouch for another
issuer's tokens), and keeps it for :data:`METADATA_TTL_S`. Keys are fetched from
``jwks_uri`` the same way; a token signed with a ``kid`` we do not hold triggers one
refetch (the IdP may have rotated), at most once per :data:`JWKS_MIN_REFETCH_S` so that
tokens with random ``kid`` values cannot make us hammer the IdP. Concurrent callers share
one fetch. Every network or format failure is an :class:`IdpUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey, import_key

from ..observability.dependencies import OPERATION
from .errors import IdpUnavailable
from .providers import TENANT_PLACEHOLDER, ProviderQuirks, issuer_matches

#: How long metadata and keys are trusted before a refetch (seconds).
METADATA_TTL_S = 3600.0
#: Minimum spacing of unknown-kid refetches (seconds): bounds the load a forged token causes.
JWKS_MIN_REFETCH_S = 30.0
#: Largest metadata or JWKS document accepted (bytes); real ones are a few KiB.
MAX_DOCUMENT_BYTES = 512 * 1024

WELL_KNOWN_PATH = "/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of the discovery document the relying party uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    revocation_endpoint: str | None = None
    end_session_endpoint: str | None = None
    #: Empty when the IdP does not say: then only RS256 (§3 of Discovery: the default).
    id_token_signing_alg_values_supported: tuple[str, ...] = ("RS256",)
    token_endpoint_auth_methods_supported: tuple[str, ...] = ("client_secret_basic",)
    code_challenge_methods_supported: tuple[str, ...] = ()
    #: RFC 9207: the IdP adds ``iss`` to authorization responses.
    authorization_response_iss_parameter_supported: bool = False


def parse_metadata(doc: Any, configured_url: str, quirks: ProviderQuirks) -> ProviderMetadata:
    """Validate a discovery document fetched from ``configured_url``.

    Raises:
        IdpUnavailable: a required field is missing or not a URL, or the issuer differs.
    """
    if not isinstance(doc, Mapping):
        raise IdpUnavailable("discovery document is not a JSON object")
    issuer = _url(doc, "issuer", required=True)
    issuer_ok = issuer_matches(configured_url, issuer)
    if not issuer_ok and quirks.tenant_issuer and TENANT_PLACEHOLDER in issuer:
        # Azure multi-tenant endpoints: the issuer is a template, checked per token.
        issuer_ok = httpx.URL(issuer).host == httpx.URL(configured_url).host
    if not issuer_ok:
        raise IdpUnavailable(
            f"discovery issuer {issuer!r} does not match idp_provider_url {configured_url!r}"
        )
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=_url(doc, "authorization_endpoint", required=True),
        token_endpoint=_url(doc, "token_endpoint", required=True),
        jwks_uri=_url(doc, "jwks_uri", required=True),
        userinfo_endpoint=_url(doc, "userinfo_endpoint") or None,
        revocation_endpoint=_url(doc, "revocation_endpoint") or None,
        end_session_endpoint=_url(doc, "end_session_endpoint") or None,
        id_token_signing_alg_values_supported=_strings(
            doc, "id_token_signing_alg_values_supported", ("RS256",)
        ),
        token_endpoint_auth_methods_supported=_strings(
            doc, "token_endpoint_auth_methods_supported", ("client_secret_basic",)
        ),
        code_challenge_methods_supported=_strings(doc, "code_challenge_methods_supported", ()),
        authorization_response_iss_parameter_supported=(
            doc.get("authorization_response_iss_parameter_supported") is True
        ),
    )


def parse_jwks(doc: Any) -> tuple[Key, ...]:
    """The signature keys of a JWKS; keys we cannot use (encryption, unknown types) are skipped."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("keys"), list):
        raise IdpUnavailable("JWKS document has no 'keys' list")
    keys: list[Key] = []
    for item in doc["keys"]:
        if not isinstance(item, Mapping) or item.get("use", "sig") != "sig":
            continue
        if item.get("kty") not in ("RSA", "EC", "OKP"):
            # Symmetric keys never come from a JWKS: HMAC uses only the client secret.
            continue
        try:
            key = import_key(dict(item))
        except (JoseError, ValueError, TypeError):
            continue
        if isinstance(key, RSAKey | ECKey | OKPKey) and not key.is_private:
            keys.append(key)
    return tuple(keys)


def _url(doc: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    value = doc.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise IdpUnavailable(f"discovery document field {name!r} is missing or not a URL")
    return value


def _strings(doc: Mapping[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = doc.get(name)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise IdpUnavailable(f"discovery document field {name!r} is not a list of strings")
    return tuple(value)


async def fetch_json(client: httpx.AsyncClient, url: str, operation: str = "document") -> Any:
    """GET a JSON document from the IdP; any failure is an :class:`IdpUnavailable`."""
    try:
        response = await client.get(
            url, headers={"Accept": "application/json"}, extensions={OPERATION: operation}
        )
    except httpx.HTTPError as exc:
        raise IdpUnavailable(f"GET {url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise IdpUnavailable(f"GET {url}: status {response.status_code}")
    if len(response.content) > MAX_DOCUMENT_BYTES:
        raise IdpUnavailable(f"GET {url}: document larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        return json.loads(response.content)
    except ValueError as exc:
        raise IdpUnavailable(f"GET {url}: not JSON") from exc


class Discovery:
    """Cached metadata and keys of one identity provider."""

    def __init__(
        self,
        provider_url: str,
        quirks: ProviderQuirks,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        ttl_s: float = METADATA_TTL_S,
        min_refetch_s: float = JWKS_MIN_REFETCH_S,
    ) -> None:
        self.provider_url = provider_url
        self.quirks = quirks
        self._client = client
        self._clock = clock
        self._ttl_s = ttl_s
        self._min_refetch_s = min_refetch_s
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = 0.0
        self._keys: tuple[Key, ...] | None = None
        self._keys_at = 0.0
        self._lock = asyncio.Lock()

    async def metadata(self) -> ProviderMetadata:
        """The discovery document, fetched at most once per TTL."""
        if self._metadata is not None and self._clock() - self._metadata_at < self._ttl_s:
            return self._metadata
        async with self._lock:
            if self._metadata is None or self._clock() - self._metadata_at >= self._ttl_s:
                url = self.provider_url.rstrip("/") + WELL_KNOWN_PATH
                doc = await fetch_json(self._client, url, "discovery")
                self._metadata = parse_metadata(doc, self.provider_url, self.quirks)
                self._metadata_at = self._clock()
            return self._metadata

    async def keys(self, kid: str | None = None) -> tuple[Key, ...]:
        """The IdP's signature keys; refetched once (rate limited) when ``kid`` is unknown."""
        now = self._clock()
        if self._keys is not None and now - self._keys_at < self._ttl_s:
            if kid is None or _has_kid(self._keys, kid):
                return self._keys
            if now - self._keys_at < self._min_refetch_s:
                return self._keys
        metadata = await self.metadata()
        async with self._lock:
            # Another caller may have refetched while we waited.
            keys = self._keys
            if keys is None or self._clock() - self._keys_at >= self._min_refetch_s:
                keys = parse_jwks(await fetch_json(self._client, metadata.jwks_uri, "jwks"))
                self._keys, self._keys_at = keys, self._clock()
            return keys


def _has_kid(keys: tuple[Key, ...], kid: str) -> bool:
    return any(k.kid == kid for k in keys)
