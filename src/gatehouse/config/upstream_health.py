"""Route keys for choosing and watching upstream endpoints: ``load_balancing_policy``
(and the older ``lb_policy`` with its ``*_lb_config``), ``health_checks``,
``outlier_detection`` and ``healthy_panic_threshold``.

Pomerium passes these to Envoy's cluster (``config/envoyconfig/clusters.go``), so their
shapes and defaults are Envoy's (``envoy.config.cluster.v3.Cluster``,
``envoy.config.core.v3.HealthCheck``, ``envoy.config.cluster.v3.OutlierDetection``).
What gatehouse does with them is in :mod:`gatehouse.proxy.balancer`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from .base import StrictModel
from .durations import Duration

POLICIES = ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV")
#: Largest Maglev table accepted (Envoy allows 5000011): building one takes about 1.4 s
#: of Python per million entries, on the event loop when health changes.
MAX_MAGLEV_TABLE = 1_000_003


def _policy_name(value: Any) -> Any:
    """Envoy's enum names in any case, with or without Pomerium's proto prefix."""
    if isinstance(value, str):
        name = value.strip().upper()
        return name.removeprefix("LOAD_BALANCING_POLICY_")
    return value


LoadBalancingPolicy = Annotated[
    Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"],
    BeforeValidator(_policy_name),
]


class LeastRequestConfig(StrictModel):
    """Envoy's ``least_request_lb_config``."""

    #: Endpoints sampled per pick when all weights are equal (power of N choices).
    choice_count: int = Field(default=2, ge=2)


class RingHashConfig(StrictModel):
    """Envoy's ``ring_hash_lb_config``."""

    #: Fewest entries on the hash ring.
    minimum_ring_size: int = Field(default=1024, ge=1, le=8_388_608)
    #: Most entries on the hash ring.
    maximum_ring_size: int = Field(default=8_388_608, ge=1, le=8_388_608)
    #: Only `XX_HASH` (Envoy's default) is accepted; gatehouse's hash is its own.
    hash_function: Literal["XX_HASH"] = "XX_HASH"

    @model_validator(mode="after")
    def _sizes(self) -> RingHashConfig:
        if self.minimum_ring_size > self.maximum_ring_size:
            raise ValueError("minimum_ring_size is larger than maximum_ring_size")
        return self


class MaglevConfig(StrictModel):
    """Envoy's ``maglev_lb_config``."""

    #: Lookup table size: a prime (Envoy's default 65537), at most 1000003 here (a table is
    #: rebuilt when an endpoint's health changes, on the event loop).
    table_size: int = Field(default=65537, ge=2, le=MAX_MAGLEV_TABLE)

    @field_validator("table_size")
    @classmethod
    def _prime(cls, value: int) -> int:
        if value < 2 or any(value % d == 0 for d in range(2, int(value**0.5) + 1)):
            raise ValueError(f"table_size must be a prime number, not {value}")
        return value


class StatusRange(StrictModel):
    """Envoy's ``Int64Range``: statuses from ``start`` up to, not including, ``end``."""

    start: int = Field(ge=100, le=599)
    end: int = Field(ge=101, le=600)

    @model_validator(mode="after")
    def _order(self) -> StatusRange:
        if self.end <= self.start:
            raise ValueError("end must be greater than start (the range excludes end)")
        return self


class HttpHealthCheck(StrictModel):
    """Envoy's ``http_health_check``."""

    #: Path requested (GET).
    path: str
    #: Host header of the check; empty = the endpoint's host (Envoy uses the cluster name,
    #: which is meaningless outside Envoy).
    host: str = ""
    #: Healthy statuses as `{start, end}` ranges (end excluded); default 200 only.
    expected_statuses: list[StatusRange] = Field(default_factory=list)
    #: `HTTP1` or `HTTP2` (h2c with prior knowledge, or ALPN `h2` to https endpoints);
    #: `h2c://` endpoints are always checked over HTTP/2 (HTTP/1.1 cannot reach them).
    codec_client_type: Literal["HTTP1", "HTTP2"] = "HTTP1"

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in " \r\n\t\x00"):
            raise ValueError("must start with / and hold no spaces or control characters")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if any(c in value for c in " \r\n\t\x00/"):
            raise ValueError("must be a host[:port]")
        return value

    @field_validator("codec_client_type", mode="before")
    @classmethod
    def _codec(cls, value: Any) -> Any:
        if isinstance(value, str) and value.upper() not in ("HTTP1", "HTTP2"):
            raise ValueError(
                f"{value!r} is not supported by gatehouse (health checks speak HTTP/1.1 or HTTP/2)"
            )
        return value.upper() if isinstance(value, str) else value


class GrpcHealthCheck(StrictModel):
    """Envoy's ``grpc_health_check``: the gRPC health-checking protocol
    (``grpc.health.v1.Health/Check``) over HTTP/2; healthy when the answer is SERVING."""

    #: The service asked about; empty = the server as a whole.
    service_name: str = ""
    #: `:authority` of the check; empty = the endpoint's host.
    authority: str = ""

    @field_validator("authority")
    @classmethod
    def _authority(cls, value: str) -> str:
        if any(c in value for c in " \r\n\t\x00/"):
            raise ValueError("must be a host[:port]")
        return value


