"""Balancer pieces without a network: hash tables, outlier ejection, panic mode."""

from __future__ import annotations

import collections
from typing import Any

import pytest

from gatehouse.config.routes import RouteOptions
from gatehouse.config.upstream_health import OutlierDetection
from gatehouse.errors import NoHealthyUpstream
from gatehouse.proxy.balancer import Balancer, Target
from gatehouse.proxy.hashing import Maglev, Ring
from gatehouse.proxy.outlier import Outliers


def balancer(**kw: Any) -> Balancer:
    route = RouteOptions.model_validate(
        {
            "from": "http://x.test",
            "to": kw.pop("to", ["http://a:1", "http://b:1", "http://c:1"]),
            **kw,
        }
    )
    return Balancer.from_route(route)


def keys(n: int) -> list[bytes]:
    return [f"client-{i}".encode() for i in range(n)]


@pytest.mark.parametrize("table", [Ring, Maglev])
def test_hash_tables_follow_weights(table: Any) -> None:
    t = table(["a", "b", "c"], ["a", "b", "c"], [1, 1, 2])
    seen = collections.Counter(t.pick(k) for k in keys(20000))
    assert 0.45 < seen["c"] / 20000 < 0.55, seen
    assert 0.2 < seen["a"] / 20000 < 0.3, seen


@pytest.mark.parametrize(("table", "most"), [(Ring, 0.25), (Maglev, 0.02)])
def test_hash_tables_move_few_keys_when_an_endpoint_goes(table: Any, most: float) -> None:
    full = table(["a", "b", "c"], ["a", "b", "c"], [1, 1, 1])
    less = table(["a", "b"], ["a", "b"], [1, 1])
    stayed = [k for k in keys(6000) if full.pick(k) != "c"]
    moved = sum(1 for k in stayed if full.pick(k) != less.pick(k))
    # Keys of the endpoints that stay mostly stay: Maglev nearly all; the ring is
    # rescaled to its minimum size, so the others gain points (as Envoy's does).
    assert moved / len(stayed) < most, moved


def test_ring_size_bounds() -> None:
    assert len(Ring(["a", "b"], ["a", "b"], [1, 3], 100, 200)) == 100
    assert len(Ring(["a", "b"], ["a", "b"], [1, 999], 100, 200)) == 200
    assert len(Ring(["a", "b"], ["a", "b"], [1, 1], 1024, 8_388_608)) == 1024


@pytest.mark.parametrize(("policy", "kept"), [("RING_HASH", 0.7), ("MAGLEV", 0.95)])
def test_hashed_key_sticks_and_skips_an_ejected_endpoint(policy: str, kept: float) -> None:
    b = balancer(load_balancing_policy=policy, outlier_detection={"max_ejection_percent": 50})
    first = {k: b.pick(key=k) for k in keys(300)}
    assert all(b.pick(key=k) is t for k, t in first.items())
    victim = b.targets[0]
    assert b.outliers is not None and b.outliers.eject(victim, 0.0)
    victim.ejected_until = float("inf")
    after = {k: b.pick(key=k) for k in keys(300)}
    assert victim not in after.values()
    others = [k for k, t in first.items() if t is not victim]
    assert sum(after[k] is first[k] for k in others) >= kept * len(others)


def _targets(n: int) -> list[Target]:
    return balancer(to=[f"http://h{i}:1" for i in range(n)]).targets


def test_consecutive_5xx_ejects_and_time_grows() -> None:
    targets = _targets(2)
    o = Outliers(OutlierDetection(consecutive_5xx=2, base_ejection_time=10), targets, 0.0)
    o.record(targets[0], 500, 1.0)
    o.record(targets[0], 200, 1.0)  # a success resets the count
    o.record(targets[0], 500, 1.0)
    assert targets[0].ejected_until == 0.0
    o.record(targets[0], 503, 1.0)
    assert targets[0].ejected_until == 11.0
    o.sweep(12.0)  # time up: back
    assert targets[0].ejected_until == 0.0
    o.record(targets[0], 500, 13.0)
    o.record(targets[0], 500, 13.0)
    assert targets[0].ejected_until == 13.0 + 20.0  # second ejection: twice as long


def test_max_ejection_percent_allows_one() -> None:
    targets = _targets(4)
    o = Outliers(OutlierDetection(consecutive_5xx=1, max_ejection_percent=10), targets, 0.0)
    o.record(targets[0], 500, 1.0)
    o.record(targets[1], 500, 1.0)
    assert [t.ejected_until > 1.0 for t in targets] == [True, False, False, False]


