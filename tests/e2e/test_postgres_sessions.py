"""Sessions shared through the real PostgreSQL on 127.0.0.1:5432 by real gatehouse processes.

Each test gets a schema of its own (``search_path`` in the connection string, as an
operator would give gatehouse its own schema), dropped afterwards. Outages go through a
:class:`~support.relay.TcpRelay` in front of PostgreSQL: stopping it is PostgreSQL going
away for gatehouse (connections reset, new ones refused), starting it is PostgreSQL back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from support import wait_until
from support.browser import Browser
from support.client import RawConnection
from support.gatehouse import GatehouseProcess, run_cli
from support.loop import LoopThread
from support.relay import TcpRelay

from .conftest import secret, sso_config

pytestmark = pytest.mark.e2e

APP = "http://app.localhost"
ADMIN_URL = "postgres://postgres@127.0.0.1:5432/test"
#: The documented bound (the 1 s change poll at worst; NOTIFY makes it milliseconds, which
#: tests/sessions/test_session_postgres.py shows with the poll off).
PROPAGATION_BOUND_S = 1.0


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"gh_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(name)))
    yield name
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP SCHEMA {} CASCADE").format(psycopg.sql.Identifier(name)))


def pg_url(schema: str, port: int = 5432) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/test?options=-csearch_path%3D{schema}"


def _routes(app_upstream: Any) -> list[dict[str, Any]]:
    return [
        {
            "from": APP,
            "to": app_upstream.url,
            "pass_identity_headers": True,
            "allow_any_authenticated_user": True,
        }
    ]


def _get(port: int, cookie: str, client: httpx.Client | None = None) -> httpx.Response:
    headers = {"Host": "app.localhost", "Cookie": f"_gatehouse={cookie}", "Accept": "*/*"}
    if client is not None:  # keep-alive: a request costs about a millisecond
        return client.get(f"http://127.0.0.1:{port}/", headers=headers)
    return httpx.get(f"http://127.0.0.1:{port}/", headers=headers, timeout=5)


def _count(gh: GatehouseProcess, prefix: str) -> int:
    return sum(str(r.get("message", "")).startswith(prefix) for r in gh.logs())


def _sign_out(browser: Browser) -> None:
    page = browser.get(f"{APP}/.pomerium/")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    out = browser.request("POST", f"{APP}/.pomerium/sign_out", data={"csrf": csrf})
    assert out.status_code == 303


def test_two_replicas_share_sessions_and_sign_out(
    idp: Any, app_upstream: Any, tmp_path: Path, schema: str
) -> None:
    shared = {"shared_secret": secret(), "cookie_secret": secret()}
    procs = []
    try:
        for name in ("a", "b"):
            workdir = tmp_path / name
            workdir.mkdir()
            config = sso_config(
                idp,
                _routes(app_upstream),
                databroker_storage_type="postgres",
                databroker_storage_connection_string=pg_url(schema),
                # No refresh token: the sign-out makes no IdP call, so its response follows
                # the store write at once and the clock below starts at the revocation.
                idp_scopes=["openid", "profile", "email"],
                **shared,
            )
            procs.append(GatehouseProcess(config, workdir).start())
        a, b = procs
        browser = Browser(a.port)
        assert browser.follow(f"{APP}/").status_code == 200  # signed in through a
        cookie = browser.cookies["app.localhost"]["_gatehouse"]
        assert _get(b.port, cookie).status_code == 200  # b finds it in PostgreSQL (and caches it)
        assert _get(b.port, "garbage").status_code in (302, 401)
        client = httpx.Client(timeout=5)
        assert _get(b.port, cookie, client).status_code == 200  # connection open
        _sign_out(browser)
        signed_out = time.monotonic()
        accepted = 0
        while (status := _get(b.port, cookie, client).status_code) != 401:
            assert status == 200
            accepted += 1
            assert time.monotonic() - signed_out < PROPAGATION_BOUND_S, (
                "replica b still accepts a signed-out session"
            )
        took_ms = (time.monotonic() - signed_out) * 1000
        print(f"sign-out on a refused by b after {took_ms:.1f} ms ({accepted} accepted)")
        client.close()
        assert _get(a.port, cookie).status_code == 401
    finally:
        for p in procs:
            assert p.stop() == 0


def test_postgres_down_then_back(
    idp: Any, app_upstream: Any, tmp_path: Path, schema: str, loop_thread: LoopThread
) -> None:
    relay = TcpRelay(loop_thread, 5432)  # not started: the port refuses connections
    config = sso_config(
        idp,
        _routes(app_upstream),
        databroker_storage_type="postgres",
        databroker_storage_connection_string=pg_url(schema, relay.port).replace(
            "postgres@", "postgres:Sw0rdf1sh-n0t-shown@"
        ),
    )
    gh = GatehouseProcess(config, tmp_path)
    # `gatehouse check` says the store is unreachable, but the config is fine (exit 0).
    checked = run_cli("check", "-c", str(gh.config_path))
    assert checked.returncode == 0, checked.stderr
    assert f"port {relay.port} failed: Connection refused" in checked.stderr
    assert "503" in checked.stderr
    assert "Sw0rdf1sh" not in checked.stderr + checked.stdout
    gh.start()
    try:
        start_errors = [r for r in gh.logs() if r.get("message", "").startswith("session store")]
        assert len(start_errors) == 1 and "refused" in str(start_errors[0]), start_errors

        def sign_in_fails() -> None:
            mark = len(gh.logs())
            response = Browser(gh.port).follow(f"{APP}/")
            assert response.status_code == 503
            assert "unavailable" in response.text.lower() and "psycopg" not in response.text

            def failures() -> list[dict[str, Any]]:
                lines = gh.logs()[mark:]
                return [r for r in lines if r.get("message", "").startswith("request failed")]

            # The error line may reach the log file just after the response.
            wait_until(failures, 5, what="a 'request failed' line")
            time.sleep(0.2)  # and no second one
            failed = failures()
            assert len(failed) == 1 and failed[0]["level"] == "error", failed
            assert "postgres session store" in failed[0]["message"]

        sign_in_fails()
        relay.start()  # PostgreSQL is back
        deadline = time.monotonic() + 15
        while (status := Browser(gh.port).follow(f"{APP}/").status_code) != 200:
            assert status == 503 and time.monotonic() < deadline, "no recovery within 15 s"
            time.sleep(0.2)
        # The pool may serve before the listener (which logs outages) has reconnected; a
        # listener still backing off from the first outage would not see the second one.
        wait_until(lambda: _count(gh, "postgres session store reachable again") == 1, 10)
        relay.stop()  # gone again, mid-run
        gh.wait_log(lambda r: r.get("message", "").startswith("postgres session store unreach"))
        sign_in_fails()
        relay.start()
        deadline = time.monotonic() + 15
        while (status := Browser(gh.port).follow(f"{APP}/").status_code) != 200:
            assert status == 503 and time.monotonic() < deadline, "no recovery within 15 s"
            time.sleep(0.2)
        # The listener (which logs the recovery) may reconnect after the pool did.
        wait_until(lambda: _count(gh, "postgres session store reachable again") == 2, 5)
    finally:
        assert gh.stop() == 0
        relay.stop()
    text = gh.stderr_text()
    assert "Traceback" not in text
    # The outage and the recovery each logged once (the start-up failure is the first one).
    assert _count(gh, "postgres session store unreachable") == 1
    assert "Sw0rdf1sh" not in text and "Sw0rdf1sh" not in "\n".join(gh.stdout_lines)


def test_sign_out_is_refused_by_every_worker_at_once(
    idp: Any, app_upstream: Any, tmp_path: Path, schema: str
) -> None:
    """``workers: 2`` on one PostgreSQL store: once the sign-out returned, neither worker
    lets the cookie in, not even for the first request. The revocation stamp in data_dir
    guarantees it; the notification alone is usually fast enough too, so the stamp by
    itself is checked in tests/sessions/test_session_postgres.py (listener off)."""
    config = sso_config(
        idp,
        [{"from": APP, "to": app_upstream.url, "allow_any_authenticated_user": True}],
        databroker_storage_type="postgres",
        databroker_storage_connection_string=pg_url(schema),
        workers=2,
        log_level="debug",  # "access allow" lines carry the worker's pid
        idp_scopes=["openid", "profile", "email"],
    )
    with GatehouseProcess(config, tmp_path) as gh:
        browser = Browser(gh.port)
        assert browser.follow(f"{APP}/").status_code == 200
        cookie = browser.cookies["app.localhost"]["_gatehouse"]

        def pids(message: str, since: int = 0) -> set[int]:
            return {int(r["pid"]) for r in gh.logs()[since:] if r.get("message") == message}

        def fresh_get() -> int:
            conn = RawConnection(gh.port)  # a new connection: the kernel picks the worker
            try:
                headers = [("Cookie", f"_gatehouse={cookie}"), ("Accept", "application/json")]
                return conn.request("GET", "/x", "app.localhost", headers).status
            finally:
                conn.sock.close()

        for _ in range(400):  # both workers serve (and cache) the session first
            assert fresh_get() == 200
            if len(pids("access allow")) == 2:
                break
        assert len(pids("access allow")) == 2, "the requests never reached both workers"
        mark = len(gh.logs())
        _sign_out(browser)
        statuses = [fresh_get() for _ in range(200)]
        assert statuses == [401] * 200, f"{statuses.count(200)} requests still let in"
        assert len(pids("access needs-login", mark)) == 2, "refusals did not come from both"


def test_outage_keeps_cached_sessions_refuses_sign_out_and_sessions_survive(
    idp: Any, app_upstream: Any, tmp_path: Path, schema: str, loop_thread: LoopThread
) -> None:
    """As with Redis (tests/ops/test_ops_redis_down.py), plus what PostgreSQL adds: the
    sessions are still there when it comes back."""
    relay = TcpRelay(loop_thread, 5432).start()
    config = sso_config(
        idp,
        _routes(app_upstream),
        databroker_storage_type="postgres",
        databroker_storage_connection_string=pg_url(schema, relay.port),
        idp_scopes=["openid", "profile", "email"],
    )
    try:
        with GatehouseProcess(config, tmp_path) as gh:
            alice = Browser(gh.port)
            assert alice.follow(f"{APP}/").status_code == 200
            cookie = alice.cookies["app.localhost"]["_gatehouse"]
            relay.stop()
            # Past the cache's 5 s freshness, within the 60 s outage grace: still served.
            deadline = time.monotonic() + 6.0
            while time.monotonic() < deadline:
                assert alice.get(f"{APP}/during").status_code == 200
                time.sleep(0.5)
            # A sign-out cannot revoke: a clear 503, and the session is not half ended.
            page = alice.get(f"{APP}/.pomerium/")
            csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
            out = alice.request("POST", f"{APP}/.pomerium/sign_out", data={"csrf": csrf})
            assert out.status_code == 503 and "Traceback" not in out.text
            assert alice.cookies["app.localhost"]["_gatehouse"] == cookie
            relay.start()
            # Back, without a restart: the same cookie still works (PostgreSQL kept the
            # session), and the sign-out now does.
            wait_until(
                lambda: _get(gh.port, cookie).status_code == 200, 15, interval=0.2, what="recovery"
            )
            _sign_out(alice)
            assert _get(gh.port, cookie).status_code == 401
    finally:
        relay.stop()
