"""Fixtures for end-to-end tests: a third-party OpenID provider and a signed-in gatehouse."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from authenticate.conftest import CLIENT_ID, CLIENT_SECRET, ProviderProcess, run_provider
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

AUTH_URL = "http://authenticate.localhost"


@pytest.fixture(scope="module")
def idp() -> Iterator[ProviderProcess]:
    """panva's oidc-provider, with gatehouse's callback and signed-out URLs registered."""
    with run_provider(
        REDIRECT_URIS=f"{AUTH_URL}/oauth2/callback",
        POST_LOGOUT_REDIRECT_URIS=f"{AUTH_URL}/.pomerium/signed_out",
    ) as p:
        yield p


def secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def sso_config(idp: ProviderProcess, routes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "authenticate_service_url": AUTH_URL,
        "idp_provider": "oidc",
        "idp_provider_url": idp.issuer,
        "idp_client_id": CLIENT_ID,
        "idp_client_secret": CLIENT_SECRET,
        "idp_scopes": ["openid", "profile", "email", "groups", "offline_access"],
        "idp_request_params": {"login_hint": "alice", "prompt": "consent"},
        "shared_secret": secret(),
        "cookie_secret": secret(),
        "databroker_storage_type": "memory",
        "routes": routes,
        **extra,
    }


@pytest.fixture
def start_sso(idp: ProviderProcess, tmp_path: Path) -> Iterator[Callable[..., GatehouseProcess]]:
    started: list[GatehouseProcess] = []

    def start(routes: list[dict[str, Any]], **extra: Any) -> GatehouseProcess:
        workdir = tmp_path / f"gh{len(started)}"
        workdir.mkdir(exist_ok=True)
        gh = GatehouseProcess(sso_config(idp, routes, **extra), workdir)
        started.append(gh)
        return gh.start()

    yield start
    for gh in started:
        assert gh.stop() == 0


@pytest.fixture
def app_upstream(make_upstream: Callable[..., Upstream]) -> Upstream:
    return make_upstream("app")
