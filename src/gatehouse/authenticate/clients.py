"""Per-route OAuth clients: Pomerium's route ``idp_client_id`` / ``idp_client_secret``.

A route may sign its users in through another client registered at the same IdP. Each
distinct client gets an *IdP id* (Pomerium's ``pomerium_idp_id``): ``""`` for the global
client, otherwise a MAC of the client id and secret under a key derived from
``shared_secret`` (the id travels in sign-in URLs, so it must reveal nothing about the
secret). The id goes into the signed sign-in URL and the sealed OAuth state, so the
callback exchanges the code with the client that asked for it; the session records it,
and a route accepts only sessions of its own client (Pomerium's
``ReadSessionHandleAndCheckIDP``): any other is treated as no session, so the user signs in
again through the route's client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from typing import Protocol

from .keys import derive_key

#: The global client's id: also what sessions made before per-route clients carry.
DEFAULT_IDP_ID = ""
#: Query parameter of the signed sign-in URL naming the client (Pomerium's name).
QUERY_IDP_ID = "pomerium_idp_id"


class RouteClient(Protocol):
    """The route keys read here (``RouteOptions`` has them)."""

    @property
    def idp_client_id(self) -> str | None: ...

    @property
    def idp_client_secret(self) -> str | None: ...


class ClientIds:
    """Maps a route's client settings to an IdP id, and knows every configured client."""

    def __init__(self, shared_secret: bytes, default_client_id: str, default_secret: str) -> None:
        self._key = derive_key(shared_secret, "gatehouse idp client id")
        self._default = (default_client_id, default_secret)
        self._ids: dict[tuple[str | None, str | None], str] = {(None, None): DEFAULT_IDP_ID}
        #: IdP id → (client id, secret), every client seen by :meth:`for_route`.
        self.clients: dict[str, tuple[str, str]] = {DEFAULT_IDP_ID: self._default}

    def for_route(self, route: RouteClient) -> str:
        """The IdP id of ``route``'s client (cached: this runs on the request path)."""
        key = (route.idp_client_id, route.idp_client_secret)
        found = self._ids.get(key)
        if found is not None:
            return found
        client = (key[0] or self._default[0], self._default[1] if key[1] is None else key[1])
        if client == self._default:
            idp_id = DEFAULT_IDP_ID
        else:
            body = f"{len(client[0])}:{client[0]}{client[1]}".encode()
            mac = hmac.new(self._key, body, hashlib.sha256).digest()[:16]
            idp_id = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
            self.clients[idp_id] = client
        self._ids[key] = idp_id
        return idp_id

    def register(self, routes: Iterable[RouteClient]) -> None:
        """Learn every route's client up front (the authenticate host needs them all)."""
        for route in routes:
            self.for_route(route)


__all__ = ["DEFAULT_IDP_ID", "QUERY_IDP_ID", "ClientIds", "RouteClient"]
