# ruff: noqa: E501
"""Policy evaluation and path normalisation cost, in microseconds per call.

Run: ``python bench/policy_bench.py``. Reports the best of several repeats (the least
disturbed by other work on the machine) for a 20-rule policy with a signed-in user, an
anonymous request, and ``normalize_path`` on common and hostile paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from gatehouse.authorize import PolicyInput, compile_policy_data
from gatehouse.proxy.paths import normalize_path
from gatehouse.sessions.model import Session

# 20 rules: a typical mix of user, group, claim, path, method, network and time criteria.
POLICY: list[dict[str, Any]] = [
    {"allow": {"or": [{"email": {"is": f"user{i}@example.com"}}, {"groups": f"team-{i}"}]}}
    for i in range(8)
] + [
    {"allow": {"and": [{"domain": "example.com"}, {"http_path": {"starts_with": "/public"}}]}},
    {"allow": {"and": [{"claim/department": "eng"}, {"http_method": {"in": ["GET", "HEAD"]}}]}},
    {"allow": {"and": [{"groups": {"has": "admins"}}, {"source_ip": ["10.0.0.0/8", "192.168.0.0/16"]}]}},
    {"allow": {"or": [{"cors_preflight": True}]}},
    {"allow": {"and": [{"claim/roles": "reader"}, {"day_of_week": "mon-fri"}]}},
    {"allow": {"and": [{"time_of_day": {"timezone": "Europe/Paris", "after": "7:00", "before": "20:00"}}, {"groups": "oncall"}]}},
    {"deny": {"or": [{"email": {"ends_with": "@contractor.example.com"}}]}},
    {"deny": {"and": [{"http_path": {"starts_with": "/admin"}}, {"groups": {"exclude": "admins"}}]}},
    {"deny": {"and": [{"http_method": "DELETE"}, {"claim/role": {"exclude": "owner"}}]}},
    {"deny": {"not": [{"source_ip": ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"]}]}},
    {"deny": {"nor": [{"date": {"after": "2020-01-01T00:00:00Z"}}]}},
    {"deny": {"or": [{"user": {"in": ["banned-1", "banned-2"]}}]}},
]  # fmt: skip

SESSION = Session(
    id="sid",
    user_id="u-42",
    email="someone@example.com",
    groups=("team-9", "admins", "devs"),
    claims=MappingProxyType({"department": "eng", "roles": ["reader"], "role": "dev"}),
)


def per_call_us(fn: Callable[[], object], number: int = 20_000, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / number * 1e6


def main() -> None:
    policy = compile_policy_data(POLICY, route="bench")
    assert len(POLICY) == 20
    now = time.time()
    signed_in = PolicyInput("GET", "/public/x", source_ip="10.1.2.3", session=SESSION, now=now)
    anonymous = PolicyInput("GET", "/public/x", source_ip="10.1.2.3", session=None, now=now)
    print(f"policy: {len(POLICY)} rules, {len(policy)} clauses")
    print(f"  outcome signed-in: {policy.evaluate(signed_in).outcome.value}")
    print(f"  outcome anonymous: {policy.evaluate(anonymous).outcome.value}")
    print(f"evaluate, signed-in user : {per_call_us(lambda: policy.evaluate(signed_in)):6.2f} µs")
    print(f"evaluate, anonymous      : {per_call_us(lambda: policy.evaluate(anonymous)):6.2f} µs")
    print(
        "build PolicyInput + evaluate: "
        f"{per_call_us(lambda: policy.evaluate(PolicyInput('GET', '/public/x', '10.1.2.3', SESSION))):6.2f} µs"
    )
    for path in (
        "/api/v1/users/42",
        "/static/app.9f8e7d.js",
        "/%61dmin//x/../y",
        "/a/b/c/./d/%7Euser",
    ):
        print(
            f"normalize_path {path!r:28}: {per_call_us(lambda p=path: normalize_path(p), 100_000):6.2f} µs"
        )


if __name__ == "__main__":
    main()
