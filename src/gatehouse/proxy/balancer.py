"""Choose an upstream endpoint for a route: the route's load-balancing policy over the
endpoints that may get traffic, with active and passive health.

Policies (``load_balancing_policy``, Envoy's meanings):

- ``ROUND_ROBIN`` (default): smooth weighted round robin (nginx's), weights from
  ``to: ["http://a,3", "http://b,1"]``; picks spread evenly instead of in bursts.
- ``LEAST_REQUEST``: with equal weights, the endpoint with fewer requests in flight out of
  ``choice_count`` (2) sampled at random; with weights, round robin on
  weight / (in flight + 1), Envoy's default ``active_request_bias`` of 1.
- ``RANDOM``: any endpoint, uniformly (Envoy's random balancer ignores weights).
- ``RING_HASH`` / ``MAGLEV``: consistent hashing of the session, else the client IP
  (:mod:`gatehouse.proxy.hashing`).

Which endpoints may get traffic: those that pass the active checks
(:mod:`gatehouse.proxy.health`) and are not ejected (:mod:`gatehouse.proxy.outlier`).
When fewer than ``healthy_panic_threshold`` % (50) of them do, every endpoint is used,
as Envoy's panic mode does; with the threshold at 0 there is no panic mode and no
healthy endpoint means 503. Apart from that, an endpoint that refuses a connection is
skipped for :data:`FAILURE_BACKOFF_S` (the request is retried on another); when every
endpoint is skipped so, the least recently failed one is tried anyway.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config.routes import RouteOptions, UpstreamURL
from ..errors import NoHealthyUpstream
from ..http.upstream import Endpoint
from . import health
from .circuit_breaker import CircuitBreaker
from .hashing import Maglev, Ring
from .outlier import NO_RESPONSE, Outliers

#: How long an endpoint that refused a connection is skipped, seconds.
FAILURE_BACKOFF_S = 10.0
#: Envoy's default ``healthy_panic_threshold``, %.
DEFAULT_PANIC_THRESHOLD = 50
#: Hash tables kept per balancer, one per set of endpoints that may get traffic.
HASH_TABLES_KEPT = 8
#: The balancers' shared source of random picks (not a secret: which endpoint to try).
_RNG = random.Random()
#: Plain-text (``http``/``h2c``) endpoints made for earlier routes and their Host header
#: value, by ``(scheme, host, port, server name)`` text.
SharedEndpoints = dict[str, tuple[Endpoint, bytes]]


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
    current: float = 0
    down_until: float = 0.0
    failures: int = field(default=0)
    #: Requests in flight (least request).
    active: int = 0
    #: The TLS client context of an https endpoint (for health checks).
    tls_context: ssl.SSLContext | None = None
    #: One state per ``health_checks`` entry (:mod:`gatehouse.proxy.health`).
    checks: list[health.CheckState] = field(default_factory=list)
    #: Outlier detection (:mod:`gatehouse.proxy.outlier`).
    ejected_until: float = 0.0
    ejections: int = 0
    consecutive_5xx: int = 0
    consecutive_gateway: int = 0
    requests: int = 0
    successes: int = 0

    @property
    def healthy(self) -> bool:
        """Passing every active check (true without checks)."""
        for state in self.checks:
            if not state.healthy:
                return False
        return True


def _host_header(scheme: str, host: str, port: int) -> bytes:
    """The Host header for an upstream: the port unless the scheme's default, an IPv6
    address in brackets, IDNA-encoded."""
    default_port = 443 if scheme == "https" else 80
    value = host if port == default_port else f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        value = f"[{host}]" + ("" if port == default_port else f":{port}")
    return value.encode("idna")


class Balancer:
    """The endpoints of one route."""

    __slots__ = (
        "__weakref__",
        "_checks_started",
        "_hash_tables",
        "_health",
        "_rng",
        "_single",
        "breaker",
        "choice_count",
        "has_checks",
        "hashing",
        "maglev_size",
        "outliers",
        "panic_threshold",
        "policy",
        "ring_bounds",
        "targets",
    )

    def __init__(
        self,
        targets: list[Target],
        policy: str = "ROUND_ROBIN",
        outliers: Outliers | None = None,
        panic_threshold: int = DEFAULT_PANIC_THRESHOLD,
    ) -> None:
        self.targets = targets
        self.policy = policy
        self.outliers = outliers
        self.panic_threshold = panic_threshold
        self.has_checks = any(t.checks for t in targets)
        self.hashing = policy in ("RING_HASH", "MAGLEV")
        plain = not self.has_checks and outliers is None
        self._single = targets[0] if len(targets) == 1 and plain else None
        self._checks_started = not self.has_checks
        self._health: health.Subject | None = None
        self._hash_tables: dict[tuple[int, ...], Ring[Target] | Maglev[Target]] = {}
        # One generator for every balancer: seeding one per route (from os.urandom, ~20
        # us) was a fifth of compiling 10,000 routes; the picks need no independence.
        self._rng = _RNG
        self.choice_count = 2
        self.ring_bounds = (1024, 8_388_608)
        self.maglev_size = 65537
        #: The route's circuit breaker, or ``None`` (no ``circuit_breaker_thresholds``).
        self.breaker: CircuitBreaker | None = None

    @classmethod
    def from_route(
        cls,
        route: RouteOptions,
        tls_context: ssl.SSLContext | None = None,
        h2_tls_context: ssl.SSLContext | None = None,
        endpoints: SharedEndpoints | None = None,
    ) -> Balancer:
        """The route's endpoints; ``tls_context`` (and ``h2_tls_context`` for gRPC calls)
        for its https ones (``tls/upstream``).

        ``endpoints``: plain-text endpoints of earlier routes, reused for the same
        upstream (an :class:`Endpoint` is immutable and pooled connections are keyed by
        its fields anyway) and added to. An https endpoint is never taken from it: its
        TLS settings are the route's own.
        """
        targets = []
        server_name = route.tls_upstream_server_name or route.tls_server_name
        for url in route.to or ():
            https = url.scheme == "https"
            shared = None
            key = ""
            if not https and endpoints is not None:
                key = repr((url.scheme, url.host, url.port, server_name))
                shared = endpoints.get(key)
            if shared is None:
                shared = (
                    Endpoint(
                        scheme=url.scheme,
                        host=url.host,
                        port=url.port,
                        server_name=server_name,
                        tls_context=tls_context if https else None,
                        h2_tls_context=h2_tls_context if https else None,
                    ),
                    _host_header(url.scheme, url.host, url.port),
                )
                if key and endpoints is not None:
                    endpoints[key] = shared
            endpoint, host_header = shared
            targets.append(
                Target(
                    url=url,
                    endpoint=endpoint,
                    host_header=host_header,
                    weight=url.weight,
                    url_text=url.url,
                    url_path=url.path,
                    checks=[health.CheckState(check) for check in route.health_checks],
                    tls_context=tls_context if https else None,
                )
            )
        outliers = (
            Outliers(route.outlier_detection, targets, time.monotonic())
            if route.outlier_detection is not None
            else None
        )
        panic = route.healthy_panic_threshold
        balancer = cls(
            targets,
            route.balancing_policy,
            outliers,
            DEFAULT_PANIC_THRESHOLD if panic is None else panic,
        )
        if route.least_request_lb_config is not None:
            balancer.choice_count = route.least_request_lb_config.choice_count
        if route.ring_hash_lb_config is not None:
            ring = route.ring_hash_lb_config
            balancer.ring_bounds = (ring.minimum_ring_size, ring.maximum_ring_size)
        if route.maglev_lb_config is not None:
            balancer.maglev_size = route.maglev_lb_config.table_size
        if route.circuit_breaker_thresholds is not None:
            balancer.breaker = CircuitBreaker(route.circuit_breaker_thresholds)
        if balancer.hashing and len(targets) > 1:
            balancer._hashed(targets, None)  # the full table now, while compiling
        balancer.start_checks()
        return balancer

    def start_checks(self) -> None:
        """Start the active checks now if compiled inside the event loop (a worker's
        start-up or reload), else at the first pick (``gatehouse check`` starts none)."""
        if self._checks_started:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._checks_started = True
        self._health = health.start(self)

    def pick(self, exclude: Target | None = None, key: bytes | None = None) -> Target:
        """The next endpoint to try (never ``exclude`` when another exists); ``key`` is
        the hash key for ``RING_HASH``/``MAGLEV``.

        Raises:
            NoHealthyUpstream: no endpoint may get traffic and panic mode is off.
        """
        single = self._single
        if single is not None:
            return single
        if not self._checks_started:
            self.start_checks()
        now = time.monotonic()
        pool = self._eligible(now)
        candidates = [t for t in pool if t.down_until <= now and t is not exclude]
        if not candidates:
            others = [t for t in pool if t is not exclude] or pool
            return min(others, key=lambda t: t.down_until)
        if len(candidates) == 1:
            return candidates[0]
        policy = self.policy
        if policy == "ROUND_ROBIN":
            return _smooth(candidates, [t.weight for t in candidates])
        if policy == "LEAST_REQUEST":
            return self._least_request(candidates)
        if policy == "RANDOM":
            return self._rng.choice(candidates)
        return self._hashed(candidates, key)

    def _eligible(self, now: float) -> list[Target]:
        """The endpoints that may get traffic: healthy and not ejected, or all in panic."""
        outliers = self.outliers
        if outliers is not None and now >= outliers.next_sweep:
            outliers.sweep(now)
        if not self.has_checks and outliers is None:
            return self.targets
        up = [t for t in self.targets if t.healthy and t.ejected_until <= now]
        if len(up) * 100 < self.panic_threshold * len(self.targets):
            return self.targets  # panic mode: Envoy spreads over every endpoint
        if not up:
            raise NoHealthyUpstream("no healthy upstream")
        return up

    def _least_request(self, candidates: list[Target]) -> Target:
        first = candidates[0].weight
        if all(t.weight == first for t in candidates):
            # Power of N choices; Envoy samples with replacement.
            picks = [self._rng.choice(candidates) for _ in range(self.choice_count)]
            return min(picks, key=lambda t: t.active)
        return _smooth(candidates, [t.weight / (t.active + 1) for t in candidates])

    def _hashed(self, candidates: list[Target], key: bytes | None) -> Target:
        ids = tuple(id(t) for t in candidates)
        table = self._hash_tables.get(ids)
        if table is None:
            names = [t.url_text for t in candidates]
            weights = [t.weight for t in candidates]
            if self.policy == "RING_HASH":
                low, high = self.ring_bounds
                table = Ring(candidates, names, weights, low, high)
            else:
                table = Maglev(candidates, names, weights, self.maglev_size)
            if len(self._hash_tables) >= HASH_TABLES_KEPT:
                self._hash_tables.clear()
            self._hash_tables[ids] = table
        return table.pick(key or b"")

    def health_changed(self) -> None:
        """An active check changed an endpoint's health (hash tables stay cached by set)."""

    def record(self, target: Target, status: int | None) -> None:
        """A response's status from ``target`` (``None``: no response), for ejection."""
        outliers = self.outliers
        if outliers is not None:
            outliers.record(target, NO_RESPONSE if status is None else status, time.monotonic())

    def mark_failed(self, target: Target) -> None:
        """The endpoint refused or failed a connection: skip it for a while."""
        target.failures += 1
        target.down_until = time.monotonic() + FAILURE_BACKOFF_S
        self.record(target, None)

    def mark_ok(self, target: Target) -> None:
        if target.down_until:
            target.down_until = 0.0
            target.failures = 0

    @property
    def size(self) -> int:
        return len(self.targets)


def start_health_checks(routes: Iterable[Any]) -> None:
    """Start the active checks of ``routes``' balancers that have not started (routes are
    compiled before the loop runs, by ``gatehouse run``'s check, or by a reload's slices,
    and reused across reloads)."""
    for route in routes:
        balancer = getattr(route, "balancer", None)
        if balancer is not None:
            balancer.start_checks()


def _smooth(candidates: list[Target], weights: list[float]) -> Target:
    """Smooth weighted round robin: every pick adds each weight to its endpoint's
    counter; the highest wins and gives back the total."""
    total = 0.0
    best = candidates[0]
    for t, w in zip(candidates, weights, strict=True):
        t.current += w
        total += w
        if t.current > best.current:
            best = t
    best.current -= total
    return best
