"""Reloads recompile only the routes that changed; 10,000 routes load and build quickly."""

from __future__ import annotations

from gatehouse.authorize import PolicyInput
from gatehouse.config import load_text
from gatehouse.proxy.compile_cache import RouteCompiler
from gatehouse.proxy.state import Services, build_state
from gatehouse.sessions.model import Session


def _config(hosts: list[str], extra: str = "") -> str:
    lines = ["insecure_server: true", extra, "routes:"]
    for host in hosts:
        lines += [
            f"  - from: http://{host}",
            "    to: http://127.0.0.1:9",
            "    allow_public_unauthenticated_access: true",
        ]
    return "\n".join(lines) + "\n"


def _state(text: str, services: Services):  # type: ignore[no-untyped-def]
    return build_state(load_text(text, "<test>", env={}), services)


def test_reload_compiles_only_changed_routes() -> None:
    services = Services(route_compiler=RouteCompiler())
    hosts = [f"h{i}.example.com" for i in range(50)]
    first = _state(_config(hosts), services)
    assert services.route_compiler.compiled_last == 50

    changed = [*hosts]
    changed[10] = "new.example.com"
    changed.insert(0, "top.example.com")  # every later route moves down one place
    second = _state(_config(changed), services)
    assert services.route_compiler.compiled_last == 2
    for i, host in enumerate(changed):
        route = second.router.match(host, None, "/")
        assert route is not None and route.index == i and route.host == host
    # Unchanged routes keep their compiled parts (policy, balancer) under the new index.
    old = first.router.match("h20.example.com", None, "/")
    new = second.router.match("h20.example.com", None, "/")
    assert old is not None and new is not None
    assert (old.index, new.index) == (20, 21)
    assert new.policy is old.policy and new.balancer is old.balancer
    assert second.router.match("h10.example.com", None, "/") is None


def test_global_change_recompiles_every_route() -> None:
    services = Services(route_compiler=RouteCompiler())
    hosts = [f"h{i}.example.com" for i in range(5)]
    _state(_config(hosts), services)
    state = _state(_config(hosts, "set_response_headers: {X-Test: one}"), services)
    assert services.route_compiler.compiled_last == 5
    route = state.router.match("h1.example.com", None, "/")
    assert route is not None and (b"x-test", b"one") in route.set_response_headers


def test_failed_compile_keeps_previous_routes() -> None:
    services = Services(route_compiler=RouteCompiler())
    hosts = [f"h{i}.example.com" for i in range(5)]
    _state(_config(hosts), services)
    bad = _config(hosts).replace(
        "allow_public_unauthenticated_access: true",
        "policy: {allow: {or: [{emial: a@b}]}}",
        1,
    )
    try:
        _state(bad, services)
    except Exception as exc:  # the policy problem is reported
        assert "emial" in str(exc)
    else:
        raise AssertionError("a misspelt criterion must fail the build")
    _state(_config(hosts), services)
    assert services.route_compiler.compiled_last == 0


def test_a_reload_of_ten_thousand_routes_recompiles_only_the_changed_one() -> None:
    """Start-up and reload times at 10,000 routes are bench/scaling_bench.py's; here, that a
    one-route edit recompiles one route and the result routes to it."""
    hosts = [f"h{i}.example.com" for i in range(10_000)]
    text = _config(hosts)
    services = Services(route_compiler=RouteCompiler())
    state = build_state(load_text(text, "<test>", env={}), services)
    assert len(state.router.routes) == 10_000
    loaded = load_text(text.replace("h5000.", "changed."), "<test>", env={})
    state = build_state(loaded, services)
    assert services.route_compiler.compiled_last == 1
    route = state.router.match("changed.example.com", None, "/")
    assert route is not None and route.index == 5000


def test_check_then_worker_build_compiles_once() -> None:
    """``gatehouse run`` builds the config in its check and again in the worker: the
    second build reuses the first's routes (the process shares one compiler)."""
    text = _config([f"once{i}.example.com" for i in range(20)])
    build_state(load_text(text, "<test>", env={}), Services())
    services = Services()
    build_state(load_text(text, "<test>", env={}), services)
    assert services.route_compiler.compiled_last == 0


