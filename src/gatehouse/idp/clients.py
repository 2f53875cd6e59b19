"""Registered relying parties and client authentication at the token endpoints.

A client is registered up front (there is no dynamic registration): its id, secret (or
none, for a public client that relies on PKCE alone), and the exact redirect and
post-logout redirect URIs it may use. Client authentication follows RFC 6749 §2.3.1:
``client_secret_basic`` (HTTP Basic, each part form-urlencoded first) or
``client_secret_post`` (form fields), never both in one request.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field
from urllib.parse import unquote_plus, urlsplit

from ..http.messages import Request


@dataclass(frozen=True, slots=True)
class ClientRegistration:
    """One relying party allowed to use the IdP."""

    client_id: str
    #: ``None`` for a public client (``token_endpoint_auth_method: none``).
    client_secret: str | None
    #: Exact-match redirect URIs (OAuth 2.0 Security BCP §4.1.3: no patterns).
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = field(default=())
    name: str = ""

    def __post_init__(self) -> None:
        if not self.client_id:
            raise ValueError("client_id must not be empty")
        if self.client_secret is not None and len(self.client_secret) < 16:
            raise ValueError(f"client {self.client_id}: client_secret must be >= 16 characters")
        if not self.redirect_uris:
            raise ValueError(f"client {self.client_id}: at least one redirect URI is required")
        for uri in (*self.redirect_uris, *self.post_logout_redirect_uris):
            parts = urlsplit(uri)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
                raise ValueError(
                    f"client {self.client_id}: {uri!r} is not an absolute http(s) URI "
                    "without a fragment"
                )
        # Accept lists from callers; keep the dataclass immutable.
        object.__setattr__(self, "redirect_uris", tuple(self.redirect_uris))
        object.__setattr__(self, "post_logout_redirect_uris", tuple(self.post_logout_redirect_uris))

    @property
    def is_public(self) -> bool:
        return self.client_secret is None


class ClientAuthError(Exception):
    """Client authentication failed (RFC 6749 §5.2 ``invalid_client``)."""

    def __init__(self, reason: str, *, used_basic: bool) -> None:
        super().__init__(reason)
        self.used_basic = used_basic


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return ("", "")  # malformed: fails authentication below
    user, sep, password = decoded.partition(":")
    if not sep:
        return ("", "")
    return unquote_plus(user), unquote_plus(password)


def authenticate_client(
    request: Request, form: dict[str, str], clients: dict[str, ClientRegistration]
) -> ClientRegistration:
    """The client that made this token/revocation request, authenticated.

    Raises:
        ClientAuthError: unknown client, wrong or missing secret, or two methods at once.
    """
    basic = _basic_credentials(request)
    if basic is not None:
        if "client_secret" in form:
            raise ClientAuthError("more than one client authentication method", used_basic=True)
        client_id, secret = basic
        if form.get("client_id", client_id) != client_id:
            raise ClientAuthError("client_id differs from the Basic credentials", used_basic=True)
        client = clients.get(client_id)
        if client is None or client.client_secret is None:
            raise ClientAuthError("unknown client or public client using Basic", used_basic=True)
        if not hmac.compare_digest(secret.encode(), client.client_secret.encode()):
            raise ClientAuthError("wrong client secret", used_basic=True)
        return client
    client_id = form.get("client_id", "")
    client = clients.get(client_id)
    if client is None:
        raise ClientAuthError("unknown client", used_basic=False)
    posted = form.get("client_secret")
    if client.client_secret is None:
        if posted:
            raise ClientAuthError("public client sent a secret", used_basic=False)
        return client
    if posted is None or not hmac.compare_digest(posted.encode(), client.client_secret.encode()):
        raise ClientAuthError("missing or wrong client secret", used_basic=False)
    return client


__all__ = ["ClientAuthError", "ClientRegistration", "authenticate_client"]
