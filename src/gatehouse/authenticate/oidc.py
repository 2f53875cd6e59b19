"""The OpenID Connect protocol messages, without I/O.

Each function either builds the next request (a URL to send the browser to, or a
:class:`HttpRequest` for the token/revocation endpoints) or consumes a response (a
callback's query parameters, a token endpoint's status and body). The driver in
:mod:`gatehouse.authenticate.relying_party` does the sending, in the manner of httpx's
``Auth.auth_flow``, so everything here is tested without a network.

References: OpenID Connect Core 1.0 §3.1 (code flow), RFC 7636 (PKCE), RFC 6749 §2.3.1
and §5 (client authentication, token responses), RFC 7009 (revocation), RFC 9207
(``iss`` in authorization responses), OpenID Connect RP-Initiated Logout 1.0.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote_plus, urlsplit, urlunsplit

from gatehouse.config.options import Options
from gatehouse.errors import ConfigError

from .discovery import ProviderMetadata
from .errors import (
    AuthorizationDenied,
    IdpUnavailable,
    InvalidState,
    TokenRequestRejected,
)
from .providers import ProviderQuirks, quirks_for
from .query import query_string

#: Largest token endpoint response accepted (bytes).
MAX_TOKEN_RESPONSE_BYTES = 64 * 1024
#: Authorization parameters the operator cannot override through ``idp_request_params``:
#: they carry the flow's security (state, nonce, PKCE) or identify the client.
RESERVED_AUTH_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "response_mode",
        "request",
        "request_uri",
    }
)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """This relying party as registered at the IdP."""

    client_id: str
    client_secret: str
    #: The authenticate service's callback URL (``authenticate_service_url`` +
    #: ``authenticate_callback_path``), registered at the IdP.
    redirect_uri: str
    scopes: tuple[str, ...] = ("openid", "profile", "email", "offline_access")
    request_params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    quirks: ProviderQuirks = field(default_factory=lambda: quirks_for("oidc"))

    def __post_init__(self) -> None:
        if not self.client_id:
            raise ValueError("idp_client_id is required")
        if "openid" not in self.scopes:
            raise ValueError("idp_scopes must include 'openid'")
        if not self.redirect_uri.startswith(("https://", "http://")):
            raise ValueError("redirect_uri must be an absolute http(s) URL")

    @classmethod
    def from_options(cls, options: Options, redirect_uri: str) -> ClientConfig:
        """Build from :class:`gatehouse.config.Options` (``idp_*`` keys)."""
        secret = options.idp_client_secret or ""
        if not secret and options.idp_client_secret_file:
            try:
                secret = Path(options.idp_client_secret_file).expanduser().read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError([f"idp_client_secret_file: cannot read ({exc})"]) from exc
        quirks = quirks_for(options.idp_provider)
        scopes = tuple(s for s in options.idp_scopes if s not in quirks.drop_scopes)
        return cls(
            client_id=options.idp_client_id or "",
            client_secret=secret,
            redirect_uri=redirect_uri,
            scopes=scopes,
            request_params=MappingProxyType(dict(options.idp_request_params)),
            quirks=quirks,
        )


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A back-channel request to the IdP: always a form POST."""

    url: str
    form: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """A successful token endpoint response (RFC 6749 §5.1)."""

    access_token: str
    token_type: str
    id_token: str = ""
    refresh_token: str = ""
    #: Seconds; ``None`` when the IdP does not say.
    expires_in: float | None = None
    scope: str = ""


def new_pkce() -> tuple[str, str]:
    """A PKCE ``(code_verifier, code_challenge)`` pair, S256 (RFC 7636 §4.1-4.2)."""
    verifier = secrets.token_urlsafe(48)  # 64 characters of the unreserved set
    return verifier, pkce_challenge(verifier)


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorization_url(
    meta: ProviderMetadata, cfg: ClientConfig, *, state: str, nonce: str, code_challenge: str
) -> str:
    """The URL that starts the code flow at the IdP (Core §3.1.2.1)."""
    if (
        meta.code_challenge_methods_supported
        and "S256" not in meta.code_challenge_methods_supported
    ):
        raise IdpUnavailable("the IdP does not support PKCE S256")
    params: dict[str, str] = dict(cfg.quirks.auth_params)
    params.update({k: v for k, v in cfg.request_params.items() if k not in RESERVED_AUTH_PARAMS})
    params.update(
        response_type="code",
        client_id=cfg.client_id,
        redirect_uri=cfg.redirect_uri,
        scope=" ".join(cfg.scopes),
        state=state,
        nonce=nonce,
        code_challenge=code_challenge,
        code_challenge_method="S256",
    )
    return _with_query(meta.authorization_endpoint, params)


def parse_callback(params: Mapping[str, str], meta: ProviderMetadata) -> tuple[str, str]:
    """``(code, state)`` from the redirect back to ``/oauth2/callback``.

    Raises:
        InvalidState: no state, or an ``iss`` that is not our IdP's (RFC 9207 mix-up).
        AuthorizationDenied: the IdP answered with ``error``.
    """
    state = params.get("state", "")
    if not state:
        raise InvalidState("callback without state")
    iss = params.get("iss")
    if iss is not None and iss != meta.issuer:
        raise InvalidState(f"callback iss {iss!r} is not the configured issuer")
    if iss is None and meta.authorization_response_iss_parameter_supported:
        raise InvalidState("callback without iss although the IdP announces RFC 9207")
    if "error" in params:
        raise AuthorizationDenied(params["error"][:200], params.get("error_description", "")[:500])
    code = params.get("code", "")
    if not code:
        raise InvalidState("callback without code")
    return code, state


