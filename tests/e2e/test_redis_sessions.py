"""Sessions shared through the real Redis on 127.0.0.1:6379 by two gatehouse processes."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from support.browser import Browser
from support.gatehouse import GatehouseProcess

from .conftest import secret, sso_config

APP = "http://app.localhost"


@pytest.fixture
def redis_pair(idp, app_upstream, tmp_path: Path):  # type: ignore[no-untyped-def]
    shared = {"shared_secret": secret(), "cookie_secret": secret()}
    routes = [
        {
            "from": APP,
            "to": app_upstream.url,
            "pass_identity_headers": True,
            "allow_any_authenticated_user": True,
        }
    ]
    procs = []
    for name in ("a", "b"):
        workdir = tmp_path / name
        workdir.mkdir()
        config = sso_config(
            idp,
            routes,
            databroker_storage_type="redis",
            databroker_storage_connection_string="redis://127.0.0.1:6379/0",
            **shared,
        )
        procs.append(GatehouseProcess(config, workdir).start())
    yield procs
    for p in procs:
        assert p.stop() == 0


def _get(port: int, cookie: str) -> httpx.Response:
    return httpx.get(
        f"http://127.0.0.1:{port}/",
        headers={
            "Host": "app.localhost",
            "Cookie": f"_gatehouse={cookie}",
            "Accept": "application/json",
        },
        timeout=5,
    )


def test_session_created_on_one_replica_works_on_the_other_and_sign_out_reaches_both(
    redis_pair,
) -> None:  # type: ignore[no-untyped-def]
    a, b = redis_pair
    browser = Browser(a.port)
    assert browser.follow(f"{APP}/").status_code == 200
    cookie = browser.cookies["app.localhost"]["_gatehouse"]
    assert _get(b.port, cookie).status_code == 200
    page = browser.get(f"{APP}/.pomerium/")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    assert (
        browser.request("POST", f"{APP}/.pomerium/sign_out", data={"csrf": csrf}).status_code == 303
    )
    deadline = time.monotonic() + 1.0
    while _get(b.port, cookie).status_code != 401:
        assert time.monotonic() < deadline, "replica b still accepts a signed-out session after 1 s"
        time.sleep(0.05)