class HealthCheck(StrictModel):
    """One ``health_checks`` entry (Envoy's ``HealthCheck``): an HTTP or a gRPC check."""

    #: Longest wait for a check's response.
    timeout: Duration
    #: Time between checks of an endpoint.
    interval: Duration
    #: Checks failing in a row (timeouts, refused connections) before an endpoint is
    #: unhealthy; a status outside `expected_statuses` makes it unhealthy at once (Envoy).
    unhealthy_threshold: int = Field(ge=1)
    #: Checks passing in a row before an unhealthy endpoint is healthy again.
    healthy_threshold: int = Field(ge=1)
    #: Time between checks of an endpoint while it is unhealthy; unset = `interval`.
    unhealthy_interval: Duration | None = None
    #: Random delay up to this before the first check.
    initial_jitter: Duration = 0.0
    #: Random extra delay up to this between checks.
    interval_jitter: Duration = 0.0
    #: Accepted (checks open a connection each time).
    reuse_connection: bool = True
    #: Accepted; gatehouse checks every `interval` whether or not there is traffic.
    no_traffic_interval: Duration | None = None
    #: An HTTP check.
    http_health_check: HttpHealthCheck | None = None
    #: A gRPC check (over HTTP/2: for `h2c://` endpoints and gRPC servers behind `https://`).
    grpc_health_check: GrpcHealthCheck | None = None
    #: Refused: gatehouse runs HTTP and gRPC checks only.
    tcp_health_check: Any = None

    @model_validator(mode="after")
    def _kind(self) -> HealthCheck:
        if self.tcp_health_check is not None:
            raise ValueError(
                "tcp_health_check is not supported by gatehouse (HTTP and gRPC checks only)"
            )
        if (self.http_health_check is None) == (self.grpc_health_check is None):
            raise ValueError("one of http_health_check and grpc_health_check is required")
        if self.timeout <= 0 or self.interval <= 0:
            raise ValueError("timeout and interval must be more than 0")
        return self


class OutlierDetection(StrictModel):
    """Envoy's ``outlier_detection`` (passive ejection); ``{}`` enables Envoy's defaults."""

    #: Responses of 5xx (or failed connections) in a row that eject an endpoint.
    consecutive_5xx: int = Field(default=5, ge=1)
    #: % chance that reaching `consecutive_5xx` ejects.
    enforcing_consecutive_5xx: int = Field(default=100, ge=0, le=100)
    #: 502, 503, 504 (or failed connections) in a row that eject an endpoint...
    consecutive_gateway_failure: int = Field(default=5, ge=1)
    #: ...with this % chance (0 by default: off, as in Envoy).
    enforcing_consecutive_gateway_failure: int = Field(default=0, ge=0, le=100)
    #: Time between success-rate sweeps (and un-ejection checks).
    interval: Duration = 10.0
    #: An ejection lasts this times the number of times the endpoint was ejected...
    base_ejection_time: Duration = 30.0
    #: ...but at most this.
    max_ejection_time: Duration = 300.0
    #: Most endpoints ejected at once, in % (at least one may always be).
    max_ejection_percent: int = Field(default=10, ge=0, le=100)
    #: Success-rate ejection: % chance an outlier is ejected (0 = off).
    enforcing_success_rate: int = Field(default=100, ge=0, le=100)
    #: Endpoints with `success_rate_request_volume` requests in an interval needed to sweep.
    success_rate_minimum_hosts: int = Field(default=5, ge=1)
    #: Requests in an interval an endpoint needs to be judged.
    success_rate_request_volume: int = Field(default=100, ge=1)
    #: Ejected below mean - (this / 1000) * standard deviation.
    success_rate_stdev_factor: int = Field(default=1900, ge=0)
    #: Refused unless 0: failure-percentage ejection is not implemented.
    enforcing_failure_percentage: int = Field(default=0, ge=0, le=100)
    #: Accepted; only used with failure-percentage ejection.
    failure_percentage_threshold: int = Field(default=85, ge=0, le=100)
    #: Accepted; only used with failure-percentage ejection.
    failure_percentage_minimum_hosts: int = Field(default=5, ge=0)
    #: Accepted; only used with failure-percentage ejection.
    failure_percentage_request_volume: int = Field(default=50, ge=0)
    #: Refused when true: local-origin errors count as 5xx (Envoy's default).
    split_external_local_origin_errors: bool = False

    @model_validator(mode="after")
    def _supported(self) -> OutlierDetection:
        if self.enforcing_failure_percentage:
            raise ValueError(
                "enforcing_failure_percentage is not supported by gatehouse (set it to 0)"
            )
        if self.split_external_local_origin_errors:
            raise ValueError(
                "split_external_local_origin_errors is not supported by gatehouse "
                "(failed connections count as 5xx)"
            )
        return self


