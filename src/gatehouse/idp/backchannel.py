"""The IdP's back channel: token endpoint, userinfo and revocation.

Token endpoint (RFC 6749 §3.2, OpenID Connect Core §3.1.3):

- ``authorization_code``: the code is *taken* from the store (single use, even across
  workers), then client, ``redirect_uri`` and the PKCE verifier are checked. A code is
  consumed by a failed attempt too, so a verifier cannot be guessed. A code presented a
  second time revokes everything issued from it (RFC 6749 §4.1.2).
- ``refresh_token`` (only issued for the ``offline_access`` scope): rotation; the old
  token is taken, a new one returned; presenting a spent one revokes the family
  (OAuth 2.0 Security BCP §4.14.2).

Every successful redemption starts a *family* (``fam:<id>`` in the store); access and
refresh tokens are valid only while their family is, so revocation is one delete.
"""

from __future__ import annotations

import hmac
import logging
import re
from typing import TYPE_CHECKING, Any

from ..http.messages import Request, Response
from .clients import ClientAuthError, ClientRegistration, authenticate_client
from .tokens import MAX_TOKEN_CHARS, Grant, half_hash, new_token, pkce_s256, token_hash

if TYPE_CHECKING:
    from ..config.auth import IdpUser
    from .provider import BuiltinProvider

log = logging.getLogger("gatehouse.idp")

#: RFC 7636 §4.1: 43-128 characters of [A-Z a-z 0-9 - . _ ~].
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


