"""Sessions from IdP bearer tokens: Pomerium's ``bearer_token_format`` (``idp_identity_token``,
``idp_access_token``) and ``idp_access_token_allowed_audiences``.

What Pomerium does (``config/session.go`` ``incomingIDPTokenSessionCreator``,
``authorize/grpc.go`` ``Check``/``loadSession``, ``pkg/identity/oidc/oidc.go`` and
``…/azure/microsoft.go`` ``VerifyAccessToken``/``VerifyIdentityToken``), and gatehouse with it:

- The token is the value of ``Authorization: Bearer <token>`` (scheme in any case,
  RFC 6750 §2.1), read only on a route whose format (the route's, else the global one)
  is an ``idp_*`` one. With no such header the request is read as usual (cookie,
  programmatic token). With one, the token is used *instead of* the cookie: it is
  verified before the policy, and a token that fails verification is answered 403
  without evaluating the policy (Pomerium's ``ErrInvalidSession`` → 403), never a
  fall-back to the cookie nor a sign-in redirect. gatehouse's own ``Bearer Pomerium-…``
  programmatic tokens keep their meaning (Pomerium would try them as IdP tokens and 403).
- ``idp_identity_token``: an OpenID Connect ID token of the IdP for the *route's* client
  (``idp_client_id`` of the route, else the global one): signature by a JWKS key (or the
  client secret for HS*), ``iss``, ``aud`` holding the client id, ``azp``, ``exp``,
  ``iat`` with leeway; no nonce (:meth:`RelyingParty.validate_id_token`).
- ``idp_access_token`` with ``idp_access_token_allowed_audiences`` (the route's list, else
  the global one): the token must be a JWT signed by a JWKS key of the IdP (never HMAC)
  with ``iss`` the IdP's issuer, ``exp``/``nbf`` with leeway, and ``aud`` (string, or a
  list) holding one of the audiences — Pomerium's Entra ID verifier; its generic OIDC
  verifier compares the *userinfo* ``aud`` instead, which userinfo seldom has.
- ``idp_access_token`` without audiences (and any opaque token): the IdP's userinfo
  endpoint is called with the token, as Pomerium's generic verifier does; the token is
  valid when the IdP answers 200 with a JSON object naming a ``sub``. Such a token
  carries no expiry we can read, so it is checked again after
  :data:`USERINFO_RECHECK_S` (Pomerium keeps it for ``cookie_expire``: we prefer that a
  token revoked at the IdP stops working within minutes).
- The session: ``user_id``/``email``/``groups``/``name`` from the verified claims through
  the provider's quirks (as a sign-in builds them), every claim kept for PPL ``claim``
  criteria and the assertion, ``expires_at`` the token's ``exp``; no refresh token, so it
  is never refreshed (Pomerium's ``RefreshDisabled``). Its id is a hash of the route's
  client, format, audiences and token (the assertion's ``sid``); nothing is written to
  the session store.
- Verified tokens, and refused ones for :data:`REFUSAL_TTL_S`, are cached in this process
  keyed by that hash, least recently used evicted past a memory budget, so a stream of
  API calls verifies a token once; concurrent first requests share one verification.
  Refusals have a budget of their own (an eighth), so a flood of bad tokens, which anyone
  can send, never evicts the tokens of real users.
- Pomerium forwards the ``Authorization`` header to the upstream unchanged (its Lua
  filter strips only ``Pomerium``-scheme values). gatehouse does not: on these routes an
  ``Authorization: Bearer`` value is the gatehouse credential (an ID token would open
  every route of the same client if the upstream replayed it), so it is removed
  (``Route.strip_bearer``); the upstream gets the signed assertion, and an upstream that
  needs the token itself is sent it by ``set_request_headers: {Authorization: "Bearer
  ${pomerium.access_token}"}`` (or ``${pomerium.id_token}``): the session carries it.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..errors import InvalidBearerToken
from ..proxy.headers import bearer_token
from ..sessions.model import Session
from ..sessions.sizing import session_bytes
from .errors import AuthenticationError, IdpUnavailable
from .relying_party import RelyingParty
from .tokens import MAX_ID_TOKEN_CHARS

log = logging.getLogger("gatehouse.authenticate")

IDP_IDENTITY_TOKEN = "idp_identity_token"  # noqa: S105 - a format name
IDP_ACCESS_TOKEN = "idp_access_token"  # noqa: S105 - a format name

#: How long an access token verified through userinfo (no readable expiry) is trusted
#: before the IdP is asked again, seconds.
USERINFO_RECHECK_S = 300.0
#: How long a refused token is answered from the cache (no new verification), seconds:
#: a client retrying a bad token costs one verification per this interval.
REFUSAL_TTL_S = 30.0
#: Memory the cache of verified tokens may use per process, bytes (about 2 KiB a token);
#: refused tokens may use an eighth of it more.
DEFAULT_CACHE_MAX_BYTES = 32 * 1024 * 1024
#: RFC 6750 §2.1 ``b64token``: what a bearer token may hold (JWTs and opaque tokens alike).
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
#: Bytes charged for a cached refusal (key, entry, reason).
_REFUSAL_BYTES = 300


@dataclass(frozen=True, slots=True)
class BearerRule:
    """How one route reads bearer tokens."""

    route: str
    #: :data:`IDP_IDENTITY_TOKEN` or :data:`IDP_ACCESS_TOKEN`.
    format: str
    #: The route's client (see :mod:`.clients`); also the sessions' ``idp_id``.
    idp_id: str
    #: ``idp_access_token_allowed_audiences`` (``None``: not set: userinfo decides).
    audiences: tuple[str, ...] | None = None


class _LRU:
    """Entries by key, least recently used evicted once their sizes exceed a budget."""

    __slots__ = ("bytes", "entries", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def get(self, key: bytes, now: float) -> _Entry | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if now >= entry.until:
            self.drop(key)
            return None
        self.entries.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: _Entry) -> None:
        self.drop(key)
        self.entries[key] = entry
        self.bytes += entry.size
        while self.bytes > self.max_bytes and self.entries:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.size

    def drop(self, key: bytes) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size


class _Entry:
    __slots__ = ("reason", "session", "size", "until")

    def __init__(self, session: Session | None, until: float, size: int, reason: str) -> None:
        self.session = session
        self.until = until
        self.size = size
        self.reason = reason


class BearerSessions:
    """Verifies bearer tokens for the routes that read them, with a bounded cache."""

    def __init__(
        self,
        party_for: Callable[[str], RelyingParty],
        rules: Mapping[int, BearerRule],
        *,
        cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        #: The relying party of a client by IdP id (``Authenticator.relying_party_for``).
        self._party_for = party_for
        #: By route index; routes with ``default`` are absent.
        self.rules: dict[int, BearerRule] = dict(rules)
        self._clock = clock
        self._accepted = _LRU(cache_max_bytes)
        self._refused = _LRU(max(cache_max_bytes // 8, 16 * _REFUSAL_BYTES))
        self._pending: dict[bytes, asyncio.Future[Session]] = {}
        #: Verifications made (cache misses that reached the IdP's keys or userinfo).
        self.verifications = 0

    def cached(self, rule: BearerRule, token: str) -> tuple[bool, Session | None]:
        """``(True, session)`` for a token verified before and not expired; ``(False,
        None)`` when it must be verified (await :meth:`session`).

        Raises:
            InvalidBearerToken: the token was refused within :data:`REFUSAL_TTL_S`.
        """
        key = _key(rule, token)
        now = self._clock()
        entry = self._accepted.get(key, now)
        if entry is not None:
            return True, entry.session
        refused = self._refused.get(key, now) if self._refused.entries else None
        if refused is not None:
            raise self._refused_error(rule, refused.reason, cached=True)
        return False, None

    async def session(self, rule: BearerRule, token: str) -> Session:
        """The session for ``token`` on ``rule``'s route, verified (once across racers).

        Raises:
            InvalidBearerToken: the token failed verification (403).
            IdpUnavailable: the IdP could not be asked (503); nothing is cached.
        """
        hit, session = self.cached(rule, token)
        if hit and session is not None:
            return session
        key = _key(rule, token)
        task = self._pending.get(key)
        if task is None:
            # Its own task: a requester that goes away does not cancel the others' check.
            task = asyncio.ensure_future(self._verify(rule, token, key))
            self._pending[key] = task
            task.add_done_callback(functools.partial(self._settled, key))
        return await asyncio.shield(task)

    def _settled(self, key: bytes, task: asyncio.Future[Session]) -> None:
        self._pending.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every requester may have gone

    async def _verify(self, rule: BearerRule, token: str, key: bytes) -> Session:
        self.verifications += 1
        try:
            party = self._party_for(rule.idp_id)
            claims, until = await self._claims(party, rule, token)
            session = _session(party, rule, key, claims, until, self._clock(), token)
        except IdpUnavailable:
            raise
        except AuthenticationError as exc:
            reason = str(exc)[:300]
            until = self._clock() + REFUSAL_TTL_S
            self._refused.put(key, _Entry(None, until, _REFUSAL_BYTES, reason))
            raise self._refused_error(rule, reason, cached=False) from None
        self._refused.drop(key)
        size = session_bytes(session) + 64
        self._accepted.put(key, _Entry(session, session.expires_at, size, ""))
        return session

    async def _claims(
        self, party: RelyingParty, rule: BearerRule, token: str
    ) -> tuple[dict[str, Any], float]:
        """The verified claims and until when they may be trusted."""
        if not token:
            raise AuthenticationError("empty bearer token")
        if len(token) > MAX_ID_TOKEN_CHARS:
            raise AuthenticationError(f"bearer token longer than {MAX_ID_TOKEN_CHARS} characters")
        if _B64TOKEN.fullmatch(token) is None:
            # Before any I/O: such bytes must not reach a userinfo request's header.
            raise AuthenticationError("bearer token is not a b64token (RFC 6750 §2.1)")
        if rule.format == IDP_IDENTITY_TOKEN:
            claims = await party.validate_id_token(token, nonce=None)
            return claims, float(claims["exp"])
        if rule.audiences is not None:
            claims = await party.validate_access_token(token, rule.audiences)
            return claims, float(claims["exp"])
        claims = await party.userinfo(token)
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AuthenticationError("userinfo named no subject for the access token")
        return claims, self._clock() + USERINFO_RECHECK_S

    def _refused_error(self, rule: BearerRule, reason: str, *, cached: bool) -> InvalidBearerToken:
        # The one log line of a refused request (the token itself is never logged).
        log.info(
            "bearer token refused",
            extra={"route": rule.route, "format": rule.format, "why": reason, "cached": cached},
        )
        return InvalidBearerToken("bearer token refused", route=rule.route)

    @property
    def cached_bytes(self) -> int:
        """Memory charged to the cache now (accepted and refused tokens)."""
        return self._accepted.bytes + self._refused.bytes

    def __len__(self) -> int:
        return len(self._accepted.entries) + len(self._refused.entries)


def _key(rule: BearerRule, token: str) -> bytes:
    """SHA-256 of what a verification depends on: the route's client, format, audiences
    and the token (never the token itself as a key: memory, and nothing to leak)."""
    audiences = "\x1f".join(rule.audiences) if rule.audiences is not None else "\x1e"
    text = f"{rule.format}\x00{rule.idp_id}\x00{audiences}\x00{token}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def _session(
    party: RelyingParty,
    rule: BearerRule,
    key: bytes,
    claims: dict[str, Any],
    until: float,
    now: float,
    token: str,
) -> Session:
    quirks = party.config.quirks
    name = claims.get("name")
    iat = claims.get("iat")
    return Session(
        id="bearer-" + base64.urlsafe_b64encode(key[:18]).decode(),
        user_id=quirks.subject(claims),
        email=quirks.email(claims),
        name=name if isinstance(name, str) else "",
        groups=quirks.groups(claims),
        claims=MappingProxyType(dict(claims)),
        issued_at=float(iat) if isinstance(iat, int | float) else now,
        expires_at=until,
        last_refresh_at=now,
        idp_id=rule.idp_id,
        # ``${pomerium.id_token}`` / ``${pomerium.access_token}`` in set_request_headers
        # render the token the request came with, so forwarding it is one explicit line.
        id_token=token if rule.format == IDP_IDENTITY_TOKEN else "",
        access_token=token if rule.format == IDP_ACCESS_TOKEN else "",
    )


__all__ = [
    "IDP_ACCESS_TOKEN",
    "IDP_IDENTITY_TOKEN",
    "BearerRule",
    "BearerSessions",
    "bearer_token",
]
