"""The indexed router gives exactly the answers of Pomerium's linear first-match scan.

The oracle below is the plain matcher: try every route in config order and return the
first whose host, port and path fit (``Route.matches_host``/``matches_path``). Hypothesis
generates configs mixing exact and wildcard hosts, ports, schemes and every path kind
(prefix, path, regex, none), and requests aimed at them, and the two must agree.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse.config import load_text
from gatehouse.proxy.route_index import literal_prefix
from gatehouse.proxy.router import Route, Router, compile_route


def linear_match(routes: tuple[Route, ...], host: str, port: int | None, path: str) -> Route | None:
    for route in routes:
        if route.matches_host(host, port) and route.matches_path(path):
            return route
    return None


def build(entries: list[dict[str, object]]) -> Router:
    import yaml

    text = yaml.safe_dump({"insecure_server": True, "routes": entries})
    options = load_text(text, "<test>", env={}).options
    return Router([compile_route(options, r, i) for i, r in enumerate(options.routes)])


LABELS = ["a", "b", "app", "x1", "example", "com", "co"]
HOSTS = ["example.com", "app.example.com", "a.b.example.com", "x1.co", "b.co", "com"]
SEGMENTS = ["", "a", "ab", "api", "v1", "x", "admin", "a.b", "1"]

hosts = st.sampled_from(HOSTS)
wild_hosts = st.sampled_from(["*.example.com", "*.com", "*.co", "*.b.example.com"])
ports = st.sampled_from([None, None, 80, 443, 8080])
paths = st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=4).map(
    lambda segs: "/" + "/".join(segs)
)
# Regexes from a small grammar: literals, classes, quantifiers, groups, alternation,
# anchors and escapes, so the literal-prefix shortcut meets everything it must respect.
regex_atoms = st.sampled_from(
    ["/", "a", "b", "api", "v1", ".", "[a-z]", "[0-9]+", r"\d", r"\.", "x*", "a?", "b{0,2}",
     "(a|b)", "(?:api)?", ".*", "^", "$", "|", "(?i)", "A"]
)  # fmt: skip


def _ok(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


regexes = st.lists(regex_atoms, min_size=1, max_size=5).map("".join).filter(_ok)


@st.composite
def route_entry(draw: st.DrawFn) -> dict[str, object]:
    host = draw(st.one_of(hosts, wild_hosts))
    scheme = draw(st.sampled_from(["http", "https"]))
    port = draw(ports)
    entry: dict[str, object] = {
        "from": f"{scheme}://{host}" + (f":{port}" if port else ""),
        "to": "http://127.0.0.1:9",
    }
    kind = draw(st.sampled_from(["any", "prefix", "path", "regex"]))
    if kind == "prefix":
        entry["prefix"] = draw(paths | st.sampled_from(["/a", "/ap", "/api/", "/api/v"]))
    elif kind == "path":
        entry["path"] = draw(paths)
    elif kind == "regex":
        entry["regex"] = draw(regexes)
    return entry


@st.composite
def request_for(draw: st.DrawFn, entries: list[dict[str, object]]) -> tuple[str, int | None, str]:
    host = draw(st.one_of(hosts, st.sampled_from(["z.app.example.com", "example.co", "a.com"])))
    port = draw(ports)
    path = draw(st.one_of(paths, st.sampled_from([e.get("prefix") or e.get("path") or "/"
                                                   for e in entries]).map(str)))  # fmt: skip
    path = path + draw(st.sampled_from(["", "", "x", "/1", "/api"]))
    return host, port, path


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_index_agrees_with_linear_scan(data: st.DataObject) -> None:
    entries = data.draw(st.lists(route_entry(), min_size=1, max_size=25))
    router = build(entries)
    for _ in range(20):
        host, port, path = data.draw(request_for(entries))
        want = linear_match(router.routes, host, port, path)
        got = router.match(host, port, path)
        assert got is want, (host, port, path, want and want.index, got and got.index)
        serving = tuple(r for r in router.routes if r.matches_host(host, port))
        assert router.candidates(host, port) == serving
        assert router.serves(host, port) == bool(serving)
        assert router.first_for_host(host, port) is (serving[0] if serving else None)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_an_index_patched_on_reload_agrees_with_linear_scan(data: st.DataObject) -> None:
    """A reload keeping the number of routes patches the previous index (the groups of the
    positions whose route changed); it must answer as an index built from scratch."""
    entries = data.draw(st.lists(route_entry(), min_size=1, max_size=25))
    first = build(entries)
    changes = data.draw(st.dictionaries(st.integers(0, len(entries) - 1), route_entry()))
    edited = [changes.get(i, e) for i, e in enumerate(entries)]
    fresh = build(edited)
    # Unchanged positions keep their route objects, as the route compiler reuses them.
    routes = [fresh.routes[i] if i in changes else r for i, r in enumerate(first.routes)]
    router = Router(routes, first)
    for _ in range(20):
        host, port, path = data.draw(request_for(edited))
        want = linear_match(router.routes, host, port, path)
        got = router.match(host, port, path)
        assert got is want, (host, port, path, want and want.index, got and got.index)
        serving = tuple(r for r in router.routes if r.matches_host(host, port))
        assert router.candidates(host, port) == serving
        assert router.first_for_host(host, port) is (serving[0] if serving else None)


@settings(max_examples=500, deadline=None)
@given(regexes, st.text(alphabet="/abvAx1.9", max_size=12))
def test_literal_prefix_is_sound(pattern: str, path: str) -> None:
    """Every path a regex fully matches starts with the prefix the index files it under."""
    lit = literal_prefix(pattern)
    for candidate in (path, lit + path, lit):
        if re.fullmatch(pattern, candidate) is not None:
            assert candidate.startswith(lit), (pattern, candidate, lit)


def test_literal_prefix_examples() -> None:
    assert literal_prefix("/api/v[0-9]+/.*") == "/api/v"
    assert literal_prefix("^/static/.*") == "/static/"
    assert literal_prefix("/ab*") == "/a"
    assert literal_prefix("/ab?c") == "/a"
    assert literal_prefix("/ab{0,1}") == "/a"
    assert literal_prefix("/ab+") == "/ab"
    assert literal_prefix("/a|/b") == ""
    assert literal_prefix("(?i)/admin") == ""
    assert literal_prefix(r"/a\.b") == "/a"


def test_first_match_order_across_exact_and_wildcard_hosts() -> None:
    router = build(
        [
            {"from": "https://*.example.com", "prefix": "/api", "to": "http://127.0.0.1:1"},
            {"from": "https://app.example.com", "to": "http://127.0.0.1:2"},
            {"from": "https://*.example.com", "to": "http://127.0.0.1:3"},
        ]
    )
    route = router.match("app.example.com", None, "/api/x")
    assert route is not None and route.index == 0  # the wildcard comes first in config
    route = router.match("app.example.com", None, "/other")
    assert route is not None and route.index == 1
    route = router.match("other.example.com", None, "/other")
    assert route is not None and route.index == 2
    assert router.match("example.com", None, "/") is None  # a wildcard needs a label


def test_ports_follow_the_scheme_default() -> None:
    router = build(
        [
            {"from": "http://app.example.com:8080", "to": "http://127.0.0.1:1"},
            {"from": "https://app.example.com:443", "to": "http://127.0.0.1:2"},
            {"from": "http://app.example.com:443", "to": "http://127.0.0.1:3"},
        ]
    )
    assert getattr(router.match("app.example.com", 8080, "/"), "index", None) == 0
    assert getattr(router.match("app.example.com", None, "/"), "index", None) == 1
    assert getattr(router.match("app.example.com", 443, "/"), "index", None) == 1
    assert router.match("app.example.com", 80, "/") is None


def test_the_last_of_many_routes_is_found() -> None:
    """10,000 hosts, and the last of 10,000 prefix rules on one host, answer right.

    Their cost (flat in the number of routes) is measured by bench/scaling_bench.py, not
    here: timed assertions in unit tests fail on a loaded machine."""
    many_hosts = build(
        [{"from": f"https://h{i}.example.com", "to": "http://127.0.0.1:1"} for i in range(10_000)]
    )
    many_paths = build(
        [
            {"from": "https://h0.example.com", "prefix": f"/p{i}/", "to": "http://127.0.0.1:1"}
            for i in range(10_000)
        ]
    )
    assert many_hosts.match("h9999.example.com", None, "/") is many_hosts.routes[-1]
    assert many_hosts.match("h10000.example.com", None, "/") is None
    assert many_paths.match("h0.example.com", None, "/p9999/x") is many_paths.routes[-1]
    assert many_paths.match("h0.example.com", None, "/p10000/x") is None


def test_a_compiled_route_is_frozen_and_replace_keeps_every_other_field() -> None:
    """``Route``'s hand-written constructor sets every declared field: a route moved to a
    new index on reload (``dataclasses.replace``) keeps all the rest, and stays frozen."""
    import dataclasses

    import pytest

    router = build(
        [
            {
                "from": "http://app.example.com:8080",
                "to": "http://127.0.0.1:9",
                "prefix": "/api",
                "set_request_headers": {"X-A": "b", "X-T": "${pomerium.jwt}"},
                "allow_websockets": True,
                "allow_public_unauthenticated_access": True,
            }
        ]
    )
    route = router.routes[0]
    moved = dataclasses.replace(route, index=7)
    assert moved.index == 7
    for f in dataclasses.fields(Route):
        if f.name != "index":
            kept, original = getattr(moved, f.name), getattr(route, f.name)
            # Compiled, a float or int field is stored unboxed: read twice, equal, not one
            # object. Every other field is the very same object.
            if isinstance(original, (int, float)):
                assert type(kept) is type(original) and kept == original, f.name
            else:
                assert kept is original, f.name
    assert (route.host, route.port, route.match_value) == ("app.example.com", 8080, "/api")
    assert route.upgrades == frozenset({b"websocket"}) and route.request_header_templates
    with pytest.raises(dataclasses.FrozenInstanceError):
        route.index = 3  # type: ignore[misc]
