"""The relying party's I/O driver: sends what :mod:`.oidc` builds, validates what comes back.

One :class:`RelyingParty` per configured IdP, sharing one ``httpx.AsyncClient`` (from
:func:`.http_client.new_http_client`: pooled, with timeouts and size limits) for discovery,
keys, tokens, userinfo and revocation. Every transport failure becomes
:class:`IdpUnavailable`; every refusal or bad token an :class:`AuthenticationError`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import httpx

from gatehouse.sessions.model import Session

from ..observability.dependencies import OPERATION
from . import oidc
from .discovery import Discovery, ProviderMetadata
from .errors import IdpUnavailable, InvalidIdToken, TokenRequestRejected
from .http_client import DEFAULT_TIMEOUT, IdpClient, new_http_client
from .oidc import ClientConfig, HttpRequest, TokenResponse
from .tokens import (
    DEFAULT_LEEWAY_S,
    PROTOCOL_CLAIMS,
    AccessTokenRules,
    IdTokenRules,
    UnknownSigningKey,
    parse_token,
    validate_access_token,
    validate_id_token,
)

MAX_USERINFO_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Identity:
    """Who signed in, and the IdP's tokens for them."""

    #: The stable user id (``sub``, or a provider's better claim such as Azure's ``oid``).
    user_id: str
    email: str
    name: str
    groups: tuple[str, ...]
    #: ID token claims merged with userinfo (userinfo wins for non-protocol claims).
    claims: Mapping[str, Any]
    id_token: str
    access_token: str
    refresh_token: str
    #: Unix time when the access token (else the ID token) expires; 0 when unknown.
    tokens_expire_at: float = 0.0
    #: The ID token's ``sub`` (kept apart from ``user_id``: refreshes compare it).
    subject: str = field(default="")

    def to_session(self, session_id: str, *, now: float, expires_at: float) -> Session:
        """A new :class:`Session` record for this identity."""
        return Session(
            id=session_id,
            user_id=self.user_id,
            email=self.email,
            name=self.name,
            groups=self.groups,
            claims=self.claims,
            issued_at=now,
            expires_at=expires_at,
            last_refresh_at=now,
            tokens_expire_at=self.tokens_expire_at,
            id_token=self.id_token,
            access_token=self.access_token,
            refresh_token=self.refresh_token,
        )


