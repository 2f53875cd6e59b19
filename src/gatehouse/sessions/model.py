"""The session record: who the user is and the tokens their identity provider gave us.

A :class:`Session` is created by the authenticate flow, kept in a store
(:mod:`gatehouse.sessions`), referenced by the cookie's encrypted handle, and read by
authorize (claims) and identity (assertion claims). It is immutable: a refresh makes a
new record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class Session:
    """One signed-in user's session."""

    #: Random session id (also the ``sid`` claim of assertions). Never a secret on its own:
    #: the cookie carries an encrypted handle, not this id in the clear.
    id: str
    #: The IdP subject (``sub``).
    user_id: str
    email: str = ""
    name: str = ""
    groups: tuple[str, ...] = ()
    #: Every claim from the ID token merged with userinfo (JSON values).
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: Unix times (seconds).
    issued_at: float = 0.0
    expires_at: float = 0.0
    last_refresh_at: float = 0.0
    #: Last request seen with this session, for ``session_idle_timeout`` (0 = unknown).
    #: Stored apart from the record (see ``SessionStore.touch``) so that a touch never
    #: overwrites a concurrent refresh.
    last_seen_at: float = 0.0
    #: When the IdP's tokens expire and need a refresh (0 = unknown/never).
    tokens_expire_at: float = 0.0
    id_token: str = ""
    access_token: str = ""
    refresh_token: str = ""
    #: The OAuth client the user signed in through ("" the global one; a route with its
    #: own ``idp_client_id`` accepts only its client's sessions).
    idp_id: str = ""

    def is_expired(self, now: float) -> bool:
        return now >= self.expires_at
