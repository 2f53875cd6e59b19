"""The Redis session store goes down, then comes back; gatehouse is never restarted.

The shared Redis on 6379 is never touched: each test starts its own ``redis-server`` on a
free port (no persistence) and SIGKILLs it. The documented choice
(:mod:`gatehouse.sessions.cache`): a session this process confirmed within the last
60 s keeps working from its cache; anything that must write or read the store (a new
sign-in, a sign-out, a session not cached) gets a clear 503 page; when Redis is back,
everything works again. Redis restarted without persistence has lost every session, so
users sign in again (a persistent Redis keeps them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from ops_helpers import RedisServer, csrf_of

from e2e.conftest import sso_config
from support import wait_until
from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

pytestmark = pytest.mark.e2e

APP = "http://app.localhost"
#: gatehouse.sessions.cache.DEFAULT_STALE_GRACE_S (not configurable yet).
STALE_GRACE_S = 60.0


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.kill()


@pytest.fixture
def gh(
    idp, redis: RedisServer, tmp_path: Path, make_upstream: Callable[..., Upstream]
) -> Iterator[GatehouseProcess]:  # type: ignore[no-untyped-def]
    app = make_upstream("app")
    routes = [
        {
            "from": APP,
            "to": app.url,
            "pass_identity_headers": True,
            "allow_any_authenticated_user": True,
        }
    ]
    config = sso_config(
        idp, routes, databroker_storage_type="redis", databroker_storage_connection_string=redis.url
    )
    proc = GatehouseProcess(config, tmp_path).start()
    yield proc
    assert proc.stop() == 0, proc.stderr_text()


def _stop_before_callback(browser: Browser) -> str:
    seen: list[str] = []
    browser.follow(f"{APP}/wanted", stop=lambda u: "/oauth2/callback" in u and not seen.append(u))
    assert seen
    return seen[0]


def _is_clear_503(r: httpx.Response) -> bool:
    return r.status_code == 503 and "Traceback" not in r.text and "redis" not in r.text.lower()


def test_redis_outage_keeps_cached_sessions_fails_writes_clearly_and_recovers(  # type: ignore[no-untyped-def]
    gh: GatehouseProcess, redis: RedisServer
) -> None:
    alice = Browser(gh.port)
    assert alice.follow(f"{APP}/").status_code == 200
    csrf = csrf_of(alice.get(f"{APP}/.pomerium/").text)
    midway = Browser(gh.port)
    callback = _stop_before_callback(midway)

    redis.kill()
    down_at = time.monotonic()

    # A signed-in user keeps working (from the cache), past the cache's 5 s freshness.
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        r = alice.get(f"{APP}/during")
        assert r.status_code == 200, (r.status_code, r.text[:200])
        time.sleep(0.5)
    # A new sign-in cannot store its session: a clear 503, not a 500, not a silent success.
    r = midway.get(callback)
    assert _is_clear_503(r), (r.status_code, r.text[:300])
    # Sign-out cannot revoke in the store: it fails loudly rather than pretending.
    out = alice.request("POST", f"{APP}/.pomerium/sign_out", data={"csrf": csrf})
    assert _is_clear_503(out), (out.status_code, out.text[:300])
    assert "_gatehouse" in alice.cookies.get("app.localhost", {})
    # A cookie gatehouse has not cached cannot be checked: 503, never let through.
    stranger = httpx.get(
        f"http://127.0.0.1:{gh.port}/",
        timeout=10,
        headers={"Host": "app.localhost", "Cookie": "_gatehouse=" + "A" * 80},
    )
    assert stranger.status_code in (401, 503)
    assert gh.proc is not None and gh.proc.poll() is None
    assert time.monotonic() - down_at < STALE_GRACE_S
    assert gh.find_log(
        lambda x: x.get("level") == "error" and "session store" in str(x.get("message"))
    ) or gh.find_log(lambda x: "store" in str(x.get("message")))

    redis.start()  # same port, empty (no persistence)

    # Recovery without a restart: the old session is gone with the data, so Alice signs in
    # again, and sign-out works again.
    def signed_in_again() -> bool:
        return Browser(gh.port).follow(f"{APP}/back").status_code == 200

    wait_until(signed_in_again, 15, interval=0.5, what="sign-in to work after Redis is back")
    # Once it works, it keeps working: no request may trip over a connection that was
    # open before the outage.
    statuses = [Browser(gh.port).follow(f"{APP}/n{i}").status_code for i in range(5)]
    assert statuses == [200] * 5, statuses
    bob = Browser(gh.port)
    assert bob.follow(f"{APP}/x").status_code == 200
    csrf = csrf_of(bob.get(f"{APP}/.pomerium/").text)
    assert bob.request("POST", f"{APP}/.pomerium/sign_out", data={"csrf": csrf}).status_code == 303
    assert bob.get(f"{APP}/x").status_code == 302  # signed out for real
    assert gh.find_log(lambda x: "worker exited" in str(x.get("message"))) is None


@pytest.mark.slow
def test_cached_sessions_stop_working_after_the_grace_period(  # type: ignore[no-untyped-def]
    gh: GatehouseProcess, redis: RedisServer
) -> None:
    alice = Browser(gh.port)
    assert alice.follow(f"{APP}/").status_code == 200
    redis.kill()
    down_at = time.monotonic()
    # Served from the cache at first; then, STALE_GRACE_S after the last store read, 503.
    assert alice.get(f"{APP}/a").status_code == 200
    status = wait_until(
        lambda: (s := alice.get(f"{APP}/b").status_code) != 200 and s,
        STALE_GRACE_S + 15,
        interval=1.0,
        what="the grace period to end",
    )
    assert status == 503
    assert STALE_GRACE_S - 6 <= time.monotonic() - down_at <= STALE_GRACE_S + 10