class RelyingParty:
    """Talks to one OpenID provider on gatehouse's behalf."""

    def __init__(
        self,
        config: ClientConfig,
        discovery: Discovery,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        leeway_s: int = DEFAULT_LEEWAY_S,
    ) -> None:
        self.config = config
        self.discovery = discovery
        self._client = client
        self._clock = clock
        self._leeway_s = leeway_s

    async def metadata(self) -> ProviderMetadata:
        return await self.discovery.metadata()

    async def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        meta = await self.discovery.metadata()
        return oidc.authorization_url(
            meta, self.config, state=state, nonce=nonce, code_challenge=code_challenge
        )

    async def redeem_code(self, code: str, *, code_verifier: str, nonce: str) -> Identity:
        """Exchange the callback's code for tokens and a validated identity."""
        meta = await self.discovery.metadata()
        request = oidc.code_request(meta, self.config, code=code, code_verifier=code_verifier)
        tokens = await self._token_call(request)
        if not tokens.id_token:
            raise InvalidIdToken("token response has no id_token (is 'openid' in idp_scopes?)")
        claims = await self.validate_id_token(tokens.id_token, nonce=nonce)
        return await self._identity(meta, tokens, claims, previous=None)

    async def refresh(self, previous: Identity | Session) -> Identity:
        """Refresh with the refresh token (Core §12).

        A new ID token must name the same issuer and subject (§12.2); without one the
        previous claims are kept. Userinfo is read again so groups stay current.

        Raises:
            TokenRequestRejected: the refresh token is expired or revoked: end the session.
            IdpUnavailable: the IdP could not be reached: keep the session, try later.
        """
        if not previous.refresh_token:
            raise TokenRequestRejected("invalid_grant", "session has no refresh token")
        meta = await self.discovery.metadata()
        tokens = await self._token_call(
            oidc.refresh_request(meta, self.config, previous.refresh_token)
        )
        old_claims = dict(previous.claims)
        if tokens.id_token:
            claims = await self.validate_id_token(tokens.id_token, nonce=None)
            if claims.get("sub") != old_claims.get("sub") or claims.get("iss") != old_claims.get(
                "iss"
            ):
                raise InvalidIdToken("refreshed ID token names another subject or issuer")
        else:
            claims = {k: v for k, v in old_claims.items()}
            tokens = TokenResponse(
                access_token=tokens.access_token,
                token_type=tokens.token_type,
                id_token=previous.id_token,
                refresh_token=tokens.refresh_token,
                expires_in=tokens.expires_in,
                scope=tokens.scope,
            )
        if not tokens.refresh_token:
            # RFC 6749 §6: the IdP may keep the old refresh token valid and send none.
            tokens = TokenResponse(
                access_token=tokens.access_token,
                token_type=tokens.token_type,
                id_token=tokens.id_token,
                refresh_token=previous.refresh_token,
                expires_in=tokens.expires_in,
                scope=tokens.scope,
            )
        return await self._identity(meta, tokens, claims, previous=previous)

    async def revoke(
        self,
        token: str,
        token_type_hint: str = "refresh_token",  # noqa: S107 - a hint name
    ) -> bool:
        """Revoke ``token`` (RFC 7009). False when the IdP has no revocation endpoint.

        Raises:
            IdpUnavailable: the IdP could not be reached or answered an error.
        """
        meta = await self.discovery.metadata()
        request = oidc.revocation_request(meta, self.config, token, token_type_hint)
        if request is None:
            return False
        response = await self._post(request, "revocation")
        if response.status_code != 200:
            raise IdpUnavailable(f"revocation endpoint answered {response.status_code}")
        return True

    async def end_session_url(
        self, *, id_token_hint: str, post_logout_redirect_uri: str, state: str = ""
    ) -> str | None:
        meta = await self.discovery.metadata()
        return oidc.end_session_url(
            meta,
            self.config,
            id_token_hint=id_token_hint,
            post_logout_redirect_uri=post_logout_redirect_uri,
            state=state,
        )

    async def validate_id_token(self, token: str, *, nonce: str | None) -> dict[str, Any]:
        """Validate an ID token from this IdP; refetches the JWKS once for an unknown kid."""
        meta = await self.discovery.metadata()
        rules = IdTokenRules(
            issuer=meta.issuer,
            client_id=self.config.client_id,
            client_secret=self.config.client_secret,
            allowed_algs=meta.id_token_signing_alg_values_supported,
            nonce=nonce,
            tenant_issuer=self.config.quirks.tenant_issuer,
            leeway_s=self._leeway_s,
        )
        parsed = parse_token(token)
        kid = parsed.headers().get("kid")
        keys = await self.discovery.keys(kid if isinstance(kid, str) else None)
        try:
            return validate_id_token(parsed, keys, rules, self._clock())
        except UnknownSigningKey:
            keys = await self.discovery.keys(kid if isinstance(kid, str) else None)
            return validate_id_token(parsed, keys, rules, self._clock())

    async def validate_access_token(self, token: str, audiences: tuple[str, ...]) -> dict[str, Any]:
        """Validate a JWT access token from this IdP whose ``aud`` is one of ``audiences``;
        refetches the JWKS once (rate limited) for an unknown kid."""
        meta = await self.discovery.metadata()
        rules = AccessTokenRules(
            issuer=meta.issuer,
            audiences=audiences,
            allowed_algs=meta.id_token_signing_alg_values_supported,
            tenant_issuer=self.config.quirks.tenant_issuer,
            leeway_s=self._leeway_s,
        )
        parsed = parse_token(token)
        kid = parsed.headers().get("kid")
        keys = await self.discovery.keys(kid if isinstance(kid, str) else None)
        try:
            return validate_access_token(parsed, keys, rules, self._clock())
        except UnknownSigningKey:
            keys = await self.discovery.keys(kid if isinstance(kid, str) else None)
            return validate_access_token(parsed, keys, rules, self._clock())

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        """The userinfo claims (Core §5.3); ``{}`` when the IdP has no userinfo endpoint."""
        meta = await self.discovery.metadata()
        if not meta.userinfo_endpoint:
            return {}
        try:
            response = await self._client.get(
                meta.userinfo_endpoint,
                headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
                extensions={OPERATION: "userinfo"},
            )
        except httpx.HTTPError as exc:
            raise IdpUnavailable(f"userinfo: {type(exc).__name__}: {exc}") from exc
        if response.status_code in (401, 403):
            raise TokenRequestRejected(
                "invalid_token",
                "userinfo refused the access token",
                status_code=response.status_code,
            )
        if response.status_code != 200 or len(response.content) > MAX_USERINFO_BYTES:
            raise IdpUnavailable(f"userinfo answered {response.status_code}")
        if not response.headers.get("content-type", "").startswith("application/json"):
            # Signed/encrypted userinfo (application/jwt) is not supported: use the ID token.
            return {}
        try:
            body = json.loads(response.content)
        except ValueError as exc:
            raise IdpUnavailable("userinfo is not JSON") from exc
        if not isinstance(body, dict):
            raise IdpUnavailable("userinfo is not a JSON object")
        return body

    async def _identity(
        self,
        meta: ProviderMetadata,
        tokens: TokenResponse,
        id_claims: dict[str, Any],
        previous: Identity | Session | None,
    ) -> Identity:
        info = await self.userinfo(tokens.access_token)
        if info and info.get("sub") != id_claims.get("sub"):
            # Core §5.3.2: a userinfo response for another subject must not be used.
            raise InvalidIdToken("userinfo sub does not match the ID token")
        claims = dict(id_claims)
        for name, value in info.items():
            if name not in PROTOCOL_CLAIMS:
                claims[name] = value
        quirks = self.config.quirks
        now = self._clock()
        if tokens.expires_in is not None:
            expires_at = now + tokens.expires_in
        else:
            exp = id_claims.get("exp")
            expires_at = float(exp) if isinstance(exp, int | float) else 0.0
        display_name = claims.get("name")
        return Identity(
            user_id=quirks.subject(claims),
            email=quirks.email(claims),
            name=display_name if isinstance(display_name, str) else "",
            groups=quirks.groups(claims),
            claims=MappingProxyType(claims),
            id_token=tokens.id_token,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            tokens_expire_at=expires_at,
            subject=str(claims.get("sub", "")),
        )

    async def _token_call(self, request: HttpRequest) -> TokenResponse:
        response = await self._post(request, "token")
        return oidc.parse_token_response(response.status_code, response.content)

    async def _post(self, request: HttpRequest, operation: str) -> httpx.Response:
        try:
            if isinstance(self._client, IdpClient):
                return await self._client.post_form(
                    request.url, request.form, request.headers, operation
                )
            return await self._client.post(
                request.url,
                data=dict(request.form),
                headers=dict(request.headers),
                extensions={OPERATION: operation},
            )
        except httpx.HTTPError as exc:
            raise IdpUnavailable(f"POST {request.url}: {type(exc).__name__}: {exc}") from exc


__all__ = ["DEFAULT_TIMEOUT", "Identity", "RelyingParty", "new_http_client"]
