"""``metrics_address`` serves Prometheus metrics an operator can act on.

Drives real traffic (a sign-in through panva's oidc-provider, an allowed page, a policy
deny, an API call without a session, a refused upstream, a WebSocket, config reloads)
and reads the metrics page as Prometheus would. With ``workers: 2`` the supervisor
serves the merged samples of both workers, so counts add up whichever worker served.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_helpers import metric, metrics_port, scrape

from e2e.conftest import sso_config
from support import wait_until
from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream, WebSocketEcho, closed_port

pytestmark = pytest.mark.e2e

APP = "http://app.localhost"


def _routes(app: Upstream, ws: WebSocketEcho) -> list[dict[str, Any]]:
    alice = [{"allow": {"or": [{"email": {"is": "alice@example.com"}}]}}]
    return [
        {"name": "app", "from": APP, "to": app.url, "pass_identity_headers": True, "policy": alice},
        {
            "name": "denied",
            "from": "http://denied.localhost",
            "to": app.url,
            "policy": [{"allow": {"or": [{"email": {"is": "nobody@example.com"}}]}}],
        },
        {
            "name": "refused",
            "from": "http://refused.localhost",
            "to": f"http://127.0.0.1:{closed_port()}",
            "allow_public_unauthenticated_access": True,
        },
        {
            "name": "ws",
            "from": "http://ws.localhost",
            "to": ws.url,
            "allow_websockets": True,
            "allow_public_unauthenticated_access": True,
        },
    ]


def _start(
    idp, tmp_path: Path, routes: list[dict[str, Any]], workers: int
) -> tuple[GatehouseProcess, dict[str, Any]]:  # type: ignore[no-untyped-def]
    config = sso_config(idp, routes, metrics_address="127.0.0.1:0", workers=workers)
    workdir = tmp_path / f"gh-{workers}"
    workdir.mkdir()
    return GatehouseProcess(config, workdir).start(), config


def _json(port: int, host: str, path: str = "/") -> httpx.Response:
    return httpx.get(
        f"http://127.0.0.1:{port}{path}",
        headers={"Host": host, "Accept": "application/json"},
        timeout=10,
    )


def test_metrics_count_requests_decisions_errors_tunnels_and_reloads(  # type: ignore[no-untyped-def]
    idp, tmp_path: Path, make_upstream: Callable[..., Upstream], ws_echo: WebSocketEcho
) -> None:
    from websockets.sync.client import connect as ws_connect

    gh, config = _start(idp, tmp_path, _routes(make_upstream("app"), ws_echo), workers=1)
    try:
        port = metrics_port(gh)
        before = scrape(port)
        assert metric(before, "gatehouse_config_info") == 1
        digest0 = next(
            dict(ls)["digest"]
            for (n, ls), v in before.items()
            if n == "gatehouse_config_info" and v == 1
        )

        browser = Browser(gh.port)
        assert browser.follow(f"{APP}/page").status_code == 200
        for _ in range(4):
            assert browser.get(f"{APP}/again").status_code == 200
        assert browser.follow("http://denied.localhost/").status_code == 403
        assert _json(gh.port, "app.localhost", "/api").status_code == 401
        for _ in range(3):
            assert _json(gh.port, "refused.localhost").status_code == 502

        sock = socket.create_connection(("127.0.0.1", gh.port), timeout=5)
        with ws_connect("ws://ws.localhost/chat", sock=sock, open_timeout=5, close_timeout=2) as ws:
            ws.send("ping")
            assert ws.recv(timeout=5) == "ping"
            during = wait_until(
                lambda: (s := scrape(port)) and metric(s, "gatehouse_open_tunnels") == 1 and s,
                5,
                what="open tunnel gauge 1",
            )
        assert metric(during, "gatehouse_open_tunnels") == 1
        wait_until(
            lambda: metric(scrape(port), "gatehouse_open_tunnels") == 0,
            5,
            what="open tunnel gauge 0",
        )

        s = scrape(port)
        # Requests by route, method and status class.
        assert (
            metric(s, "gatehouse_http_requests_total", route="app", method="GET", status="2xx") >= 5
        )
        assert (
            metric(s, "gatehouse_http_requests_total", route="app", status="4xx") >= 1
        )  # the API 401
        assert metric(s, "gatehouse_http_requests_total", route="denied", status="4xx") >= 1
        assert metric(s, "gatehouse_http_requests_total", route="refused", status="5xx") == 3
        # Duration histograms: every request observed; upstream time only where one answered.
        assert metric(s, "gatehouse_http_request_duration_seconds_count", route="app") >= 6
        assert (
            metric(s, "gatehouse_http_request_duration_seconds_bucket", route="app", le="+Inf") >= 6
        )
        assert metric(s, "gatehouse_upstream_duration_seconds_count", route="app") >= 5
        # Upstream errors: the refused connections, by kind.
        assert metric(s, "gatehouse_upstream_errors_total", route="refused") == 3
        # Decisions by route and outcome.
        assert (
            metric(s, "gatehouse_authorization_decisions_total", route="app", outcome="allow") >= 5
        )
        assert (
            metric(s, "gatehouse_authorization_decisions_total", route="denied", outcome="deny")
            >= 1
        )
        assert (
            metric(s, "gatehouse_authorization_decisions_total", route="app", outcome="needs-login")
            >= 1
        )

        # IdP and session-store calls: each timed, by operation (the sign-in above made them).
        for operation in ("discovery", "jwks", "token"):
            assert (
                metric(
                    s,
                    "gatehouse_dependency_duration_seconds_count",
                    dependency="idp",
                    operation=operation,
                )
                >= 1
            ), operation
        for operation in ("put", "consume_once"):
            assert (
                metric(
                    s,
                    "gatehouse_dependency_duration_seconds_count",
                    dependency="session_store",
                    operation=operation,
                )
                >= 1
            ), operation
        assert metric(s, "gatehouse_dependency_call_errors_total", dependency="idp") == 0

        # Config reloads: a valid change bumps the success counter and the hash.
        changed = copy.deepcopy(config)
        changed["routes"].append(
            {
                "name": "extra",
                "from": "http://extra.localhost",
                "response": {"status": 200, "body": "x"},
                "allow_public_unauthenticated_access": True,
            }
        )
        gh.write_config(changed)
        gh.wait_log(lambda r: r.get("message") == "config reloaded", timeout=10)
        s = scrape(port)
        assert metric(s, "gatehouse_config_reloads_total", result="success") == 1
        live = [
            dict(ls)["digest"]
            for (n, ls), v in s.items()
            if n == "gatehouse_config_info" and v == 1
        ]
        assert len(live) == 1 and live[0] != digest0
        # ... and a broken one bumps the failure counter and keeps the hash.
        gh.write_config("routes: [this is not: valid")
        wait_until(
            lambda: metric(scrape(port), "gatehouse_config_reloads_total", result="failure") == 1,
            10,
            what="reload failure counted",
        )
        s = scrape(port)
        assert [
            dict(ls)["digest"]
            for (n, ls), v in s.items()
            if n == "gatehouse_config_info" and v == 1
        ] == live
    finally:
        assert gh.stop() == 0, gh.stderr_text()


def test_metrics_add_up_across_two_workers(  # type: ignore[no-untyped-def]
    idp, tmp_path: Path, make_upstream: Callable[..., Upstream], ws_echo: WebSocketEcho
) -> None:
    gh, _ = _start(idp, tmp_path, _routes(make_upstream("app"), ws_echo), workers=2)
    try:
        port = metrics_port(gh)
        n = 40
        for _ in range(n):
            # A new connection each time, so the kernel spreads them over both workers.
            assert _json(gh.port, "refused.localhost").status_code == 502
        s = scrape(port)
        assert metric(s, "gatehouse_http_requests_total", route="refused", status="5xx") == n
        assert metric(s, "gatehouse_upstream_errors_total", route="refused") == n
        assert metric(s, "gatehouse_http_request_duration_seconds_count", route="refused") == n
        # Both workers served some of them (the access log carries no pid; the process log does).
        pids = {
            int(r["pid"]) for r in gh.logs() if r.get("message", "").startswith("upstream error")
        }
        assert len(pids) == 2, pids
        # One config hash, however many workers report it.
        live = {
            dict(ls)["digest"]
            for (name, ls), v in s.items()
            if name == "gatehouse_config_info" and v == 1
        }
        assert len(live) == 1
    finally:
        assert gh.stop() == 0, gh.stderr_text()