def code_request(
    meta: ProviderMetadata, cfg: ClientConfig, *, code: str, code_verifier: str
) -> HttpRequest:
    """Redeem an authorization code (Core §3.1.3.1, RFC 7636 §4.5)."""
    return _authenticated(
        meta.token_endpoint,
        meta,
        cfg,
        [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", cfg.redirect_uri),
            ("code_verifier", code_verifier),
        ],
    )


def refresh_request(meta: ProviderMetadata, cfg: ClientConfig, refresh_token: str) -> HttpRequest:
    """Use a refresh token (Core §12.1)."""
    return _authenticated(
        meta.token_endpoint,
        meta,
        cfg,
        [("grant_type", "refresh_token"), ("refresh_token", refresh_token)],
    )


def revocation_request(
    meta: ProviderMetadata, cfg: ClientConfig, token: str, token_type_hint: str
) -> HttpRequest | None:
    """Revoke a token (RFC 7009 §2.1); ``None`` when the IdP has no revocation endpoint."""
    if not meta.revocation_endpoint:
        return None
    return _authenticated(
        meta.revocation_endpoint,
        meta,
        cfg,
        [("token", token), ("token_type_hint", token_type_hint)],
    )


def end_session_url(
    meta: ProviderMetadata,
    cfg: ClientConfig,
    *,
    id_token_hint: str,
    post_logout_redirect_uri: str,
    state: str = "",
) -> str | None:
    """Where to send the browser to end the IdP session (RP-Initiated Logout §2).

    ``None`` when the IdP offers no logout endpoint.
    """
    if meta.end_session_endpoint:
        params = {"client_id": cfg.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        if state:
            params["state"] = state
        return _with_query(meta.end_session_endpoint, params)
    if cfg.quirks.fallback_logout_path:
        base = meta.issuer if meta.issuer.endswith("/") else meta.issuer + "/"
        return _with_query(
            base + cfg.quirks.fallback_logout_path,
            {"client_id": cfg.client_id, "returnTo": post_logout_redirect_uri},
        )
    return None


def parse_token_response(status: int, content: bytes) -> TokenResponse:
    """Consume the token endpoint's answer.

    Raises:
        TokenRequestRejected: a 4xx with an OAuth error (e.g. ``invalid_grant`` for a
            reused code or a revoked refresh token).
        IdpUnavailable: a 5xx, or a body that is not a token response.
    """
    if len(content) > MAX_TOKEN_RESPONSE_BYTES:
        raise IdpUnavailable("token response too large")
    try:
        body = json.loads(content) if content else {}
    except ValueError:
        body = None
    if 400 <= status < 500:
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            raise TokenRequestRejected(
                body["error"][:100],
                str(body.get("error_description", ""))[:500],
                status_code=status,
            )
        raise TokenRequestRejected("invalid_request", "no OAuth error in body", status_code=status)
    if status != 200 or not isinstance(body, dict):
        raise IdpUnavailable(f"token endpoint answered {status}")
    access_token = body.get("access_token")
    token_type = body.get("token_type")
    if not isinstance(access_token, str) or not isinstance(token_type, str):
        raise IdpUnavailable("token response without access_token/token_type")
    if token_type.lower() != "bearer":
        raise IdpUnavailable(f"token type {token_type!r} is not Bearer")
    expires_in = body.get("expires_in")
    return TokenResponse(
        access_token=access_token,
        token_type=token_type,
        id_token=_str(body.get("id_token")),
        refresh_token=_str(body.get("refresh_token")),
        expires_in=float(expires_in)
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
        else None,
        scope=_str(body.get("scope")),
    )


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _authenticated(
    url: str, meta: ProviderMetadata, cfg: ClientConfig, form: list[tuple[str, str]]
) -> HttpRequest:
    """Add client authentication as the IdP allows, preferring HTTP Basic (RFC 6749 §2.3.1)."""
    methods = meta.token_endpoint_auth_methods_supported
    headers = [("Accept", "application/json")]
    if "client_secret_basic" in methods:
        # §2.3.1: id and secret are form-urlencoded before being joined and base64'd.
        pair = f"{quote_plus(cfg.client_id)}:{quote_plus(cfg.client_secret)}"
        headers.append(("Authorization", "Basic " + base64.b64encode(pair.encode()).decode()))
    elif "client_secret_post" in methods:
        form = [*form, ("client_id", cfg.client_id), ("client_secret", cfg.client_secret)]
    else:
        raise IdpUnavailable(
            f"the IdP supports none of client_secret_basic/client_secret_post: {methods!r}"
        )
    return HttpRequest(url=url, form=tuple(form), headers=tuple(headers))


def _with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = query_string(params.items())
    if parts.query:
        query = parts.query + "&" + query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
