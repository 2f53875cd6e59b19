"""The identity assertion forwarded to upstreams (``X-Pomerium-Jwt-Assertion``), cached.

An assertion is a compact JWS (see :mod:`.jws`) with exactly Pomerium's claims::

    iss     route host (port stripped), or "https://<host>/" with jwt_issuer_format: uri
    aud     route host, a string
    sub     IdP subject            user    the same (Pomerium keeps both)
    email   name                   groups  a list, [] when none (never null)
    sid     session id             jti     unique per signed token
    iat     integer seconds        exp     iat + 300

plus any claim named in ``jwt_claims_headers`` that is not one of those (lists kept as
lists). The same claims become ``X-Pomerium-Claim-*`` headers, lists comma-joined.

Theory of operation: :meth:`AssertionMinter.mint` keys an LRU bounded by memory
(``assertion_cache_max_bytes``; the least recently used go first) by (session id, host,
:class:`AssertionSpec`). A cached token is reused while more than half its life is left,
the session record it was made from is unchanged, and its key is still the signer;
otherwise a new one is signed. With a 300 s life, a busy session signs once per 150 s
per host, and a hit costs about a microsecond instead of ~60 us for an ES256 signature.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gatehouse.errors import ConfigError, Unauthenticated
from gatehouse.sessions.model import Session

from .jws import JwsSigner
from .keys import KeySet, SigningKey

if TYPE_CHECKING:
    from gatehouse.config import Options, RouteOptions

#: The header carrying the assertion (Pomerium's name; verifiers look for it).
ASSERTION_HEADER = "X-Pomerium-Jwt-Assertion"
#: Where a client-sent assertion is moved on routes that pass identity headers.
ASSERTION_FOR_HEADER = "X-Pomerium-Jwt-Assertion-For"
#: Prefix of the per-claim headers.
CLAIM_HEADER_PREFIX = "X-Pomerium-Claim-"
#: Lifetime of an assertion in seconds (Pomerium: 5 minutes).
ASSERTION_LIFETIME_S = 300
#: Memory for cached assertions per process (about 2.2 KiB each: ~120,000 at the bound).
DEFAULT_CACHE_MAX_BYTES = 256 * 1024 * 1024
#: Bytes per cache entry besides the token and header strings: the entry, the
#: ``Assertion``, the fingerprint and key tuples, the ordered-dict slot and the
#: per-session key set (measured with tracemalloc, CPython 3.11).
ENTRY_OVERHEAD_BYTES = 900
#: Claims every assertion carries; a jwt_claims_headers entry never overrides them.
BASE_CLAIMS = frozenset(
    {"iss", "aud", "sub", "user", "email", "name", "groups", "sid", "jti", "iat", "exp"}
)

IssuerFormat = Literal["hostOnly", "uri"]
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
# Header values must not carry control characters (RFC 9110 §5.5): IdP claims are untrusted.
_CONTROL = dict.fromkeys([*range(0x20), 0x7F])
del _CONTROL[0x09]


@dataclass(frozen=True, slots=True)
class AssertionSpec:
    """What a route's assertions look like; build one per route when config is compiled.

    Hashable, so it is part of the cache key: two routes with the same spec share tokens
    for the same host.
    """

    issuer_format: IssuerFormat = "hostOnly"
    #: ``(header name, claim name)`` pairs, in config order.
    claims_headers: tuple[tuple[str, str], ...] = ()
    #: When set, only these groups are put in the token (``jwt_groups_filter``).
    groups_filter: frozenset[str] | None = None

    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        value = hash((self.issuer_format, self.claims_headers, self.groups_filter))
        object.__setattr__(self, "_hash", value)

    def __hash__(self) -> int:
        # Part of the minter's cache key on every request: hashed once, at build time
        # (the generated dataclass hash would re-hash every field on each lookup).
        return self._hash

    @classmethod
    def build(
        cls,
        issuer_format: IssuerFormat = "hostOnly",
        claims_headers: Mapping[str, str] | None = None,
        groups_filter: Iterable[str] = (),
    ) -> AssertionSpec:
        """Check and freeze the options.

        Raises:
            ConfigError: a header name that is not an HTTP token, or an unknown issuer format.
        """
        if issuer_format not in ("hostOnly", "uri"):
            raise ConfigError(
                [f"jwt_issuer_format: expected hostOnly or uri, got {issuer_format!r}"]
            )
        pairs = tuple((claims_headers or {}).items())
        for name, claim in pairs:
            if not name or not set(name) <= _TOKEN_CHARS:
                raise ConfigError([f"jwt_claims_headers: {name!r} is not a valid header name"])
            if not claim:
                raise ConfigError([f"jwt_claims_headers: header {name!r} names no claim"])
        groups = frozenset(groups_filter)
        return cls(issuer_format, pairs, groups or None)

    @classmethod
    def for_route(cls, options: Options, route: RouteOptions) -> AssertionSpec:
        """The spec for a route: its ``jwt_issuer_format`` wins over the global one."""
        fmt: IssuerFormat = route.jwt_issuer_format or options.jwt_issuer_format
        return cls.build(fmt, options.jwt_claims_headers, options.jwt_groups_filter)


DEFAULT_SPEC = AssertionSpec()


@dataclass(frozen=True, slots=True)
class Assertion:
    """A signed assertion and the claim headers that go with it."""

    jwt: str
    #: ``(X-Pomerium-Claim-..., value)`` pairs, in config order; absent claims omitted.
    claim_headers: tuple[tuple[str, str], ...]
    issued_at: int
    expires_at: int
    kid: str
    #: :meth:`headers` as they go on the wire (lower-case names, latin-1), made once.
    wire_headers: tuple[tuple[bytes, bytes], ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        wire = tuple(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self.headers()
        )
        object.__setattr__(self, "wire_headers", wire)

    def headers(self) -> list[tuple[str, str]]:
        """Every header to add to the upstream request."""
        return [(ASSERTION_HEADER, self.jwt), *self.claim_headers]


@dataclass(slots=True)
class _Entry:
    assertion: Assertion
    session: Session
    fingerprint: tuple[Any, ...]
    fresh_until: float
    kid: str
    size: int  # bytes charged against the budget


def _entry_bytes(assertion: Assertion) -> int:
    # Each header is held twice: as text and in ``wire_headers`` as bytes.
    size = ENTRY_OVERHEAD_BYTES + 2 * sys.getsizeof(assertion.jwt)
    for name, value in assertion.claim_headers:
        size += 2 * (sys.getsizeof(name) + sys.getsizeof(value))
    return size


def _fingerprint(s: Session) -> tuple[Any, ...]:
    # A refreshed record may keep its id; these fields change with anything we put in a token.
    return (s.user_id, s.email, s.name, s.groups, s.issued_at, s.last_refresh_at)


def strip_port(host: str) -> str:
    """``host[:port]`` or ``[v6]:port`` to the bare, lower-case host."""
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1].lower() if end > 0 else host.lower()
    if ":" in host:
        host = host.rsplit(":", 1)[0]
    return host.lower()


def claim_header_value(value: Any) -> str | None:
    """A claim as a header value: lists comma-joined, JSON for objects, ``None`` if absent."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple):
        parts = [claim_header_value(v) for v in value]
        text = ",".join(p for p in parts if p is not None)
    elif isinstance(value, int | float):
        text = json.dumps(value)
    else:
        text = json.dumps(value, separators=(",", ":"), default=str)
    return text.translate(_CONTROL)