def test_routes_with_the_same_rules_share_one_compiled_policy() -> None:
    """Equal rules compile once and are shared (immutable); each route's decisions still
    name it, and a route whose rules differ in any way (another user, 1 vs true) gets
    its own."""
    alice = "policy: {allow: {or: [{email: {is: alice@example.com}}]}}"
    routes = [
        ("a1.example.com", alice),
        ("a2.example.com", alice),
        ("b.example.com", alice.replace("alice", "bob")),
        ("c1.example.com", "allowed_idp_claims: {level: [1]}"),
        ("c2.example.com", "allowed_idp_claims: {level: [true]}"),
        ("p1.example.com", "allow_public_unauthenticated_access: true"),
        ("p2.example.com", "allow_public_unauthenticated_access: true"),
    ]
    lines = ["insecure_server: true", "routes:"]
    for host, rule in routes:
        lines += [f"  - from: http://{host}", "    to: http://127.0.0.1:9", f"    {rule}"]
    state = build_state(
        load_text("\n".join(lines) + "\n", "<test>", env={}),
        Services(route_compiler=RouteCompiler()),
    )
    policies = {host: state.router.match(host, None, "/").policy for host, _ in routes}  # type: ignore[union-attr]
    alice_in = PolicyInput("GET", "/", session=_session("alice@example.com", 1), now=1e9)
    for host in ("a1.example.com", "a2.example.com"):
        decision = policies[host].evaluate(alice_in)
        assert decision.allowed and decision.route == f"http://{host}"
        assert policies[host].clauses is policies["a1.example.com"].clauses
    assert not policies["b.example.com"].evaluate(alice_in).allowed
    assert policies["b.example.com"].clauses is not policies["a1.example.com"].clauses
    assert policies["c1.example.com"].clauses is not policies["c2.example.com"].clauses
    assert policies["p2.example.com"].allows_everyone
    assert policies["p2.example.com"].clauses is policies["p1.example.com"].clauses


def _session(email: str, level: object) -> Session:
    return Session(id="s", user_id="u", email=email, claims={"level": level}, expires_at=1e12)


def test_plain_text_upstreams_share_endpoints_and_tls_ones_keep_their_settings() -> None:
    """Routes to one plain-text upstream share its (immutable) endpoint; an https upstream
    is never shared across routes, so two routes with different TLS settings to the same
    address never share pooled connections."""
    routes = [
        ("a.example.com", "http://127.0.0.1:9", ""),
        ("b.example.com", "http://127.0.0.1:9", ""),
        ("c.example.com", "http://127.0.0.1:10", ""),
        ("n.example.com", "http://127.0.0.1:9", "tls_server_name: other.example"),
        ("v.example.com", "https://127.0.0.1:9443", ""),
        ("s.example.com", "https://127.0.0.1:9443", "tls_skip_verify: true"),
        ("h.example.com", "http://127.0.0.1:9", "set_response_headers: {X-Test: one}"),
    ]
    lines = ["insecure_server: true", "routes:"]
    for host, to, extra in routes:
        lines += [f"  - from: http://{host}", f"    to: {to}", f"    {extra}" if extra else ""]
        lines.append("    allow_public_unauthenticated_access: true")
    state = build_state(
        load_text("\n".join(lines) + "\n", "<test>", env={}),
        Services(route_compiler=RouteCompiler()),
    )
    target = {}
    compiled = {}
    for host, _, _ in routes:
        route = state.router.match(host, None, "/")
        assert route is not None and route.balancer is not None
        target[host[0]] = route.balancer.targets[0]
        compiled[host[0]] = route
    assert target["a"].endpoint is target["b"].endpoint
    assert target["a"].host_header == b"127.0.0.1:9"
    assert target["c"].endpoint is not target["a"].endpoint
    assert target["c"].host_header == b"127.0.0.1:10"
    assert target["n"].endpoint.server_name == "other.example"
    assert target["n"].endpoint.key != target["a"].endpoint.key
    verified, skipped = target["v"].endpoint, target["s"].endpoint
    assert verified is not skipped and verified.key != skipped.key
    assert verified.tls_context is not None and skipped.tls_context is not None
    assert verified.tls_context.verify_mode != skipped.tls_context.verify_mode
    # Equal header settings share their compiled values; the route's own header is its own.
    assert compiled["a"].set_response_block is compiled["b"].set_response_block
    assert compiled["a"].remove_request_headers is compiled["b"].remove_request_headers
    assert b"x-test: one\r\n" in compiled["h"].set_response_block
    assert b"x-test" not in compiled["a"].set_response_block
