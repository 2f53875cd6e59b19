"""The sign-in transaction carried through the IdP in the OAuth ``state`` parameter.

Theory of operation: ``/.pomerium/sign_in`` calls :meth:`StateCodec.begin`, which makes a
:class:`SignInTransaction` (PKCE verifier, nonce, where to go afterwards, a random id,
an expiry) and seals it into ``state`` with AES-256-GCM under a key derived from
``shared_secret``. Sealing, not just signing: the PKCE verifier must stay secret from
anyone who sees the authorization URL or the callback URL (browser history, proxies,
``Referer``), or PKCE protects nothing. The transaction also holds the SHA-256 of a random
CSRF value that goes to the browser in a cookie; the callback's ``state`` is accepted only
together with that cookie (OAuth 2.0 Security BCP §4.7, "CSRF protection"), so a callback
URL forged or replayed into another browser fails. It carries, too, the hash of the
route host's sign-in binding cookie (:mod:`.binding`) on to the hand-off, and whether this
is a programmatic login (the result goes to a loopback URL, not to a route host).
``/oauth2/callback`` calls
:meth:`StateCodec.open` (decrypt, expiry, cookie binding) and then :func:`consume`, which
asks the session store to remember the transaction id so that a state is used once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import InvalidState
from .keys import PURPOSE_STATE, derive_key
from .oidc import new_pkce, pkce_challenge

#: A sign-in must come back from the IdP within this many seconds.
DEFAULT_STATE_TTL_S = 600.0
#: Longest ``state`` accepted (characters): bounds work on attacker input.
MAX_STATE_CHARS = 4096
#: Longest post-sign-in redirect URL carried (characters).
MAX_REDIRECT_URL_CHARS = 2048
#: Extra seconds the replay marker outlives the state, covering clock skew between replicas.
REPLAY_MARGIN_S = 60.0

_VERSION = "g1."
_AAD = b"gatehouse sign-in state v1"
_NONCE_BYTES = 12
_CSRF_RE = re.compile(r"\A[A-Za-z0-9_-]{43}\Z")

#: The hook for single use: the session store's ``consume_once(key, ttl_s)``, which
#: returns True the first time ``key`` is seen (and remembers it for ``ttl_s`` seconds),
#: False afterwards. It must be atomic across replicas (Redis ``SET NX EX``, an SQL
#: ``INSERT`` on a primary key).
ConsumeOnce = Callable[[str, float], Awaitable[bool]]


def csrf_cookie_name(cookie_name: str) -> str:
    """The CSRF cookie's name for a session cookie name (Pomerium: ``_pomerium_csrf``)."""
    return f"{cookie_name}_csrf"


@dataclass(frozen=True, slots=True)
class SignInTransaction:
    """One sign-in in flight."""

    id: str
    csrf_hash: str
    code_verifier: str
    nonce: str
    #: The URL the user asked for, already checked by the caller (see ``redirects``).
    redirect_url: str
    issued_at: float
    expires_at: float
    #: Hash of the route host's binding cookie ("" when none: a programmatic login, or
    #: the authenticate host itself as the target).
    binding: str = ""
    #: A programmatic login: ``redirect_url`` is a loopback URL to receive the token.
    programmatic: bool = False
    #: The OAuth client this sign-in goes through (:mod:`.clients`; "" the global one).
    idp_id: str = ""

    @property
    def code_challenge(self) -> str:
        return pkce_challenge(self.code_verifier)


