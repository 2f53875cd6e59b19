"""Authentication, identity-provider, cookie and session-store options.

Owned by ``authenticate/``, ``sessions/`` and ``idp/``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ..constants import DEFAULT_AUTHENTICATE_CALLBACK_PATH
from .base import StrictModel, StringList
from .durations import Duration

IdpProvider = Literal["oidc", "google", "okta", "auth0", "keycloak", "azure", "builtin"]


class IdpUser(StrictModel):
    """A user of the built-in identity provider (``idp_users``)."""

    username: str
    password_hash: str
    email: str
    name: str = ""
    groups: list[str] = Field(default_factory=list)


class AuthOptions(StrictModel):
    """Who signs users in, how their sessions are kept, and where they go afterwards."""

    authenticate_service_url: str | None = None
    authenticate_callback_path: str = DEFAULT_AUTHENTICATE_CALLBACK_PATH
    idp_provider: IdpProvider | None = None
    idp_provider_url: str | None = None
    idp_client_id: str | None = None
    idp_client_secret: str | None = None
    idp_client_secret_file: str | None = None
    idp_scopes: StringList = Field(
        default_factory=lambda: ["openid", "profile", "email", "offline_access"]
    )
    idp_request_params: dict[str, str] = Field(default_factory=dict)
    idp_users: list[IdpUser] = Field(default_factory=list)

    shared_secret: str | None = None
    shared_secret_file: str | None = None
    cookie_name: str = "_gatehouse"
    cookie_secret: str | None = None
    cookie_secret_file: str | None = None
    cookie_domain: str | None = None
    cookie_expire: Duration = 14 * 3600.0
    cookie_http_only: bool = True
    cookie_secure: bool = True
    cookie_same_site: Literal["lax", "strict", "none"] = "lax"
    #: End a session after this long without a request (0 = only cookie_expire). gatehouse addition.
    session_idle_timeout: Duration = 0.0

    databroker_storage_type: Literal["sqlite", "memory", "redis"] = "sqlite"
    databroker_storage_connection_string: str | None = None

    signout_redirect_url: str | None = None
    programmatic_redirect_domain_whitelist: StringList = Field(
        default_factory=lambda: ["localhost"]
    )
    #: While the session store is unreachable, sessions this process confirmed within this
    #: long keep working from its cache (0 = fail closed at once). gatehouse addition.
    session_store_outage_grace: Duration = 60.0
    #: How often upgraded (WebSocket) connections are re-authorized. gatehouse addition.
    websocket_reauthorize_interval: Duration = 60.0

    @field_validator("cookie_same_site", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value
