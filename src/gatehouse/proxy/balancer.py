"""Choose an upstream endpoint for a route: smooth weighted round robin with passive health.

Weights come from ``to: ["http://a,3", "http://b,1"]``. The smooth variant (as nginx's)
spreads picks evenly instead of sending bursts to the heaviest endpoint. An endpoint that
refuses connections is skipped for :data:`FAILURE_BACKOFF_S`; when every endpoint is
marked down, the least recently failed one is tried anyway rather than failing outright.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field

from ..config.routes import RouteOptions, UpstreamURL
from ..http.upstream import Endpoint

#: How long an endpoint that refused a connection is skipped, seconds.
FAILURE_BACKOFF_S = 10.0


@dataclass(slots=True, eq=False)
class Target:
    """One endpoint of a route with its balancing state."""

    url: UpstreamURL
    endpoint: Endpoint
    host_header: bytes
    weight: int
    #: ``url.url`` and ``url.path`` copied out of the config model (read per request).
    url_text: str = ""
    url_path: str = ""
    current: int = 0
    down_until: float = 0.0
    failures: int = field(default=0)


class Balancer:
    """The endpoints of one route."""

    __slots__ = ("_single", "targets")

    def __init__(self, targets: list[Target]) -> None:
        self.targets = targets
        self._single = targets[0] if len(targets) == 1 else None

    @classmethod
    def from_route(cls, route: RouteOptions, tls_context: ssl.SSLContext | None = None) -> Balancer:
        """The route's endpoints; ``tls_context`` for its https ones (``tls/upstream``)."""
        targets = []
        for url in route.to or ():
            default_port = 443 if url.scheme == "https" else 80
            host_header = url.host if url.port == default_port else f"{url.host}:{url.port}"
            if ":" in url.host and not url.host.startswith("["):
                host_header = f"[{url.host}]" + ("" if url.port == default_port else f":{url.port}")
            targets.append(
                Target(
                    url=url,
                    endpoint=Endpoint(
                        scheme=url.scheme,
                        host=url.host,
                        port=url.port,
                        server_name=route.tls_upstream_server_name or route.tls_server_name,
                        tls_context=tls_context if url.scheme == "https" else None,
                    ),
                    host_header=host_header.encode("idna"),
                    weight=url.weight,
                    url_text=url.url,
                    url_path=url.path,
                )
            )
        return cls(targets)

    def pick(self, exclude: Target | None = None) -> Target:
        """The next endpoint to try (never ``exclude`` when another exists)."""
        single = self._single
        if single is not None:
            return single
        now = time.monotonic()
        candidates = [t for t in self.targets if t.down_until <= now and t is not exclude]
        if not candidates:
            others = [t for t in self.targets if t is not exclude] or self.targets
            return min(others, key=lambda t: t.down_until)
        total = 0
        best = candidates[0]
        for t in candidates:
            t.current += t.weight
            total += t.weight
            if t.current > best.current:
                best = t
        best.current -= total
        return best

    def mark_failed(self, target: Target) -> None:
        """The endpoint refused or failed a connection: skip it for a while."""
        target.failures += 1
        target.down_until = time.monotonic() + FAILURE_BACKOFF_S

    def mark_ok(self, target: Target) -> None:
        if target.down_until:
            target.down_until = 0.0
            target.failures = 0

    @property
    def size(self) -> int:
        return len(self.targets)
