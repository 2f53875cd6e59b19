"""Pomerium's policy test tables, translated to data, run through gatehouse's PPL evaluator.

Each case (``policy_cases/*.yaml``) gives a PPL document (and optionally legacy route
options), a request and a user, Pomerium's rule results and the decision they lead to
(``allow``, ``deny``, ``sign_in``, or ``invalid`` for a policy Pomerium refuses). A case
agrees when gatehouse reaches the same decision. ``index.yaml`` lists the cases that do not
agree yet, each with its reason; both a listed case that starts agreeing and an unlisted
one that stops are failures, so the list is always the current state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gatehouse.authorize import Outcome, PolicyInput, compile_route_policy
from gatehouse.config import RouteOptions
from gatehouse.errors import ConfigError
from gatehouse.sessions.model import Session

HERE = Path(__file__).parent / "policy_cases"
INDEX = yaml.safe_load((HERE / "index.yaml").read_text())
EXPECTED_FAILURES: dict[str, str] = INDEX["expected_failures"] or {}
#: A fixed request time, so that no case depends on the clock.
NOW = 1_620_740_580.0

_OUTCOMES = {Outcome.ALLOW: "allow", Outcome.DENY: "deny", Outcome.NEEDS_LOGIN: "sign_in"}


def _cases() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name in INDEX["files"]:
        for case in yaml.safe_load((HERE / name).read_text()):
            out.append((f"{name}: {case['name']}", case))
    return out


CASES = _cases()


def _session(user: dict[str, Any] | None) -> Session | None:
    if user is None:
        return None
    groups = tuple(user.get("groups", ()))
    claims = dict(user.get("claims", {}))
    if groups:
        # The IdP's groups claim, which is what `groups` reads.
        claims.setdefault("groups", list(groups))
    return Session(
        id="SESSION_ID",
        user_id=user.get("id", ""),
        email=user.get("email", ""),
        groups=groups,
        claims=claims,
    )


def gatehouse_decision(case: dict[str, Any]) -> str:
    """What gatehouse decides for the case: allow, deny, sign_in or invalid."""
    try:
        route = RouteOptions.model_validate(
            {
                "from": "https://from.example.com",
                "to": "http://127.0.0.1:1",
                **case.get("route", {}),
                **({"policy": case["policy"]} if "policy" in case else {}),
            }
        )
        policy = compile_route_policy(route, 0)
    except (ConfigError, ValueError):
        return "invalid"
    request = case.get("request", {})
    headers = {k.lower(): v for k, v in request.get("headers", {}).items()}
    inp = PolicyInput(
        request.get("method", "GET"),
        request.get("path", "/"),
        source_ip=request.get("ip", ""),
        session=_session(case.get("user")),
        now=NOW,
        origin=headers.get("origin", ""),
        access_control_request_method=headers.get("access-control-request-method", ""),
    )
    return _OUTCOMES[policy.evaluate(inp).outcome]


def test_expected_failures_name_real_cases() -> None:
    known = {case_id for case_id, _ in CASES}
    assert not set(EXPECTED_FAILURES) - known


@pytest.mark.parametrize(("case_id", "case"), CASES, ids=[c for c, _ in CASES])
def test_policy_case(case_id: str, case: dict[str, Any]) -> None:
    got = gatehouse_decision(case)
    agrees = got == case["decision"]
    if case_id in EXPECTED_FAILURES:
        assert not agrees, f"now agrees with Pomerium; remove it from expected_failures: {case_id}"
    else:
        assert agrees, f"gatehouse: {got}, Pomerium: {case['decision']} ({case['source']})"


def summary() -> tuple[int, int]:
    """(cases, cases that agree), for the report."""
    return len(CASES), sum(gatehouse_decision(c) == c["decision"] for _, c in CASES)


if __name__ == "__main__":
    total, agree = summary()
    print(f"policy cases: {total}, agree with Pomerium: {agree}")
    for case_id, case in CASES:
        got = gatehouse_decision(case)
        if got != case["decision"]:
            print(f"  {case_id}: gatehouse {got}, Pomerium {case['decision']}")
