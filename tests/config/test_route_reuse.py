"""A reload validates only the routes whose keys changed; the others are the same objects."""

from __future__ import annotations

import pytest

from gatehouse.config import load_text
from gatehouse.errors import ConfigError


def _config(hosts: list[str], bad: int | None = None) -> str:
    lines = ["insecure_server: true", "routes:"]
    for i, host in enumerate(hosts):
        lines += [
            f"  - from: http://{host}",
            "    to: " + ("not a url" if i == bad else "http://127.0.0.1:9"),
            "    allow_public_unauthenticated_access: true",
        ]
    return "\n".join(lines) + "\n"


def test_unchanged_routes_are_reused_and_changed_ones_validated() -> None:
    hosts = [f"h{i}.example.com" for i in range(20)]
    first = load_text(_config(hosts), "<test>", env={}).options
    changed = [*hosts]
    changed[5] = "new.example.com"
    changed.insert(0, "top.example.com")
    second = load_text(_config(changed), "<test>", env={}).options
    assert [r.from_host for r in second.routes] == changed
    # h6 moved from place 6 to 7 and is the very object validated before.
    assert second.routes[7] is first.routes[6]
    assert second.routes[6] is not first.routes[5]
    assert second.routes[6].from_host == "new.example.com"


def test_a_changed_value_is_not_taken_from_the_cache() -> None:
    text = _config(["a.example.com"])
    load_text(text, "<test>", env={})
    options = load_text(text.replace("127.0.0.1:9", "127.0.0.1:10"), "<test>", env={}).options
    to = options.routes[0].to
    assert to is not None and to[0].url == "http://127.0.0.1:10"


def test_a_broken_route_after_a_good_load_is_reported_with_its_line() -> None:
    hosts = [f"h{i}.example.com" for i in range(5)]
    load_text(_config(hosts), "<test>", env={})
    with pytest.raises(ConfigError) as caught:
        load_text(_config(hosts, bad=3), "<test>", env={})
    assert any(p.startswith("<test>:13: routes[3].to") for p in caught.value.problems), (
        caught.value.problems
    )


def test_routes_and_policy_lists_are_both_reused() -> None:
    text = _config(["a.example.com"]) + (
        "policy:\n  - from: http://b.example.com\n    to: http://127.0.0.1:9\n"
        "    allow_public_unauthenticated_access: true\n"
    )
    first = load_text(text, "<test>", env={}).options
    second = load_text(text, "<test>", env={}).options
    assert second.policy[0] is first.policy[0] and second.routes[0] is first.routes[0]
    assert [r.from_host for r in second.all_routes] == ["a.example.com", "b.example.com"]


def test_one_upstream_url_is_parsed_once_and_a_bad_one_fails_every_route() -> None:
    """Routes naming the same ``to`` text share its parsed (immutable) URL; a bad one is
    reported for each route that names it, at its own line."""
    text = "insecure_server: true\nroutes:\n" + "".join(
        f"  - from: http://h{i}.example.com\n    to: {to}\n"
        "    allow_public_unauthenticated_access: true\n"
        for i, to in enumerate(
            ["http://127.0.0.1:9/app", "http://127.0.0.1:9/app", "http://127.0.0.1:9"]
        )
    )
    routes = load_text(text, "<test>", env={}).options.routes
    assert routes[0].to is not None and routes[1].to is not None and routes[2].to is not None
    assert routes[0].to[0] is routes[1].to[0] and routes[0].to[0].path == "/app"
    assert routes[2].to[0].path == ""
    bad = text.replace("http://127.0.0.1:9/app", "ftp://127.0.0.1:9")
    with pytest.raises(ConfigError) as failed:
        load_text(bad, "<test>", env={})
    located = [p for p in failed.value.problems if "must start with http://" in p]
    assert [p.split(":")[1] for p in located] == ["4", "7"]


def test_routes_differing_only_in_from_load_as_validated_alone() -> None:
    """Routes of one shape (the same keys and values but ``from``) are copies of the
    first, with their own ``from`` checked: each equals the route validated alone, and a
    bad ``from`` among them is still reported at its line."""
    from gatehouse.config.routes import RouteOptions

    shape = (
        "    to: [http://127.0.0.1:9, http://127.0.0.1:10]\n    prefix: /app\n"
        "    set_request_headers: {X-A: b}\n    allowed_users: [alice@example.com]\n"
    )
    froms = ["http://a.example.com", "https://*.b.example.com", "http://c.example.com:8080"]
    text = "insecure_server: true\nroutes:\n" + "".join(f"  - from: {f}\n{shape}" for f in froms)
    routes = load_text(text, "<test>", env={}).options.routes
    for route, value in zip(routes, froms, strict=True):
        alone = RouteOptions.model_validate(
            {
                "from": value,
                "to": ["http://127.0.0.1:9", "http://127.0.0.1:10"],
                "prefix": "/app",
                "set_request_headers": {"X-A": "b"},
                "allowed_users": ["alice@example.com"],
            }
        )
        assert route == alone and route.model_fields_set == alone.model_fields_set
        assert (route.from_host, route.from_port) == (alone.from_host, alone.from_port)
    for bad, message in [
        ("ftp://d.example.com", "must be an http:// or https:// URL"),
        ("http://d.example.com/path", "must be scheme and host only"),
        ("http://bad_host!.example.com", "invalid host name"),
    ]:
        with pytest.raises(ConfigError) as failed:
            load_text(text.replace("http://c.example.com:8080", bad), "<test>", env={})
        assert [p.split(":")[1] for p in failed.value.problems if message in p] == ["13"]
