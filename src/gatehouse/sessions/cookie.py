"""The session cookie codec and the single-use handoff token, both AEAD (AES-256-GCM).

The cookie never holds the session record, only an encrypted, authenticated *handle*::

    cookie = base64url( version(1) || nonce(12) || AES-GCM(key, nonce, plaintext, aad) )
    plaintext = issued_at (uint64 big-endian, Unix seconds) || session_id (ASCII)
    aad = "gatehouse-cookie" 0x00 version 0x00 cookie_name 0x00 bound_host

Binding the host and cookie name into the associated data means a cookie lifted from one
host (or renamed) fails authentication on another; ``issued_at`` lets us refuse cookies
older than ``cookie_expire`` even if the browser kept them. A 43-character session id gives
a cookie of about 110 characters whatever the user's groups (those live in the store).

The handoff token (authenticate service → ``/.pomerium/callback/`` on a route host) has the
same shape with its own key, ``expires_at`` instead of ``issued_at``, and the *target* host
and the hash of the browser's sign-in binding cookie (see
:mod:`gatehouse.authenticate.binding`) in its associated data: it opens only on that host,
in the browser that started the sign-in. Its random nonce doubles as the token id that
the store consumes once (:meth:`gatehouse.sessions.store.SessionStore.consume_once`), so a
token works once.

Decoding never raises on bad input: anything malformed, tampered, expired, for another host
or sealed with another key gives ``None``.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
#: Longest encoded value we try to decode (chars); real ones are ~110. Bounds work on junk.
MAX_ENCODED_CHARS = 1024
#: Longest session id accepted inside a handle (chars).
MAX_SESSION_ID_CHARS = 128
#: Clock skew tolerated between processes/replicas for "issued in the future" (seconds).
CLOCK_SKEW_S = 60.0

_TIME = struct.Struct(">Q")
_HEADER = 1 + NONCE_BYTES
_MIN_RAW = _HEADER + TAG_BYTES + _TIME.size + 1


def normalize_host(host: str) -> str:
    """Lower-case host without port or trailing dot: the unit a browser scopes cookies by."""
    h = host.strip().lower()
    if h.startswith("["):  # [v6]:port
        end = h.find("]")
        h = h[: end + 1] if end != -1 else h
    elif h.count(":") == 1:
        h = h.partition(":")[0]
    return h.rstrip(".")


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes | None:
    if not text or len(text) > MAX_ENCODED_CHARS:
        return None
    try:
        raw = text.encode("ascii")
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    # Only the canonical encoding is accepted: the decoder skips stray characters and
    # ignores trailing bits, and one value should have exactly one spelling.
    return data if _b64e(data) == text else None


def _valid_session_id(session_id: str) -> bool:
    return (
        0 < len(session_id) <= MAX_SESSION_ID_CHARS
        and session_id.isascii()
        and (session_id.isprintable())
    )


class CookieHandle:
    """What a valid cookie says: which session, and when the cookie was issued.

    A plain slotted class (one per request; mypyc makes it a C struct)."""

    __slots__ = ("issued_at", "session_id")

    def __init__(self, session_id: str, issued_at: int) -> None:
        self.session_id = session_id
        self.issued_at = issued_at

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CookieHandle)
            and other.session_id == self.session_id
            and other.issued_at == self.issued_at
        )

    def __hash__(self) -> int:
        return hash((self.session_id, self.issued_at))

    def __repr__(self) -> str:
        # The session id is a credential: never in a repr that may reach a log.
        return f"CookieHandle(session_id=<hidden>, issued_at={self.issued_at})"


@dataclass(frozen=True, slots=True)
class HandoffClaim:
    """What a valid handoff token says. ``token_id`` is what must be consumed once."""

    session_id: str
    expires_at: int
    token_id: str


class _Sealer:
    """AES-GCM with a fixed key and a domain label; the shared part of both codecs."""

    __slots__ = ("_aead", "_label")

    def __init__(self, key: bytes, label: bytes) -> None:
        self._aead = AESGCM(key)
        self._label = label

    def _aad(self, *parts: str) -> bytes:
        return b"\x00".join((self._label, bytes([VERSION]), *(p.encode() for p in parts)))

    def seal(self, when: int, session_id: str, *aad_parts: str) -> str:
        if not _valid_session_id(session_id):
            raise ValueError("session id must be 1-128 printable ASCII characters")
        nonce = os.urandom(NONCE_BYTES)
        plaintext = _TIME.pack(when) + session_id.encode("ascii")
        ct = self._aead.encrypt(nonce, plaintext, self._aad(*aad_parts))
        return _b64e(bytes([VERSION]) + nonce + ct)

    def open(self, value: str, *aad_parts: str) -> tuple[int, str, bytes] | None:
        raw = _b64d(value)
        if raw is None or len(raw) < _MIN_RAW or raw[0] != VERSION:
            return None
        nonce = raw[1:_HEADER]
        try:
            plaintext = self._aead.decrypt(nonce, raw[_HEADER:], self._aad(*aad_parts))
        except InvalidTag:
            return None
        (when,) = _TIME.unpack_from(plaintext)
        try:
            session_id = plaintext[_TIME.size :].decode("ascii")
        except UnicodeDecodeError:
            return None
        if not _valid_session_id(session_id):
            return None
        return when, session_id, nonce


#: Memory the per-process memo of authentic cookie values may use, bytes: about 250,000
#: cookies. Bounded by memory and least-recently-used first, like the session cache, so
#: that sessions in rotation past any fixed count do not all pay AES-GCM again (a count
#: of 10,000, cleared when full, did: the scaling bench's 100,000 sessions).
OPENED_CACHE_MAX_BYTES = 128 * 1024 * 1024
#: Charged per memo entry beyond the characters of the cookie value and host: their string
#: headers, the key and value tuples, the session id, the int and the dict slot (measured
#: with tracemalloc: ~520 bytes an entry with a 107-character cookie, all told).
OPENED_ENTRY_BYTES = 400


class CookieCodec:
    """Encode/decode the session cookie value for ``cookie_name``, valid ``max_age_s``."""

    __slots__ = (
        "_cookie_name",
        "_max_age_s",
        "_opened",
        "_opened_bytes",
        "_opened_max_bytes",
        "_sealer",
    )

    def __init__(
        self,
        key: bytes,
        *,
        cookie_name: str,
        max_age_s: float,
        opened_max_bytes: int = OPENED_CACHE_MAX_BYTES,
    ) -> None:
        self._sealer = _Sealer(key, b"gatehouse-cookie")
        self._cookie_name = cookie_name
        self._max_age_s = max_age_s
        #: (value, host) -> (issued_at, session id) for values that decrypted: a browser
        #: sends the same cookie on every request, and AES-GCM costs more than a lookup.
        #: In least-recently-used order (a hit moves to the end); only authentic values
        #: get here, so filling it takes that many valid cookies.
        self._opened: dict[tuple[str, str], tuple[int, str]] = {}
        self._opened_bytes = 0
        self._opened_max_bytes = opened_max_bytes

    def encode(self, session_id: str, host: str, now: float) -> str:
        """The cookie value for ``session_id`` bound to ``host`` (normalized here)."""
        return self._sealer.seal(int(now), session_id, self._cookie_name, normalize_host(host))

    def decode(self, value: str, host: str, now: float) -> CookieHandle | None:
        """The handle in ``value`` if authentic, for ``host``, and not older than max age."""
        key = (value, host)
        memo = self._opened
        cached = memo.pop(key, None)
        if cached is not None:
            memo[key] = cached  # most recently used: last
            issued_at, session_id = cached
        else:
            opened = self._sealer.open(value, self._cookie_name, normalize_host(host))
            if opened is None:
                return None
            issued_at, session_id, _ = opened
            memo[key] = (issued_at, session_id)
            self._opened_bytes += len(value) + len(host) + OPENED_ENTRY_BYTES
            while self._opened_bytes > self._opened_max_bytes and len(memo) > 1:
                oldest = next(iter(memo))
                del memo[oldest]
                self._opened_bytes -= len(oldest[0]) + len(oldest[1]) + OPENED_ENTRY_BYTES
        if issued_at > now + CLOCK_SKEW_S or now - issued_at >= self._max_age_s:
            return None
        return CookieHandle(session_id=session_id, issued_at=issued_at)


class HandoffCodec:
    """Seal/open short-lived handoff tokens (single use is enforced by the caller's store)."""

    __slots__ = ("_sealer",)

    def __init__(self, key: bytes) -> None:
        self._sealer = _Sealer(key, b"gatehouse-handoff")

    def seal(
        self, session_id: str, target_host: str, binding: str, ttl_s: float, now: float
    ) -> str:
        """A token that ``target_host`` may redeem for ``session_id`` within ``ttl_s``, in
        the browser whose sign-in binding hashes to ``binding``."""
        return self._sealer.seal(int(now + ttl_s), session_id, normalize_host(target_host), binding)

    def open(self, token: str, host: str, binding: str, now: float) -> HandoffClaim | None:
        """The claim in ``token`` if authentic, meant for ``host`` and ``binding``, unexpired."""
        opened = self._sealer.open(token, normalize_host(host), binding)
        if opened is None:
            return None
        expires_at, session_id, nonce = opened
        if now >= expires_at:
            return None
        return HandoffClaim(session_id=session_id, expires_at=expires_at, token_id=_b64e(nonce))