def _oauth_error(
    error: str, description: str, status: int = 400, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """RFC 6749 §5.2 error body (fixed descriptions: never exception text)."""
    return Response.json(
        {"error": error, "error_description": description}, status, [*_NO_STORE, *headers]
    )


class BackChannel:
    """Token, userinfo and revocation endpoints of one :class:`BuiltinProvider`."""

    def __init__(self, provider: BuiltinProvider) -> None:
        self.p = provider

    # -- helpers -------------------------------------------------------------------------
    async def _family_alive(self, family: str) -> bool:
        return bool(family) and await self.p.store.get("fam:" + family) is not None

    async def _revoke_family(self, family: str, why: str) -> None:
        if family and family != "-":
            await self.p.store.take("fam:" + family)
            log.warning("IdP token family revoked: %s", why)

    def _user_claims(self, user: IdpUser) -> dict[str, Any]:
        return {
            "sub": user.username,
            "email": user.email,
            "email_verified": True,
            "name": user.name or user.username,
            "preferred_username": user.username,
            "groups": list(user.groups),
        }

    async def _issue(self, grant: Grant, user: IdpUser, *, with_nonce: bool) -> Response:
        s = self.p.settings
        now = int(self.p.clock())
        access = new_token()
        await self.p.store.put("at:" + token_hash(access), grant.dumps(), s.access_token_ttl_s)
        claims: dict[str, Any] = {
            "iss": self.p.issuer,
            "aud": grant.client_id,
            "azp": grant.client_id,
            "iat": now,
            "exp": now + int(s.id_token_ttl_s),
            "auth_time": grant.auth_time,
            "sid": grant.sid,
            "at_hash": half_hash(access),
            **self._user_claims(user),
        }
        # OpenID Connect Core §12.2: a refreshed ID token carries no new nonce.
        if with_nonce and grant.nonce:
            claims["nonce"] = grant.nonce
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": int(s.access_token_ttl_s),
            "id_token": self.p.key.sign(claims),
            "scope": " ".join(grant.scope),
        }
        if "offline_access" in grant.scope:
            refresh = new_token()
            await self.p.store.put(
                "rt:" + token_hash(refresh), grant.dumps(), s.refresh_token_ttl_s
            )
            # Sliding family lifetime: as long as its newest refresh token.
            await self.p.store.put("fam:" + grant.family, grant.sub, s.refresh_token_ttl_s)
            body["refresh_token"] = refresh
        return Response.json(body, headers=_NO_STORE)

    # -- token endpoint ------------------------------------------------------------------
    async def token(self, request: Request) -> Response:
        if request.method != "POST":
            return _oauth_error("invalid_request", "use POST", 405, (("Allow", "POST"),))
        form = request.form()
        try:
            client = authenticate_client(request, form, self.p.clients)
        except ClientAuthError as exc:
            log.info("IdP client authentication failed: %s", exc)
            extra = (("WWW-Authenticate", 'Basic realm="gatehouse-idp"'),) if exc.used_basic else ()
            return _oauth_error("invalid_client", "client authentication failed", 401, extra)
        grant_type = form.get("grant_type", "")
        if grant_type == "authorization_code":
            return await self._code_grant(client, form)
        if grant_type == "refresh_token":
            return await self._refresh_grant(client, form)
        return _oauth_error("unsupported_grant_type", "unsupported grant_type")

    async def _spend(
        self, client: ClientRegistration, token: str, kind: str, param: str, what: str
    ) -> tuple[Grant, str] | Response:
        """Take a single-use ``kind`` token (a code or refresh token) for ``client``.

        A token presented again after its use revokes everything issued from it (RFC 6749
        §4.1.2 and §10.4, OAuth 2.0 Security BCP §4.14). Returns the grant and the
        token's hash, or the error response to send.
        """
        if not token or len(token) > MAX_TOKEN_CHARS:
            return _oauth_error("invalid_request", f"{param} is required")
        h = token_hash(token)
        raw = await self.p.store.take(f"{kind}:{h}")
        if raw is None:
            family = await self.p.store.get(f"{kind}used:{h}")
            if family is not None:
                await self._revoke_family(family, f"{what} presented twice")
            return _oauth_error("invalid_grant", f"invalid, expired or used {what}")
        grant = Grant.loads(raw)
        if grant is None or grant.client_id != client.client_id:
            return _oauth_error("invalid_grant", f"invalid, expired or used {what}")
        return grant, h

    async def _code_grant(self, client: ClientRegistration, form: dict[str, str]) -> Response:
        spent = await self._spend(client, form.get("code", ""), "code", "code", "code")
        if isinstance(spent, Response):
            return spent
        grant, h = spent
        family = new_token()
        # Remember the spent code as long as what it could have produced lives.
        await self.p.store.put("codeused:" + h, family, self.p.settings.refresh_token_ttl_s)
        if form.get("redirect_uri") != grant.redirect_uri:
            return _oauth_error("invalid_grant", "redirect_uri does not match")
        verifier = form.get("code_verifier", "")
        if not _VERIFIER.fullmatch(verifier) or not hmac.compare_digest(
            pkce_s256(verifier).encode(), grant.code_challenge.encode()
        ):
            return _oauth_error("invalid_grant", "PKCE verification failed")
        user = self.p.users.get(grant.sub)
        if user is None:
            return _oauth_error("invalid_grant", "the user no longer exists")
        await self.p.store.put("fam:" + family, grant.sub, self.p.settings.refresh_token_ttl_s)
        issued = Grant(
            client_id=grant.client_id,
            sub=grant.sub,
            scope=grant.scope,
            auth_time=grant.auth_time,
            sid=grant.sid,
            family=family,
            nonce=grant.nonce,
        )
        return await self._issue(issued, user, with_nonce=True)

    async def _refresh_grant(self, client: ClientRegistration, form: dict[str, str]) -> Response:
        spent = await self._spend(
            client, form.get("refresh_token", ""), "rt", "refresh_token", "refresh token"
        )
        if isinstance(spent, Response):
            return spent
        grant, h = spent
        await self.p.store.put("rtused:" + h, grant.family, self.p.settings.refresh_token_ttl_s)
        if not await self._family_alive(grant.family):
            return _oauth_error("invalid_grant", "the grant was revoked")
        user = self.p.users.get(grant.sub)
        if user is None:
            await self._revoke_family(grant.family, "user removed")
            return _oauth_error("invalid_grant", "the user no longer exists")
        scope = grant.scope
        if "scope" in form:
            wanted = tuple(form["scope"].split())
            if not set(wanted) <= set(grant.scope):
                return _oauth_error("invalid_scope", "scope exceeds the original grant")
            # offline_access is kept so the client can keep refreshing (RFC 6749 §6).
            scope = tuple(s for s in grant.scope if s in wanted or s == "offline_access")
        issued = Grant(
            client_id=grant.client_id,
            sub=grant.sub,
            scope=scope,
            auth_time=grant.auth_time,
            sid=grant.sid,
            family=grant.family,
        )
        return await self._issue(issued, user, with_nonce=False)

    # -- userinfo ------------------------------------------------------------------------
    async def userinfo(self, request: Request) -> Response:
        """OpenID Connect Core §5.3 with a Bearer access token (RFC 6750 §2.1)."""
        if request.method not in ("GET", "POST"):
            return _oauth_error(
                "invalid_request", "use GET or POST", 405, (("Allow", "GET, POST"),)
            )
        header = request.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Response.json(
                {"error": "invalid_request"},
                401,
                [*_NO_STORE, ("WWW-Authenticate", 'Bearer realm="gatehouse-idp"')],
            )
        grant = None
        if len(token) <= MAX_TOKEN_CHARS:
            raw = await self.p.store.get("at:" + token_hash(token))
            grant = Grant.loads(raw) if raw else None
        user = self.p.users.get(grant.sub) if grant else None
        if grant is None or user is None or not await self._family_alive(grant.family):
            return Response.json(
                {"error": "invalid_token"},
                401,
                [
                    *_NO_STORE,
                    ("WWW-Authenticate", 'Bearer realm="gatehouse-idp", error="invalid_token"'),
                ],
            )
        return Response.json(self._user_claims(user), headers=_NO_STORE)

    # -- revocation ----------------------------------------------------------------------
    async def revoke(self, request: Request) -> Response:
        """RFC 7009: revoke a refresh token (its whole family) or an access token."""
        if request.method != "POST":
            return _oauth_error("invalid_request", "use POST", 405, (("Allow", "POST"),))
        form = request.form()
        try:
            client = authenticate_client(request, form, self.p.clients)
        except ClientAuthError as exc:
            extra = (("WWW-Authenticate", 'Basic realm="gatehouse-idp"'),) if exc.used_basic else ()
            return _oauth_error("invalid_client", "client authentication failed", 401, extra)
        token = form.get("token", "")
        if not token or len(token) > MAX_TOKEN_CHARS:
            return _oauth_error("invalid_request", "token is required")
        h = token_hash(token)
        order = ("at:", "rt:") if form.get("token_type_hint") == "access_token" else ("rt:", "at:")
        for prefix in order:
            raw = await self.p.store.get(prefix + h)
            grant = Grant.loads(raw) if raw else None
            # §2.1: a token of another client is left alone (and the answer is the same).
            if grant is None or grant.client_id != client.client_id:
                continue
            await self.p.store.take(prefix + h)
            if prefix == "rt:":
                await self._revoke_family(grant.family, "refresh token revoked by its client")
            break
        # §2.2: 200 whether or not the token was valid.
        return Response(200, [*_NO_STORE], b"")


__all__ = ["BackChannel"]