_Key = tuple[str, str, AssertionSpec]


class _Store:
    """The cached assertions, shared by the minters of successive configs (a reload keeps
    them: each entry is checked against the current signer and session when used)."""

    __slots__ = ("by_session", "bytes", "entries", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.entries: OrderedDict[_Key, _Entry] = OrderedDict()
        #: Cache keys by session id, so a sign-out drops its tokens without a full scan.
        self.by_session: dict[str, set[_Key]] = {}
        self.bytes = 0
        self.max_bytes = max_bytes

    def put(self, key: _Key, entry: _Entry) -> None:
        old = self.entries.get(key)
        if old is not None:
            self.bytes -= old.size
        else:
            self.by_session.setdefault(key[0], set()).add(key)
        self.entries[key] = entry
        self.entries.move_to_end(key)
        self.bytes += entry.size
        # Least recently used first, one at a time (never a clear of the whole cache).
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            evicted_key, evicted = self.entries.popitem(last=False)
            self.bytes -= evicted.size
            keys = self.by_session.get(evicted_key[0])
            if keys is not None:
                keys.discard(evicted_key)
                if not keys:
                    del self.by_session[evicted_key[0]]

    def forget(self, session_id: str) -> None:
        for k in self.by_session.pop(session_id, ()):
            entry = self.entries.pop(k, None)
            if entry is not None:
                self.bytes -= entry.size

    def clear(self) -> None:
        self.entries.clear()
        self.by_session.clear()
        self.bytes = 0


class AssertionMinter:
    """Signs assertions for (session, host) and keeps them while they are fresh."""

    def __init__(
        self,
        keyset: KeySet,
        *,
        lifetime_s: int = ASSERTION_LIFETIME_S,
        cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keyset = keyset
        self._lifetime_s = int(lifetime_s)
        self._reuse_s = self._lifetime_s / 2
        self._clock = clock
        self._signers: dict[str, JwsSigner] = {}
        self._store = _Store(cache_max_bytes)

    def for_config(self, keyset: KeySet, cache_max_bytes: int) -> AssertionMinter:
        """A minter for a reloaded config that keeps this one's cached assertions (a
        cached token is reused only while its key is still the signer)."""
        minter = AssertionMinter(keyset, lifetime_s=self._lifetime_s, clock=self._clock)
        minter._signers = self._signers  # by key id, a thumbprint of the key
        minter._store = self._store
        self._store.max_bytes = cache_max_bytes
        return minter

    @property
    def keyset(self) -> KeySet:
        return self._keyset

    def mint(self, session: Session, host: str, spec: AssertionSpec = DEFAULT_SPEC) -> Assertion:
        """The assertion for ``session`` on the route host ``host``, from cache when fresh."""
        now = self._clock()
        cache_key = (session.id, host, spec)
        store = self._store
        entry = store.entries.get(cache_key)
        if (
            entry is not None
            and entry.assertion.issued_at <= now < entry.fresh_until
            and (entry.session is session or entry.fingerprint == _fingerprint(session))
            and entry.kid == self._keyset.signer(now).kid
        ):
            store.entries.move_to_end(cache_key)
            return entry.assertion
        assertion = self.sign(session, host, spec, now=now)
        store.put(
            cache_key,
            _Entry(
                assertion,
                session,
                _fingerprint(session),
                assertion.issued_at + self._reuse_s,
                assertion.kid,
                _entry_bytes(assertion),
            ),
        )
        return assertion

    @property
    def cache_bytes(self) -> int:
        """Estimated memory held by cached assertions."""
        return self._store.bytes

    def __len__(self) -> int:
        return len(self._store.entries)

    def sign(
        self,
        session: Session,
        host: str,
        spec: AssertionSpec = DEFAULT_SPEC,
        *,
        now: float | None = None,
    ) -> Assertion:
        """A freshly signed assertion (no cache).

        Raises:
            Unauthenticated: the session has no subject (verifiers such as Grafana need one).
        """
        if not session.user_id:
            raise Unauthenticated("session has no user id: refusing to assert an empty subject")
        now = self._clock() if now is None else now
        key = self._keyset.signer(now)
        host = strip_port(host)
        iat = int(now)
        exp = iat + self._lifetime_s
        groups = list(session.groups)
        if spec.groups_filter is not None:
            groups = [g for g in groups if g in spec.groups_filter]
        claims: dict[str, Any] = {
            "iss": f"https://{host}/" if spec.issuer_format == "uri" else host,
            "aud": host,
            "sub": session.user_id,
            "user": session.user_id,
            "email": session.email,
            "name": session.name,
            "groups": groups,
            "sid": session.id,
            "jti": str(uuid.uuid4()),
            "iat": iat,
            "exp": exp,
        }
        headers: list[tuple[str, str]] = []
        for header, claim in spec.claims_headers:
            if claim in BASE_CLAIMS:
                value = claims[claim]
            else:
                value = session.claims.get(claim)
                if value is not None:
                    claims[claim] = value
            # A claim the user lacks is sent as an empty header, as Pomerium does, so an
            # upstream never sees a stale value for it from anywhere else.
            headers.append((header, claim_header_value(value) or ""))
        jwt = self._signer(key).sign(claims)
        return Assertion(jwt, tuple(headers), iat, exp, key.kid)

    def forget_session(self, session_id: str) -> None:
        """Drop a session's cached assertions (after sign-out)."""
        self._store.forget(session_id)

    def clear(self) -> None:
        self._store.clear()

    def _signer(self, key: SigningKey) -> JwsSigner:
        signer = self._signers.get(key.kid)
        if signer is None:
            signer = self._signers[key.kid] = JwsSigner(key)
        return signer


__all__ = [
    "ASSERTION_FOR_HEADER",
    "ASSERTION_HEADER",
    "ASSERTION_LIFETIME_S",
    "BASE_CLAIMS",
    "CLAIM_HEADER_PREFIX",
    "DEFAULT_SPEC",
    "Assertion",
    "AssertionMinter",
    "AssertionSpec",
    "claim_header_value",
    "strip_port",
]
