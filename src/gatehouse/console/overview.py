"""What the console's overview shows: sessions, recent decisions, signing keys, health.

Everything is read from this process (its session manager, decision tally and key set)
or probed on the spot with a short timeout (the session store, the IdP's discovery
document), so the page tells the state as it is now.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from dataclasses import dataclass

import httpx

from ..config.options import Options
from ..errors import GatehouseError
from ..identity import AssertionMinter
from ..sessions.manager import SessionManager
from ..sessions.model import Session

#: Longest wait for a health probe, seconds.
PROBE_TIMEOUT_S = 3.0
#: Most sessions listed.
MAX_SESSIONS = 200


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    #: A short hash of the id, for display and the audit log.
    ref: str
    user: str
    name: str
    groups: str
    last_seen: str
    expires: str
    #: Routes this user was decided on by this process.
    routes: str = ""


@dataclass(frozen=True, slots=True)
class KeyRow:
    kid: str
    alg: str
    source: str
    signs_from: str
    signing_now: bool


@dataclass(frozen=True, slots=True)
class Health:
    name: str
    ok: bool
    detail: str


def session_ref(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()[:12]


def ago(t: float, now: float) -> str:
    if t <= 0:
        return "unknown"
    seconds = max(0, int(now - t))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m ago"
    return f"{seconds // 86400}d ago"


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def session_rows(
    sessions: list[Session], routes: dict[str, list[str]] | None = None
) -> list[SessionRow]:
    now = time.time()
    routes = routes or {}
    return [
        SessionRow(
            id=s.id,
            ref=session_ref(s.id),
            user=s.email or s.user_id,
            name=s.name,
            groups=", ".join(s.groups),
            last_seen=ago(s.last_seen_at or s.issued_at, now),
            expires=_utc(s.expires_at),
            routes=", ".join(routes.get(s.email or s.user_id, [])[:10]),
        )
        for s in sessions
    ]


async def list_sessions(
    manager: SessionManager | None, routes: dict[str, list[str]] | None = None
) -> tuple[list[SessionRow] | None, str]:
    """The signed-in sessions, or ``None`` and why they cannot be listed."""
    if manager is None:
        return None, "sign-in is not configured"
    try:
        found = await manager.store.list_sessions(MAX_SESSIONS)
    except GatehouseError as exc:
        return None, f"the session store is unavailable ({type(exc).__name__})"
    if found is None:
        return None, "this session store cannot list sessions"
    return session_rows(found, routes), ""


def key_rows(minter: AssertionMinter | None) -> list[KeyRow]:
    if minter is None:
        return []
    keyset = minter.keyset
    try:
        signer = keyset.signer().kid
    except GatehouseError:
        signer = ""
    starts: dict[str, float] = {}
    for at, key in keyset.schedule:
        starts.setdefault(key.kid, at)
    rows = []
    for key in keyset.keys:
        start = starts.get(key.kid)
        if start is None:
            when = "published only"
        elif math.isinf(start):
            when = "from the start"
        else:
            when = _utc(start)
        rows.append(KeyRow(key.kid, key.alg, key.source, when, key.kid == signer))
    return rows


async def store_health(manager: SessionManager | None) -> Health:
    if manager is None:
        return Health("session store", False, "sign-in is not configured")
    started = time.monotonic()
    try:
        # A read of an id that cannot exist: a round trip without side effects.
        await manager.store.get("console-probe-" + secrets.token_hex(8))
    except GatehouseError as exc:
        return Health("session store", False, f"unavailable ({type(exc).__name__})")
    ms = (time.monotonic() - started) * 1000
    return Health("session store", True, f"{ms:.1f} ms ({manager.store.__class__.__name__})")


async def idp_health(options: Options, client: httpx.AsyncClient | None) -> Health:
    provider = options.idp_provider
    if provider is None:
        return Health("identity provider", False, "not configured")
    if provider == "builtin":
        return Health("identity provider", True, "built in (served by this process)")
    if client is None or not options.idp_provider_url:
        return Health("identity provider", True, f"{provider} (not probed: no issuer URL)")
    url = options.idp_provider_url.rstrip("/") + "/.well-known/openid-configuration"
    started = time.monotonic()
    try:
        response = await client.get(url, timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return Health("identity provider", False, f"{url}: {type(exc).__name__}")
    ms = (time.monotonic() - started) * 1000
    ok = response.status_code == 200
    return Health("identity provider", ok, f"{url}: HTTP {response.status_code}, {ms:.0f} ms")
