"""Route policies: legacy options, NEEDS_LOGIN, config errors, decision reports."""

from __future__ import annotations

from typing import Any

import pytest

from gatehouse.authorize import (
    Outcome,
    PolicyInput,
    compile_policy_data,
    compile_route_policy,
    route_policy_problems,
)
from gatehouse.config import RouteOptions
from gatehouse.errors import ConfigError
from gatehouse.sessions.model import Session

ALICE = Session(
    id="s",
    user_id="u-alice",
    email="alice@example.com",
    groups=("devs",),
    claims={"department": "eng", "roles": ["a", "b"]},
)
BOB = Session(id="s", user_id="u-bob", email="bob@other.org")


def route(**kw: Any) -> RouteOptions:
    return RouteOptions.model_validate(
        {"from": "https://app.example.com", "to": "http://127.0.0.1:9", **kw}
    )


def decide(r: RouteOptions, session: Session | None = None, **kw: Any) -> Outcome:
    inp = PolicyInput(kw.pop("method", "GET"), kw.pop("path", "/"), session=session, **kw)
    return compile_route_policy(r, 0).evaluate(inp).outcome


# --- legacy options -------------------------------------------------------------------


def test_public_route_allows_anonymous() -> None:
    r = route(allow_public_unauthenticated_access=True)
    assert decide(r) is Outcome.ALLOW
    assert decide(r, ALICE) is Outcome.ALLOW


def test_any_authenticated_user() -> None:
    r = route(allow_any_authenticated_user=True)
    assert decide(r) is Outcome.NEEDS_LOGIN
    assert decide(r, BOB) is Outcome.ALLOW


def test_allowed_users_match_id_or_email() -> None:
    r = route(allowed_users=["alice@example.com", "u-bob"])
    assert decide(r, ALICE) is Outcome.ALLOW
    assert decide(r, BOB) is Outcome.ALLOW
    assert decide(r, Session(id="s", user_id="x", email="x@example.com")) is Outcome.DENY
    assert decide(r) is Outcome.NEEDS_LOGIN


def test_allowed_domains() -> None:
    r = route(allowed_domains="example.com")
    assert decide(r, ALICE) is Outcome.ALLOW
    assert decide(r, BOB) is Outcome.DENY


def test_allowed_idp_claims() -> None:
    r = route(allowed_idp_claims={"department": ["sales", "eng"], "roles": ["z"]})
    assert decide(r, ALICE) is Outcome.ALLOW
    assert decide(r, BOB) is Outcome.DENY


def test_cors_allow_preflight() -> None:
    r = route(cors_allow_preflight=True, allowed_domains=["example.com"])
    pre = {"method": "OPTIONS", "origin": "https://x", "access_control_request_method": "PUT"}
    # the preflight passes without a user (the `or` holds, so the failing domain
    # criterion's user-unauthenticated reason is not among the decisive ones)
    assert decide(r, None, **pre) is Outcome.ALLOW
    assert decide(r, BOB, **pre) is Outcome.ALLOW
    assert decide(r, BOB) is Outcome.DENY
    assert decide(r) is Outcome.NEEDS_LOGIN


def test_cors_preflight_alone_lets_anonymous_preflight_through() -> None:
    r = route(cors_allow_preflight=True)
    pre = {"method": "OPTIONS", "origin": "https://x", "access_control_request_method": "PUT"}
    assert decide(r, None, **pre) is Outcome.ALLOW
    assert decide(r) is Outcome.DENY


def test_legacy_and_ppl_combine() -> None:
    r = route(
        allowed_domains=["example.com"],
        policy={"deny": {"and": [{"http_path": {"starts_with": "/admin"}}]}},
    )
    assert decide(r, ALICE) is Outcome.ALLOW
    assert decide(r, ALICE, path="/admin/x") is Outcome.DENY
    # sign-in comes first, even where a deny about the request alone holds (Pomerium's
    # handleResult); signed in, the deny still applies
    assert decide(r, None, path="/admin/x") is Outcome.NEEDS_LOGIN


def test_no_rules_denies() -> None:
    assert decide(route(), ALICE) is Outcome.DENY
    assert decide(route()) is Outcome.DENY


def test_public_with_allow_list_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        compile_route_policy(
            route(allow_public_unauthenticated_access=True, allowed_users=["a"]), 4
        )
    assert "routes[4].allow_public_unauthenticated_access" in str(info.value)


