"""Authentication, identity-provider, cookie and session-store options.

Owned by ``authenticate/``, ``sessions/`` and ``idp/``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from ..constants import DEFAULT_AUTHENTICATE_CALLBACK_PATH
from .base import StrictModel, StringList, any_case
from .durations import Duration

_PROVIDERS = ("oidc", "google", "okta", "auth0", "keycloak", "azure", "builtin")
IdpProvider = Annotated[
    Literal["oidc", "google", "okta", "auth0", "keycloak", "azure", "builtin"],
    any_case(*_PROVIDERS),
]
_BEARER_FORMATS = ("default", "idp_access_token", "idp_identity_token")


def _unknown_is_default(value: Any) -> Any:
    """Pomerium reads ``""`` and ``unknown`` as ``BEARER_TOKEN_FORMAT_UNKNOWN``, which
    behaves as ``default`` (``config/custom_test.go``; on a route it still overrides the
    global value)."""
    if isinstance(value, str) and value.strip().lower() in ("", "unknown"):
        return "default"
    return value


#: Pomerium's ``bearer_token_format`` values (see docs/policy.md, "API access with bearer
#: tokens"); ``jwt`` (Pomerium's ``identity_providers`` tokens) is not among them.
BearerTokenFormat = Annotated[
    Literal["default", "idp_access_token", "idp_identity_token"],
    any_case(*_BEARER_FORMATS),
    BeforeValidator(_unknown_is_default),
]


class IdpUser(StrictModel):
    """A user of the built-in identity provider (``idp_users``)."""

    #: The name typed on the sign-in form; also the token's `sub`.
    username: str
    #: An argon2id hash from `gatehouse hash-password`.
    password_hash: str
    #: The user's email (the `email` claim).
    email: str
    #: The display name (the `name` claim).
    name: str = ""
    #: The user's groups (the `groups` claim).
    groups: list[str] = Field(default_factory=list)


class AuthOptions(StrictModel):
    """Who signs users in, how their sessions are kept, and where they go afterwards."""

    #: Public URL of the authenticate service (sign-in, callback and sign-out host).
    authenticate_service_url: str | None = None
    #: Path on the authenticate host that the IdP redirects back to; register
    #: `authenticate_service_url` + this path with the IdP.
    authenticate_callback_path: str = DEFAULT_AUTHENTICATE_CALLBACK_PATH
    #: Which identity provider; each is OpenID Connect with its quirks handled
    #: (see src/gatehouse/authenticate/providers.py); `builtin` serves one with `idp_users`.
    idp_provider: IdpProvider | None = None
    #: The IdP's issuer URL; its discovery document is read from it.
    idp_provider_url: str | None = None
    #: The OAuth client id registered with the IdP.
    idp_client_id: str | None = None
    #: The OAuth client secret.
    idp_client_secret: str | None = None
    #: A file holding the OAuth client secret.
    idp_client_secret_file: str | None = None
    #: Scopes asked of the IdP.
    idp_scopes: StringList = Field(
        default_factory=lambda: ["openid", "profile", "email", "offline_access"]
    )
    #: Extra authorization request parameters (reserved OAuth ones cannot be overridden).
    idp_request_params: dict[str, str] = Field(default_factory=dict)
    #: Users of the built-in identity provider (`idp_provider: builtin`). gatehouse addition.
    idp_users: list[IdpUser] = Field(default_factory=list)
    #: How `Authorization: Bearer <token>` is read: `default` passes it to the upstream
    #: uninterpreted; `idp_identity_token` accepts an ID token of the IdP (for the route's
    #: client) and `idp_access_token` an IdP access token as the user's session, instead
    #: of the cookie; a token that fails verification gets 403. See docs/policy.md,
    #: "API access with bearer tokens".
    bearer_token_format: BearerTokenFormat = "default"  # noqa: S105 - a format name
    #: With `idp_access_token`: access tokens must be JWTs signed by the IdP whose `aud`
    #: is one of these (unset: the IdP's userinfo endpoint must accept the token).
    idp_access_token_allowed_audiences: StringList | None = None

    #: Base64 of 32 random bytes from which gatehouse derives internal keys (and the
    #: assertion key when no `signing_key` is set); generated in `data_dir` when unset;
    #: required with the Redis store.
    shared_secret: str | None = None
    #: A file holding `shared_secret`.
    shared_secret_file: str | None = None
    #: Name of the session cookie.
    cookie_name: str = "_gatehouse"
    #: Base64 of 32 random bytes from which the session keys are derived (cookie handle,
    #: tokens at rest); generated in `data_dir` when unset (random per start with the memory
    #: store); required with the Redis store.
    cookie_secret: str | None = None
    #: A file holding `cookie_secret`.
    cookie_secret_file: str | None = None
    #: `Domain` attribute of the session cookie (unset: host-only).
    cookie_domain: str | None = None
    #: Lifetime of a session and its cookie.
    cookie_expire: Duration = 14 * 3600.0
    #: Set `HttpOnly` on the session cookie.
    cookie_http_only: bool = True
    #: Set `Secure` on the session cookie when the request came over HTTPS.
    cookie_secure: bool = True
    #: `SameSite` attribute of the session cookie.
    cookie_same_site: Annotated[
        Literal["lax", "strict", "none"], any_case("lax", "strict", "none")
    ] = "lax"
    #: End a session after this long without a request (0 = only cookie_expire). gatehouse addition.
    session_idle_timeout: Duration = 0.0

    #: Where session records live: `sqlite` (in `data_dir`, shared by one machine's
    #: workers), `redis` or `postgres` (shared by replicas), or `memory` (one process, lost
    #: on restart). See docs/operations.md, "Session stores".
    databroker_storage_type: Annotated[
        Literal["sqlite", "memory", "redis", "postgres"],
        any_case("sqlite", "memory", "redis", "postgres"),
    ] = "sqlite"
    #: Where the shared store is: a Redis URL (`redis://`, `rediss://`, `unix://`) for
    #: `redis`; a libpq connection string (`postgres://user:pass@host:5432/db?sslmode=require`
    #: or `host=... dbname=... user=...`) for `postgres`.
    databroker_storage_connection_string: str | None = None
    #: A file holding `databroker_storage_connection_string` (surrounding whitespace
    #: trimmed); takes precedence over it, as in Pomerium.
    databroker_storage_connection_string_file: str | None = None

    #: Where the browser goes after signing out (default: gatehouse's signed-out page).
    signout_redirect_url: str | None = None
    #: Hosts (`*.domain` wildcards allowed) that programmatic login
    #: (`/.pomerium/api/v1/login`) may redirect to; `localhost` stands for any loopback address.
    programmatic_redirect_domain_whitelist: StringList = Field(
        default_factory=lambda: ["localhost"]
    )
    #: While the session store is unreachable, sessions this process confirmed within this
    #: long keep working from its cache (0 = fail closed at once). gatehouse addition.
    session_store_outage_grace: Duration = 60.0
    #: Memory each worker may use for cached session records (bytes); the least recently
    #: used are evicted first. About 2 KiB a session (4 KiB with IdP tokens). gatehouse addition.
    session_cache_max_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024)
    #: The most a worker's cached session record may lag the store (0.1 s to 1 h).
    #: Sign-outs and refreshes reach every cache without waiting for it. While the store's
    #: change feed keeps confirming it has delivered every change (SQLite and PostgreSQL
    #: polls, a PING on the Redis subscription), a record is read once and served until it
    #: changes or expires; when the feed goes quiet, records are read again after this
    #: long, so it bounds what a lost notification could keep stale. gatehouse addition.
    session_cache_max_age: Annotated[Duration, Field(ge=0.1, le=3600)] = 5.0
    #: How often upgraded (WebSocket) connections are re-authorized. gatehouse addition.
    websocket_reauthorize_interval: Duration = 60.0