def test_gateway_failures_need_enforcing() -> None:
    targets = _targets(2)
    off = Outliers(
        OutlierDetection(consecutive_5xx=100, consecutive_gateway_failure=1), targets, 0.0
    )
    off.record(targets[0], 502, 1.0)
    assert targets[0].ejected_until == 0.0  # enforcing_consecutive_gateway_failure is 0
    on = Outliers(
        OutlierDetection(
            consecutive_5xx=100,
            consecutive_gateway_failure=1,
            enforcing_consecutive_gateway_failure=100,
        ),
        targets,
        0.0,
    )
    on.record(targets[1], 504, 1.0)
    assert targets[1].ejected_until > 1.0


def test_success_rate_ejects_the_outlier() -> None:
    targets = _targets(5)
    o = Outliers(
        OutlierDetection(success_rate_request_volume=10, max_ejection_percent=100), targets, 0.0
    )
    for i, t in enumerate(targets):
        for n in range(20):
            o.record(t, 500 if (i == 4 and n % 2) or (i < 4 and n == 0) else 200, 1.0)
    o.sweep(10.0)
    assert [t.ejected_until > 10.0 for t in targets] == [False] * 4 + [True]


def test_panic_mode_and_no_panic() -> None:
    check = {
        "timeout": "1s",
        "interval": "1s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "http_health_check": {"path": "/h"},
    }
    b = balancer(health_checks=[check])
    for t in b.targets[:2]:
        t.checks[0].healthy = False
    # 1 of 3 healthy is below 50%: every endpoint is used.
    assert {b.pick().url_text for _ in range(6)} == {"http://a:1", "http://b:1", "http://c:1"}
    b.targets[0].checks[0].healthy = True
    assert {b.pick().url_text for _ in range(6)} == {"http://a:1", "http://c:1"}
    strict = balancer(health_checks=[check], healthy_panic_threshold=0)
    for t in strict.targets:
        t.checks[0].healthy = False
    with pytest.raises(NoHealthyUpstream):
        strict.pick()


def test_circuit_breaker_slots_line_and_timeouts() -> None:
    import asyncio

    from gatehouse.config.upstream_health import CircuitBreakerThresholds
    from gatehouse.errors import UpstreamOverloaded, UpstreamTimeout
    from gatehouse.proxy.circuit_breaker import CircuitBreaker

    async def scenario() -> None:
        cb = CircuitBreaker(
            CircuitBreakerThresholds(max_connections=2, max_requests=5, max_pending_requests=1)
        )
        assert cb.limit == 2  # the smaller of max_requests and max_connections
        await cb.acquire(1)
        await cb.acquire(1)
        waiting = asyncio.ensure_future(cb.acquire(5))
        await asyncio.sleep(0)
        with pytest.raises(UpstreamOverloaded):
            await cb.acquire(1)  # the line (1) is full
        cb.release()  # the slot passes to the waiter
        await waiting
        assert cb.in_flight == 2
        with pytest.raises(UpstreamTimeout):
            await cb.acquire(0.05)
        cancelled = asyncio.ensure_future(cb.acquire(5))
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        cb.release()
        cb.release()
        assert cb.in_flight == 0  # nothing leaked by the timeout or the cancel
        assert [cb.may_retry() for _ in range(4)] == [True, True, True, False]
        cb.retry_done()
        assert cb.may_retry()

    asyncio.run(scenario())


def test_global_circuit_breaker_merged_into_routes() -> None:
    from gatehouse.config.loader import load_text

    text = (
        "insecure_server: true\n"
        "circuit_breaker_thresholds: {max_requests: 10, max_retries: 1}\n"
        "routes:\n"
        "- from: http://a.test\n  to: http://b:1\n"
        "  circuit_breaker_thresholds: {max_requests: 2}\n"
        "- from: http://c.test\n  to: http://d:1\n"
    )
    first, second = load_text(text, env={}).options.routes
    assert first.circuit_breaker_thresholds is not None
    assert (
        first.circuit_breaker_thresholds.max_requests,
        first.circuit_breaker_thresholds.max_retries,
    ) == (2, 1)
    assert second.circuit_breaker_thresholds is not None
    assert second.circuit_breaker_thresholds.max_requests == 10
