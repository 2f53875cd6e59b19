"""The routes portal: the routes a signed-in user may reach (Pomerium's ``/.pomerium/routes``).

Served on every route host: ``GET /.pomerium/routes`` (HTML) and
``GET /.pomerium/api/v1/routes`` (JSON ``{"routes": [...]}``, each entry with Pomerium's
fields ``id``, ``name``, ``type``, ``from``, ``description``, ``logo_url`` and, for TCP and
UDP routes, ``connect_command``). Both need a session, as in Pomerium.

Which routes are listed differs from Pomerium on purpose. Pomerium guesses from the simple
allow rules (ignoring deny rules and anything with ``not``, ``nor`` or two ``and``
criteria), so it lists routes a deny rule closes and misses routes a compound rule opens.
Gatehouse asks each route's compiled policy the real question: may this user ``GET`` the
route's entry path (the ``prefix`` or ``path``, else ``/``) from this client address, now?
A route is listed when the answer is "allow". Criteria that depend on the request itself
(method, other paths, headers) are judged for that one request; a route reachable only
under other conditions is not listed. Redirect and direct-response routes are listed like
any other: they are places a user can go.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..authorize.decision import Outcome
from ..authorize.input import PolicyInput
from ..http.messages import Request, Response
from ..pages import render
from ..sessions.model import Session
from .route_index import MATCH_PATH, MATCH_PREFIX
from .router import Route

ROUTES_PAGE_PATH = "/.pomerium/routes"
ROUTES_API_PATH = "/.pomerium/api/v1/routes"

CurrentSession = Callable[[Request], Awaitable[Session | None]]
SignIn = Callable[[Request], Response]


@dataclass(frozen=True, slots=True)
class PortalRoute:
    """One entry of the portal, with Pomerium's JSON field names."""

    id: str
    name: str
    type: str
    from_: str
    description: str
    logo_url: str
    connect_command: str | None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "from": self.from_,
            "description": self.description,
            "logo_url": self.logo_url,
        }
        if self.connect_command:
            out["connect_command"] = self.connect_command
        return out


def portal_route(route: Route) -> PortalRoute:
    """The portal's view of ``route`` (the name falls back to the ``from`` host)."""
    options = route.options
    source = options.from_
    scheme = urlsplit(source).scheme.lower()
    kind, command = "http", None
    if scheme.startswith(("tcp+", "udp+")):
        kind = scheme[:3]
        parts = urlsplit(source)
        target = source if len(parts.path) > 1 else parts.netloc
        command = f"pomerium-cli {kind} {target}"
    route_id = options.id or hashlib.sha256(f"{source}\x00{route.index}".encode()).hexdigest()[:16]
    return PortalRoute(
        id=route_id,
        name=options.name or urlsplit(source).hostname or source,
        type=kind,
        from_=source,
        description=options.description or "",
        logo_url=options.logo_url or "",
        connect_command=command,
    )


def _entry_path(route: Route) -> str:
    if route.match_kind in (MATCH_PREFIX, MATCH_PATH) and route.match_value.startswith("/"):
        return route.match_value
    return "/"


def may_reach(route: Route, session: Session, client_ip: str, now: float) -> bool:
    """Whether ``session`` may ``GET`` the route's entry path now (see the module doc)."""
    policy = route.policy
    if policy is None or policy.allows_everyone:
        return True
    decision = policy.evaluate(
        PolicyInput(
            method="GET", path=_entry_path(route), source_ip=client_ip, session=session, now=now
        )
    )
    return bool(decision.outcome is Outcome.ALLOW)


class RoutesPortal:
    """The two portal endpoints over the routes of one config."""

    def __init__(self, routes: Sequence[Route], current: CurrentSession, sign_in: SignIn) -> None:
        self._routes = tuple(routes)
        self._entries = tuple(portal_route(r) for r in self._routes)
        self._current = current
        self._sign_in = sign_in

    def handlers(self) -> dict[str, Callable[[Request], Awaitable[Response]]]:
        return {ROUTES_PAGE_PATH: self.page, ROUTES_API_PATH: self.api}

    def reachable(self, session: Session, client_ip: str) -> list[PortalRoute]:
        now = time.time()
        return [
            entry
            for route, entry in zip(self._routes, self._entries, strict=True)
            if may_reach(route, session, client_ip, now)
        ]

    async def page(self, request: Request) -> Response:
        session = await self._current(request)
        if session is None:
            return self._sign_in(request)
        routes = self.reachable(session, request.client_ip)
        return Response.html(
            render("routes.html", session=session, routes=[_shown(r) for r in routes]),
            headers=[("Cache-Control", "no-store")],
        )

    async def api(self, request: Request) -> Response:
        session = await self._current(request)
        if session is None:
            return self._sign_in(request)  # a browser signs in first, as on the page
        routes = self.reachable(session, request.client_ip)
        return Response.json(
            {"routes": [r.as_json() for r in routes]}, headers=[("Cache-Control", "no-store")]
        )


def _shown(route: PortalRoute) -> dict[str, Any]:
    """Template values: a link only for an HTTP(S) ``from`` without wildcards; a logo only
    from an ``https:`` or ``data:image/`` URL (never ``javascript:``)."""
    link = None
    parts = urlsplit(route.from_)
    if parts.scheme in ("http", "https") and "*" not in parts.netloc:
        link = route.from_
    logo = route.logo_url
    if not (logo.startswith("https://") or logo.startswith("data:image/")):
        logo = ""
    return {"entry": route, "link": link, "logo": logo}