class StateCodec:
    """Seals and opens :class:`SignInTransaction` values."""

    def __init__(
        self,
        shared_secret: bytes,
        *,
        ttl_s: float = DEFAULT_STATE_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._aead = AESGCM(derive_key(shared_secret, PURPOSE_STATE))
        self._ttl_s = ttl_s
        self._clock = clock

    def begin(
        self,
        redirect_url: str,
        csrf_cookie: str | None = None,
        *,
        binding: str = "",
        programmatic: bool = False,
        idp_id: str = "",
    ) -> tuple[SignInTransaction, str, str]:
        """Start a sign-in: ``(transaction, state, csrf_cookie_value)``.

        An existing well-formed CSRF cookie is reused, so that sign-ins started in two
        tabs both complete; otherwise a new value is made. Set the returned value as the
        CSRF cookie (HttpOnly, Secure, SameSite=Lax: the IdP's redirect back is a
        top-level GET, which Lax allows) on the authenticate host.
        """
        if len(redirect_url) > MAX_REDIRECT_URL_CHARS:
            raise InvalidState("redirect URL too long")
        if csrf_cookie is None or not _CSRF_RE.match(csrf_cookie):
            csrf_cookie = secrets.token_urlsafe(32)
        verifier, _ = new_pkce()
        now = self._clock()
        txn = SignInTransaction(
            id=secrets.token_urlsafe(16),
            csrf_hash=_csrf_hash(csrf_cookie),
            code_verifier=verifier,
            nonce=secrets.token_urlsafe(24),
            redirect_url=redirect_url,
            issued_at=now,
            expires_at=now + self._ttl_s,
            binding=binding,
            programmatic=programmatic,
            idp_id=idp_id,
        )
        return txn, self.seal(txn), csrf_cookie

    def seal(self, txn: SignInTransaction) -> str:
        payload = json.dumps(
            [
                txn.id,
                txn.csrf_hash,
                txn.code_verifier,
                txn.nonce,
                txn.redirect_url,
                int(txn.issued_at),
                int(txn.expires_at),
                txn.binding,
                txn.programmatic,
                txn.idp_id,
            ],
            separators=(",", ":"),
        ).encode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, payload, _AAD)
        return _VERSION + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    def open(self, state: str, csrf_cookie: str | None) -> SignInTransaction:
        """Decrypt ``state``, check its expiry and its binding to the CSRF cookie.

        Raises:
            InvalidState: tampered, foreign, expired, or not this browser's.
        """
        if not state.startswith(_VERSION) or len(state) > MAX_STATE_CHARS:
            raise InvalidState("state is not ours")
        try:
            body = state[len(_VERSION) :]
            raw = base64.urlsafe_b64decode(_pad(body))
            # Only the canonical spelling (the decoder ignores trailing bits and stray
            # characters): one state, one string, so every character is authenticated.
            if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != body:
                raise InvalidState("state is not canonical base64")
            payload = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD)
            fields = json.loads(payload)
            txn = SignInTransaction(
                id=str(fields[0]),
                csrf_hash=str(fields[1]),
                code_verifier=str(fields[2]),
                nonce=str(fields[3]),
                redirect_url=str(fields[4]),
                issued_at=float(fields[5]),
                expires_at=float(fields[6]),
                binding=str(fields[7]),
                programmatic=fields[8] is True,
                # States sealed before per-route clients have 9 fields: the global client.
                idp_id=str(fields[9]) if len(fields) > 9 else "",
            )
        except (InvalidTag, ValueError, TypeError, IndexError) as exc:
            raise InvalidState("state failed authentication") from exc
        if self._clock() >= txn.expires_at:
            raise InvalidState("state expired")
        if not csrf_cookie or not hmac.compare_digest(
            _csrf_hash(csrf_cookie).encode(), txn.csrf_hash.encode()
        ):
            raise InvalidState("state is not bound to this browser's CSRF cookie")
        return txn

    def replay_ttl_s(self, txn: SignInTransaction) -> float:
        """How long the single-use marker must be kept."""
        return max(txn.expires_at - self._clock(), 0.0) + REPLAY_MARGIN_S


async def consume(codec: StateCodec, txn: SignInTransaction, consume_once: ConsumeOnce) -> None:
    """Mark the transaction used; a second callback with the same state fails.

    Raises:
        InvalidState: the state was already used.
    """
    if not await consume_once(f"authenticate/state/{txn.id}", codec.replay_ttl_s(txn)):
        raise InvalidState("state already used")


def _csrf_hash(value: str) -> str:
    digest = hashlib.sha256(value.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _pad(value: str) -> bytes:
    return (value + "=" * (-len(value) % 4)).encode("ascii")