# --- NEEDS_LOGIN ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"allow": {"or": [{"email": "alice@example.com"}]}}, Outcome.NEEDS_LOGIN),
        ({"allow": {"or": [{"accept": True}, {"email": "alice@example.com"}]}}, Outcome.ALLOW),
        ({"allow": {"and": [{"http_method": "POST"}, {"email": "a@b"}]}}, Outcome.NEEDS_LOGIN),
        ({"allow": {"and": [{"reject": True}]}}, Outcome.DENY),
        # a deny rule that needs the user: sign in first, then decide
        (
            [{"allow": {"or": [{"accept": True}]}}, {"deny": {"or": [{"email": "bob@other.org"}]}}],
            Outcome.NEEDS_LOGIN,
        ),
        # sign-in comes before a deny rule that holds without a user (Pomerium)
        (
            [{"allow": {"or": [{"email": "a@b"}]}}, {"deny": {"or": [{"http_method": "GET"}]}}],
            Outcome.NEEDS_LOGIN,
        ),
        # a deny rule that holds without a user, with no user-criterion anywhere, denies
        (
            [{"allow": {"or": [{"accept": True}]}}, {"deny": {"or": [{"http_method": "GET"}]}}],
            Outcome.DENY,
        ),
        # `not` over a user criterion still needs the user (Pomerium keeps the reason)
        ({"allow": {"not": [{"domain": "evil.com"}]}}, Outcome.NEEDS_LOGIN),
        (
            {"deny": {"nor": [{"email": "a@b"}]}, "allow": {"or": [{"accept": True}]}},
            Outcome.NEEDS_LOGIN,
        ),
        ({"allow": {"or": [{"source_ip": "0.0.0.0/0"}]}}, Outcome.DENY),  # no source ip
        ({"allow": {"or": [{"http_path": "/"}]}}, Outcome.ALLOW),
    ],
)
def test_needs_login(policy: Any, expected: Outcome) -> None:
    assert compile_policy_data(policy).evaluate(PolicyInput("GET", "/")).outcome is expected


# --- config errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        (
            {"allow": {"and": [{"emial": "a"}]}},
            "routes[2].policy.allow.and[0].emial: unknown criterion 'emial'; did you mean 'email'?",
        ),
        ({"allow": {"xor": []}}, "routes[2].policy.allow.xor: unknown operator 'xor'"),
        ({"permit": {}}, "routes[2].policy.permit: unknown action 'permit'"),
        (
            [{"allow": {"or": [{"email": {"equals": "a"}}]}}],
            "routes[2].policy[0].allow.or[0].email.equals: unknown string matcher operator",
        ),
        (
            {"allow": {"or": {"email": "a"}}},
            "routes[2].policy.allow.or: or expects a list of criteria",
        ),
        ({"allow": {"or": [{"email": "a", "user": "b"}]}}, "exactly one key"),
        ({"allow": {"or": [{"device": {"is": "x"}}]}}, "criterion 'device' is not supported"),
        ({"allow": ["email"]}, "allow expects an object"),
        ({"allow": None}, "allow expects an object"),
        ({"deny": {"or": None}}, "or expects a list of criteria"),
        ("allow", "a rule is an object"),
        (
            {"allow": {"or": [{"source_ip": ["10.0.0.0/8", "bad"]}]}},
            "routes[2].policy.allow.or[0].source_ip[1]: invalid IP",
        ),
        (
            {"allow": {"or": [{"time_of_day": {"timezone": "UTC", "after": 904}}]}},
            "time_of_day.after: quote the time",
        ),
    ],
)
def test_config_errors_name_route_and_key_path(policy: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_route_policy(route(policy=policy), 2)
    assert any(fragment in p for p in info.value.problems), info.value.problems


def test_every_problem_is_reported() -> None:
    r = route(policy=[{"allow": {"or": [{"emial": "a"}, {"groups": {"bad": 1}}]}}, {"deny": 3}])
    problems = route_policy_problems(r, 0)
    assert len(problems) == 3
    assert problems[0].loc == ("policy", 0, "allow", "or", 0, "emial")


# --- decision reports -----------------------------------------------------------------


def test_decision_report() -> None:
    policy = compile_policy_data(
        [
            {"allow": {"or": [{"domain": "example.com"}]}},
            {"deny": {"and": [{"http_method": "DELETE"}, {"groups": {"exclude": "admins"}}]}},
        ],
        route="app",
    )
    d = policy.evaluate(PolicyInput("DELETE", "/x", session=ALICE))
    assert d.outcome is Outcome.DENY and d.matched_deny
    assert d.matched_rules() == ("policy[0].allow.or", "policy[1].deny.and")
    assert d.failed_rules() == ()
    assert d.reasons() == ("groups-ok", "http-method-ok")
    fields = d.log_fields()
    assert fields["decision"] == "deny" and fields["route"] == "app"
    text = d.explain()
    assert "DENY" in text and "policy[1].deny.and: MATCH" in text and "+ groups" in text
    d2 = policy.evaluate(PolicyInput("GET", "/x", session=BOB))
    assert d2.outcome is Outcome.DENY and d2.reasons() == ("domain-unauthorized",)
    assert not d2.matched_deny
    assert d2.failed_rules() == ("policy[0].allow.or", "policy[1].deny.and")
