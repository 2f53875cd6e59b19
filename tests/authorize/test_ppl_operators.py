"""Operator semantics and allow/deny combination, checked against a plain reference
evaluator written here from Pomerium's documented rules (hypothesis property tests),
plus the surprising ``not``/``nor`` examples of docs/policy.md."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gatehouse.authorize import Outcome, PolicyInput, compile_policy_data
from gatehouse.sessions.model import Session

UNAUTH = "user-unauthenticated"

# The pool of criteria; the request decides their outcomes.
POOL: list[dict[str, Any]] = [
    {"accept": True},
    {"reject": True},
    {"authenticated_user": True},
    {"email": "a@x.io"},
    {"groups": "g1"},
    {"http_method": "POST"},
    {"http_path": {"starts_with": "/admin"}},
]


def ref_criterion(crit: dict[str, Any], inp: PolicyInput) -> tuple[bool, str]:
    ((name, _),) = crit.items()
    s = inp.session
    if name == "accept":
        return True, "accept"
    if name == "reject":
        return False, "reject"
    if name == "http_method":
        return (
            (True, "http-method-ok")
            if inp.method == "POST"
            else (False, "http-method-unauthorized")
        )
    if name == "http_path":
        ok = inp.path.startswith("/admin")
        return (True, "http-path-ok") if ok else (False, "http-path-unauthorized")
    if s is None:
        return False, UNAUTH
    if name == "authenticated_user":
        return True, "user-ok"
    if name == "email":
        return (True, "email-ok") if s.email == "a@x.io" else (False, "email-unauthorized")
    return (True, "groups-ok") if "g1" in s.groups else (False, "groups-unauthorized")


def merge_and(results: list[tuple[bool, set[str]]]) -> tuple[bool, set[str]]:
    if all(v for v, _ in results):
        return True, set().union(*(r for _, r in results))
    return False, set().union(*(r for v, r in results if not v))


def merge_or(results: list[tuple[bool, set[str]]]) -> tuple[bool, set[str]]:
    if any(v for v, _ in results):
        return True, set().union(*(r for v, r in results if v))
    return False, set().union(*(r for _, r in results))


def ref_clauses(policy: list[dict[str, Any]], inp: PolicyInput) -> list[tuple[str, bool, set[str]]]:
    out = []
    for rule in policy:
        for action in ("allow", "deny"):
            for op in ("and", "or", "not", "nor"):
                crits = rule.get(action, {}).get(op, [])
                if not crits:
                    continue
                results = [(v, {r}) for v, r in (ref_criterion(c, inp) for c in crits)]
                if op in ("not", "nor"):
                    results = [(not v, r) for v, r in results]
                merged = merge_and(results) if op in ("and", "not") else merge_or(results)
                out.append((action, *merged))
    return out


def ref_outcome(policy: list[dict[str, Any]], inp: PolicyInput) -> Outcome:
    clauses = ref_clauses(policy, inp)
    allow = (
        merge_or([(v, r) for a, v, r in clauses if a == "allow"])
        if any(a == "allow" for a, _, _ in clauses)
        else (False, set())
    )
    deny = (
        merge_or([(v, r) for a, v, r in clauses if a == "deny"])
        if any(a == "deny" for a, _, _ in clauses)
        else (False, set())
    )
    # Pomerium's handleResult: sign-in first, then deny, then allow.
    if UNAUTH in allow[1] or UNAUTH in deny[1]:
        return Outcome.NEEDS_LOGIN
    if deny[0]:
        return Outcome.DENY
    return Outcome.ALLOW if allow[0] else Outcome.DENY


crit_st = st.sampled_from(POOL)
body_st = st.dictionaries(
    st.sampled_from(["and", "or", "not", "nor"]),
    st.lists(crit_st, min_size=0, max_size=4),
    min_size=1,
)
rule_st = st.dictionaries(st.sampled_from(["allow", "deny"]), body_st, min_size=1)
policy_st = st.lists(rule_st, min_size=0, max_size=5)
session_st = st.one_of(
    st.none(),
    st.builds(
        Session,
        id=st.just("s"),
        user_id=st.just("u"),
        email=st.sampled_from(["a@x.io", "b@x.io"]),
        groups=st.sampled_from([(), ("g1",), ("g2",), ("g1", "g2")]),
    ),
)
input_st = st.builds(
    PolicyInput,
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from(["/", "/admin", "/admin/x", "/public"]),
    session=session_st,
    now=st.just(0.0),
)


@settings(max_examples=400, deadline=None)
@given(policy_st, input_st)
def test_matches_reference_evaluator(policy: list[dict[str, Any]], inp: PolicyInput) -> None:
    decision = compile_policy_data(policy).evaluate(inp)
    assert decision.outcome is ref_outcome(policy, inp)
    expected = [(a, v, r) for a, v, r in ref_clauses(policy, inp)]
    got = [(c.action, c.matched, set(c.reasons)) for c in decision.clause_results()]
    assert got == expected


def _bool(crit: dict[str, Any], inp: PolicyInput) -> bool:
    return ref_criterion(crit, inp)[0]


@settings(max_examples=300, deadline=None)
@given(policy_st, input_st.filter(lambda i: i.session is not None))
def test_boolean_semantics_with_a_session(policy: list[dict[str, Any]], inp: PolicyInput) -> None:
    """With a user known, access = (some allow clause holds) and not (some deny clause holds),
    where and = all, or = any, not = none, nor = not all."""
    ops = {
        "and": lambda xs: all(xs),
        "or": lambda xs: any(xs),
        "not": lambda xs: not any(xs),
        "nor": lambda xs: not all(xs),
    }
    holds = {"allow": False, "deny": False}
    for rule in policy:
        for action, body in rule.items():
            for op, crits in body.items():
                if crits and ops[op]([_bool(c, inp) for c in crits]):
                    holds[action] = True
    expected = Outcome.ALLOW if holds["allow"] and not holds["deny"] else Outcome.DENY
    assert compile_policy_data(policy).evaluate(inp).outcome is expected


@given(st.lists(rule_st, min_size=1, max_size=3), input_st)
def test_operators_in_one_rule_equal_separate_rules(
    rules: list[dict[str, Any]], inp: PolicyInput
) -> None:
    split = [
        {a: {op: crits}} for rule in rules for a, body in rule.items() for op, crits in body.items()
    ]
    assert (
        compile_policy_data(rules).evaluate(inp).outcome
        is compile_policy_data(split).evaluate(inp).outcome
    )


# The examples of docs/policy.md.
BOB = Session(id="s", user_id="u", email="bob@example.com", groups=("admin",))
EVE = Session(id="s", user_id="u", email="eve@other.org", groups=("admin",))
MALLORY = Session(id="s", user_id="u", email="mallory@other.org", groups=())


def outcome(policy: Any, session: Session | None) -> Outcome:
    return compile_policy_data(policy).evaluate(PolicyInput("GET", "/", session=session)).outcome


def test_not_means_none_of() -> None:
    policy = {"allow": {"not": [{"domain": "example.com"}, {"groups": "admin"}]}}
    assert outcome(policy, BOB) is Outcome.DENY  # matches both
    assert outcome(policy, EVE) is Outcome.DENY  # matches one: still not allowed
    assert outcome(policy, MALLORY) is Outcome.ALLOW  # matches none


def test_nor_means_not_all_of() -> None:
    policy = {"allow": {"nor": [{"domain": "example.com"}, {"groups": "admin"}]}}
    assert outcome(policy, BOB) is Outcome.DENY  # matches both
    assert outcome(policy, EVE) is Outcome.ALLOW  # matches only one: allowed
    assert outcome(policy, MALLORY) is Outcome.ALLOW


def test_deny_wins_and_no_rules_deny() -> None:
    policy = [
        {"allow": {"or": [{"accept": True}]}},
        {"deny": {"or": [{"email": "bob@example.com"}]}},
    ]
    assert outcome(policy, BOB) is Outcome.DENY
    assert outcome(policy, EVE) is Outcome.ALLOW
    assert outcome([], EVE) is Outcome.DENY
    assert outcome({"allow": {"and": []}}, EVE) is Outcome.DENY
