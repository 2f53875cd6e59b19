"""The process's decision tally: counts by route and user, latest first, bounded."""

from __future__ import annotations

from gatehouse.observability import decisions
from gatehouse.observability.decisions import OTHER_USERS, DecisionTally


def test_counts_by_route_and_user_and_keeps_the_latest() -> None:
    tally = DecisionTally(recent=3)
    for user, decision in [("a", "allow"), ("a", "allow"), ("b", "deny"), (None, "needs-login")]:
        tally.record("app", user, decision)
    tally.record("other", "a", "allow")
    assert tally.by_route() == [("app", 2, 2), ("other", 1, 0)]
    assert tally.top(1) == [(("app", "a", "allow"), 2)]
    assert [(d.route, d.user, d.decision) for d in tally.recent] == [
        ("app", "b", "deny"),
        ("app", "(anonymous)", "needs-login"),
        ("other", "a", "allow"),
    ]
    assert tally.routes_by_user()["a"] == ["app", "other"]


def test_many_users_cannot_grow_it_without_bound(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(decisions, "MAX_COUNTERS", 10)
    tally = DecisionTally()
    for i in range(100):
        tally.record("app", f"user{i}", "allow")
    assert len(tally.counts) == 11  # ten users, then everyone else together
    assert tally.counts[("app", OTHER_USERS, "allow")] == 90