class CircuitBreakerThresholds(StrictModel):
    """Envoy's circuit-breaker thresholds (Pomerium's ``circuit_breaker_thresholds``)."""

    #: Most connections to the route's upstreams at once: with HTTP/1.1 one per request in
    #: flight, so it caps those like `max_requests` (idle pooled ones are not counted).
    max_connections: int | None = Field(default=None, ge=0)
    #: Requests that may wait for a free slot (Envoy's default 1024); beyond, 503.
    max_pending_requests: int | None = Field(default=None, ge=0)
    #: Most requests in flight to the route's upstreams at once.
    max_requests: int | None = Field(default=None, ge=0)
    #: Most retries (on another endpoint or a fresh connection) in flight at once
    #: (Envoy's default 3).
    max_retries: int | None = Field(default=None, ge=0)
    #: Accepted: gatehouse keeps one connection pool per endpoint.
    max_connection_pools: int | None = Field(default=None, ge=0)


class UpstreamLimitOptions(StrictModel):
    """The global key, composed into :class:`~gatehouse.config.options.Options`."""

    #: Circuit breaking for every route's upstreams (see below); a route's own
    #: `circuit_breaker_thresholds` fields override these one by one, as in Pomerium.
    circuit_breaker_thresholds: CircuitBreakerThresholds | None = None

    @model_validator(mode="before")
    @classmethod
    def _breakers_into_routes(cls, data: Any) -> Any:
        return breakers_into_routes(data)


def breakers_into_routes(data: Any) -> Any:
    """Merge the global thresholds into each route's (Pomerium's
    ``buildRouteCircuitBreakers``), so a route carries its effective limits.

    Run on the plain data, by the loader before it validates routes one by one, and by
    ``Options`` validation (routes already validated are left alone).
    """
    if not isinstance(data, dict):
        return data
    shared = data.get("circuit_breaker_thresholds")
    if not isinstance(shared, dict) or not shared:
        return data
    data = dict(data)
    for section in ("routes", "policy"):
        routes = data.get(section)
        if not isinstance(routes, list):
            continue
        merged = []
        for route in routes:
            if isinstance(route, dict):
                own = route.get("circuit_breaker_thresholds")
                own = own if isinstance(own, dict) else {}
                route = {**route, "circuit_breaker_thresholds": {**shared, **own}}
            merged.append(route)
        data[section] = merged
    return data


class BalancingOptions(StrictModel):
    """The route keys, composed into :class:`~gatehouse.config.routes.RouteOptions`."""

    #: How an endpoint is picked among the `to` URLs: `ROUND_ROBIN` (default, weighted),
    #: `LEAST_REQUEST`, `RANDOM` (weights ignored, as Envoy does), `RING_HASH` or `MAGLEV`
    #: (consistent hashing on the session, else the client IP, as Pomerium's hash policy).
    load_balancing_policy: LoadBalancingPolicy | None = None
    #: Older Pomerium name for `load_balancing_policy`.
    lb_policy: LoadBalancingPolicy | None = None
    #: Envoy's least-request tuning (`choice_count`).
    least_request_lb_config: LeastRequestConfig | None = None
    #: Envoy's ring-hash tuning (`minimum_ring_size`, `maximum_ring_size`).
    ring_hash_lb_config: RingHashConfig | None = None
    #: Envoy's Maglev tuning (`table_size`).
    maglev_lb_config: MaglevConfig | None = None
    #: Active HTTP health checks (see below); unhealthy endpoints get no requests.
    health_checks: list[HealthCheck] = Field(default_factory=list)
    #: Passive ejection of failing endpoints (see below).
    outlier_detection: OutlierDetection | None = None
    #: Circuit breaking for this route's upstreams (see below), over the global value.
    circuit_breaker_thresholds: CircuitBreakerThresholds | None = None
    #: Below this % of healthy endpoints every endpoint is used (Envoy's panic mode);
    #: 0 disables it (then no healthy endpoint means 503). Default 50.
    healthy_panic_threshold: int | None = Field(default=None, ge=0, le=100)

    @property
    def balancing_policy(self) -> str:
        return self.load_balancing_policy or self.lb_policy or "ROUND_ROBIN"

    @model_validator(mode="after")
    def _one_name(self) -> BalancingOptions:
        if (
            self.load_balancing_policy
            and self.lb_policy
            and self.load_balancing_policy != self.lb_policy
        ):
            raise ValueError("load_balancing_policy and lb_policy disagree; keep one")
        tuning = {
            "least_request_lb_config": "LEAST_REQUEST",
            "ring_hash_lb_config": "RING_HASH",
            "maglev_lb_config": "MAGLEV",
        }
        for key, policy in tuning.items():
            if getattr(self, key) is not None and self.balancing_policy != policy:
                raise ValueError(f"{key} is for load_balancing_policy: {policy}")
        return self
