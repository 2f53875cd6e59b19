"""The clause index decides exactly as the full evaluator, and its cost does not grow with
rules that cannot match.

The reference is :meth:`Policy.evaluate_all` (every criterion of every clause, the
evaluator gatehouse had before the index). Hypothesis generates policies mixing indexed
criteria (email, user, domain, groups with is/in/has) with the rest (prefix matchers,
claims, methods, paths, accept/reject, negations) and requests with and without a
session; outcome, per-clause record, reasons and report text must all agree.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse.authorize import PolicyInput, compile_policy_data
from gatehouse.authorize import policy as policy_module
from gatehouse.authorize.clause_index import criterion_keys
from gatehouse.sessions.model import Session

DEFAULT_MIN_CLAUSES = policy_module.INDEX_MIN_CLAUSES
EMAILS = ["alice@example.com", "bob@example.com", "carol@corp.example", "dave", "e@x@y"]
USERS = ["u-alice", "u-bob", "u-carol"]
GROUPS = ["admins", "staff", "eng", "oncall"]
DOMAINS = ["example.com", "corp.example", "x", "y"]

string_value = st.sampled_from(EMAILS + USERS + DOMAINS)
email_matcher = st.one_of(
    st.sampled_from(EMAILS),
    st.builds(lambda v: {"is": v}, st.sampled_from(EMAILS)),
    st.builds(lambda v: {"in": v}, st.lists(st.sampled_from(EMAILS), min_size=1, max_size=3)),
    st.builds(lambda v: {"ends_with": v}, st.sampled_from(["@example.com", ".example"])),
    st.builds(lambda a, b: {"is": a, "starts_with": b}, st.sampled_from(EMAILS), st.just("a")),
    st.builds(lambda v: {"not": v}, st.sampled_from(EMAILS)),
    st.just(True),
)
domain_matcher = st.one_of(
    st.sampled_from(DOMAINS),
    st.builds(lambda v: {"is": v}, st.sampled_from(DOMAINS)),
    st.builds(lambda v: {"in": v}, st.lists(st.sampled_from(DOMAINS), min_size=1, max_size=2)),
)
user_matcher = st.one_of(
    st.sampled_from(USERS), st.builds(lambda v: {"is": v}, st.sampled_from(USERS))
)
group_matcher = st.one_of(
    st.sampled_from(GROUPS),
    st.builds(lambda v: {"has": v}, st.sampled_from(GROUPS)),
    st.builds(lambda v: {"is": v}, st.sampled_from(GROUPS)),
    st.builds(lambda v: {"exclude": v}, st.sampled_from(GROUPS)),
    st.just(1),
)
criterion = st.one_of(
    st.builds(lambda m: {"email": m}, email_matcher),
    st.builds(lambda m: {"domain": m}, domain_matcher),
    st.builds(lambda m: {"user": m}, user_matcher),
    st.builds(lambda m: {"groups": m}, group_matcher),
    st.builds(lambda v: {"claim/dept": v}, st.sampled_from(["eng", "ops"])),
    st.builds(lambda v: {"http_method": v}, st.sampled_from(["GET", "POST"])),
    st.builds(lambda v: {"http_path": {"starts_with": v}}, st.sampled_from(["/a", "/admin"])),
    st.sampled_from([{"accept": True}, {"reject": True}, {"authenticated_user": True}]),
)
rule_body = st.dictionaries(
    st.sampled_from(["and", "or", "not", "nor"]),
    st.lists(criterion, min_size=1, max_size=3),
    min_size=1,
    max_size=2,
)
rule = st.one_of(
    st.builds(lambda b: {"allow": b}, rule_body),
    st.builds(lambda b: {"deny": b}, rule_body),
    st.builds(lambda a, d: {"allow": a, "deny": d}, rule_body, rule_body),
)
sessions = st.one_of(
    st.none(),
    st.builds(
        lambda e, u, g, d: Session(
            id="s", user_id=u, email=e, groups=tuple(g), claims={"dept": d}, expires_at=1e12
        ),
        st.sampled_from(EMAILS),
        st.sampled_from(USERS),
        st.lists(st.sampled_from(GROUPS), max_size=3, unique=True),
        st.sampled_from(["eng", "ops"]),
    ),
)


def _same(policy: Any, inp: PolicyInput) -> None:
    fast = policy.evaluate(inp)
    full = policy.evaluate_all(inp)
    assert fast.outcome is full.outcome
    assert fast.raw == full.raw
    assert fast.reasons() == full.reasons()
    assert fast.log_fields() == full.log_fields()
    assert fast.explain() == full.explain()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(rule, min_size=1, max_size=12),
    st.lists(
        st.tuples(sessions, st.sampled_from(["GET", "POST"]), st.sampled_from(["/", "/admin/x"])),
        min_size=1,
        max_size=6,
    ),
)
def test_index_decides_as_the_full_evaluator(
    rules: list[dict[str, Any]], requests: list[tuple[Session | None, str, str]]
) -> None:
    policy_module.INDEX_MIN_CLAUSES = 0  # index every generated policy, however small
    try:
        policy = compile_policy_data(rules)
    finally:
        policy_module.INDEX_MIN_CLAUSES = DEFAULT_MIN_CLAUSES
    for session, method, path in requests:
        _same(policy, PolicyInput(method, path, source_ip="10.0.0.1", session=session, now=1e9))


def test_guards_are_necessary_conditions() -> None:
    assert criterion_keys("email", "", "a@b") == {("email", "a@b")}
    assert criterion_keys("email", "", {"in": ["a", "b"]}) == {("email", "a"), ("email", "b")}
    assert criterion_keys("email", "", {"ends_with": "@b"}) is None
    assert criterion_keys("email", "", {"not": "a"}) is None
    assert criterion_keys("groups", "", {"exclude": "a"}) is None
    assert criterion_keys("groups", "", {"is": "a"}) == {("groups", "a")}
    assert criterion_keys("claim", "dept", "eng") is None


def test_a_200_rule_policy_decides_by_its_last_rule() -> None:
    """The user matched by the last of 200 rules is allowed by the indexed evaluator as by
    the full one. The cost (flat in rules that cannot match) is bench/scaling_bench.py's."""
    rules: list[dict[str, Any]] = [
        {"allow": {"or": [{"email": {"is": f"user{i}@example.com"}}, {"groups": f"team-{i}"}]}}
        for i in range(196)
    ]
    rules += [{"deny": {"or": [{"user": f"banned-{i}"}]}} for i in range(3)]
    rules.append({"allow": {"and": [{"email": "user199@example.com"}, {"http_method": "GET"}]}})
    many = compile_policy_data(rules)
    session = Session(id="s", user_id="u", email="user199@example.com", expires_at=1e12)
    inp = PolicyInput("GET", "/", session=session, now=1e9)
    assert many.evaluate(inp).allowed and many.evaluate_all(inp).allowed
    assert not many.evaluate(PolicyInput("POST", "/", session=session, now=1e9)).allowed


def test_domain_read_as_the_criterion_reads_it() -> None:
    """``domain`` is the part after the first ``@`` (before any second one)."""
    policy = compile_policy_data(
        [{"allow": {"or": [{"domain": "x"}]}}, {"deny": {"or": [{"domain": {"is": "y"}}]}}]
        + [{"deny": {"or": [{"user": f"banned-{i}"}]}} for i in range(4)]
    )
    for email in ("e@x@y", "e@x", "e@y", "x", "e@"):
        session = Session(id="s", user_id="u", email=email, expires_at=1e12)
        _same(policy, PolicyInput("GET", "/", session=session, now=1e9))
    session = Session(id="s", user_id="u", email="e@x@y", expires_at=1e12)
    assert policy.evaluate(PolicyInput("GET", "/", session=session, now=1e9)).allowed
