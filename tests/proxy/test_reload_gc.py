"""A replaced state is freed by reference counting alone, so freezing what is alive after
each reload (gcpause.freeze_survivors) leaks nothing, and a reload builds few objects.

Frozen objects are never scanned by the cyclic collector: a cycle among them that became
garbage would stay for good. These tests build real states (signed-in config with the
built-in provider and the console, and a plain one) the way a worker's reload does, and
check that dropping the old one leaves no cycle behind and that many reloads with
freezing keep the number of live objects flat.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatehouse.config import load_text
from gatehouse.config.loader import LoadedConfig
from gatehouse.gcpause import freeze_survivors
from gatehouse.identity.keys import generate_pem
from gatehouse.proxy.compile_cache import RouteCompiler
from gatehouse.proxy.state import ProxyState, Services, build_state
from gatehouse.serve import start_services, stop_services

ROUTES = 200


def _secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _plain(n: int, changed: int) -> str:
    lines = ["insecure_server: true", "routes:"]
    for i in range(n):
        host = f"c{changed}" if i == n // 2 else f"h{i}"
        lines += [
            f"  - from: http://{host}.example.com",
            "    to: http://127.0.0.1:9",
            "    allow_public_unauthenticated_access: true",
        ]
    return "\n".join(lines) + "\n"


def _signed_in(data_dir: Path, secrets: tuple[str, str]) -> str:
    head = f"""\
insecure_server: true
data_dir: {data_dir}
shared_secret: {secrets[0]}
cookie_secret: {secrets[1]}
databroker_storage_type: memory
authenticate_service_url: http://authenticate.localhost
idp_provider: builtin
idp_users:
  - username: alice
    password_hash: '$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'
    email: alice@example.com
console_url: http://console.localhost
console_policy:
  - allow: {{or: [{{email: {{is: alice@example.com}}}}]}}
"""
    return head


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic collector off, so only the test's own gc.collect() calls run it."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was:
            gc.enable()


def _texts(tmp_path: Path) -> dict[str, list[str]]:
    secrets = (_secret(), _secret())
    head = _signed_in(tmp_path / "data", secrets)
    signed = [
        head
        + _plain(ROUTES, r)
        .replace("insecure_server: true\n", "", 1)
        .replace("allow_public_unauthenticated_access: true", "allow_any_authenticated_user: true")
        for r in range(6)
    ]
    return {"plain": [_plain(ROUTES, r) for r in range(6)], "signed-in": signed}


@pytest.mark.parametrize("kind", ["plain", "signed-in"])
def test_a_replaced_state_leaves_no_cycle(kind: str, tmp_path: Path, no_collector: None) -> None:
    texts = _texts(tmp_path)[kind]

    async def scenario() -> list[int]:
        options = load_text(texts[0], "<test>", env={}).options
        services = await start_services(options)
        services.route_compiler = RouteCompiler()
        unreachable: list[int] = []
        try:
            loaded: LoadedConfig | None = load_text(texts[0], "<test>", env={})
            assert loaded is not None
            state: ProxyState | None = build_state(loaded, services)
            for text in texts[1:]:
                new_loaded = load_text(text, "<test>", env={})
                new_state = build_state(new_loaded, services)
                gc.collect()  # what building made and dropped (not the old state)
                loaded, state = new_loaded, new_state  # the swap: the old one is dropped
                unreachable.append(gc.collect())
            assert state is not None and len(state.router.routes) == ROUTES
        finally:
            await stop_services(services)
        return unreachable

    # Every old state was freed by reference counting: the collector found nothing.
    assert asyncio.run(scenario()) == [0] * 5


def test_reloads_with_freezing_keep_live_objects_flat(no_collector: None) -> None:
    # A configured key: no warning per build (pytest's log capture keeps every record).
    key = base64.b64encode(generate_pem().encode()).decode()
    texts = [f"signing_key: {key}\n" + _plain(ROUTES, r % 6) for r in range(30)]
    services = Services(route_compiler=RouteCompiler())
    state = build_state(load_text(texts[0], "<test>", env={}), services)
    freeze_survivors()
    counts = []
    for text in texts[1:]:
        state = build_state(load_text(text, "<test>", env={}), services)
        freeze_survivors()
        counts.append(gc.get_freeze_count() + len(gc.get_objects()))
    assert state.router.match(f"c{29 % 6}.example.com", None, "/") is not None
    # After the first reloads settle, 25 more leave the live count where it was.
    assert max(counts[4:]) - min(counts[4:]) < 50, counts


def test_a_one_route_reload_builds_few_objects(no_collector: None) -> None:
    """Unchanged routes keep their options, compiled route and host table: a reload of
    200 routes that changes one makes a few dozen tracked objects, not thousands."""
    services = Services(route_compiler=RouteCompiler())
    build_state(load_text(_plain(ROUTES, 0), "<test>", env={}), services)
    freeze_survivors()
    loaded = load_text(_plain(ROUTES, 1), "<test>", env={})
    state = build_state(loaded, services)
    gc.collect()
    assert services.route_compiler.compiled_last == 1
    assert state.router.match("c1.example.com", None, "/") is not None
    assert state.router.match("c0.example.com", None, "/") is None
    assert len(gc.get_objects()) < 300, len(gc.get_objects())
