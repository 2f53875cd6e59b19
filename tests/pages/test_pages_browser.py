"""gatehouse's pages in a real headless Chromium, with JavaScript off, checked by axe-core.

The flows (sign in, session page, routes portal, 403 with "sign in as someone else", sign-out
confirmation, signed out, 404, 400, verify app) run with JavaScript disabled: none of
them may need it. Chromium sends every request to gatehouse as its proxy (so
``http://app.localhost/`` needs no port and no DNS). Each page's HTML is then checked in
a second, JavaScript-enabled page with Deque's axe-core (npm ``axe-core``, installed by
``scripts/test`` in ``tests/pages/axe``): no serious or critical violations. Screenshots
of every page, also at a phone's width, go to ``artifacts/screenshots/pages-*.png``
(``GATEHOUSE_ARTIFACTS`` overrides).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

import pytest

from gatehouse.idp.passwords import hash_password
from gatehouse.verify.app import VerifyApp
from gatehouse.verify.app import serve as serve_verify_app
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
AXE = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = (
    Path(os.environ.get("GATEHOUSE_ARTIFACTS", Path(__file__).parents[2] / "artifacts"))
    / "screenshots"
)
PASSWORD = "correct horse battery"
PHONE = {"width": 375, "height": 740}


@pytest.fixture
def verify_app() -> Iterator[WSGIServer]:
    server = serve_verify_app("127.0.0.1", 0, None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def gh(
    make_upstream: Callable[..., Upstream],
    start_gatehouse: Callable[..., GatehouseProcess],
    verify_app: WSGIServer,
) -> GatehouseProcess:
    app = make_upstream("app")
    digest = hash_password(PASSWORD)
    alice = [{"allow": {"or": [{"email": {"is": "alice@example.com"}}]}}]
    gh = start_gatehouse(
        {
            "authenticate_service_url": "http://authenticate.localhost",
            "idp_provider": "builtin",
            "idp_users": [
                {"username": u, "password_hash": digest, "email": f"{u}@example.com",
                 "name": u.title(), "groups": ["staff"]}
                for u in ("alice", "bob")
            ],
            "routes": [
                {"name": "app", "from": "http://app.localhost", "to": app.url, "policy": alice},
                {"name": "payroll", "from": "http://payroll.localhost", "to": app.url,
                 "policy": [{"allow": {"or": [{"email": {"is": "nobody@example.com"}}]}}],
                 "show_error_details": True},
                {"name": "verify", "from": "http://verify.localhost",
                 "to": f"http://127.0.0.1:{verify_app.server_port}",
                 "pass_identity_headers": True, "policy": alice},
            ],
        }
    )  # fmt: skip
    app_object = verify_app.get_app()
    assert isinstance(app_object, VerifyApp)
    app_object.jwks_url = f"http://127.0.0.1:{gh.port}/.well-known/pomerium/jwks.json"
    return gh


@pytest.fixture
def browser(gh: GatehouseProcess) -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (./scripts/test installs it)")
    if not AXE.exists():
        pytest.skip("axe-core is not installed (./scripts/test runs npm ci in tests/pages/axe)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                # Every request to gatehouse, *.localhost included (Chromium bypasses the
                # proxy for loopback names unless told not to).
                f"--proxy-server=http://127.0.0.1:{gh.port}",
                "--proxy-bypass-list=<-loopback>",
            ],
        )
        yield chromium
        chromium.close()


class Pages:
    """A JavaScript-less browsing context plus an axe checker and screenshots."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(java_script_enabled=False)
        self.page = self.context.new_page()
        self.checker = browser.new_context().new_page()
        self.checked: dict[str, list[dict[str, Any]]] = {}

    def look(self, name: str) -> None:
        """Screenshot (desktop and phone) and axe-check the current page."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"pages-{name}.png"), full_page=True)
        self.checker.set_viewport_size(PHONE)
        self.checker.set_content(self.page.content())
        self.checker.screenshot(path=str(ARTIFACTS / f"pages-{name}-phone.png"), full_page=True)
        # No horizontal scrolling at a phone's width: long values wrap.
        width = self.checker.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{name}: {width}px wide on a phone"
        self.checker.add_script_tag(path=str(AXE))
        result = self.checker.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        )
        serious = [
            {"id": v["id"], "impact": v["impact"], "nodes": [n["html"] for n in v["nodes"]][:3]}
            for v in result
            if v["impact"] in ("serious", "critical")
        ]
        self.checked[name] = serious

    def sign_in(self, username: str) -> None:
        self.page.fill("#username", username)
        self.page.fill("#password", PASSWORD)
        self.page.click("button[type=submit]")

    def tab_to(self, element_id: str, limit: int = 20) -> None:
        """Press Tab until ``#element_id`` has the focus (keyboard-only use)."""
        for _ in range(limit):
            self.page.keyboard.press("Tab")
            if self.page.evaluate("document.activeElement && document.activeElement.id") == (
                element_id
            ):
                return
        raise AssertionError(f"#{element_id} cannot be reached with the keyboard")


def test_every_page_works_without_javascript_and_passes_axe(browser: Any) -> None:
    pages = Pages(browser)
    page = pages.page
    page.goto("http://app.localhost/")
    page.wait_for_selector("#password")
    pages.look("01-idp-sign-in")
    pages.sign_in("alice")
    page.wait_for_url("http://app.localhost/")

    page.goto("http://app.localhost/.pomerium/")
    assert page.inner_text("#email") == "alice@example.com"
    assert page.inner_text("#groups") == "staff"
    pages.look("02-session")

    page.goto("http://verify.localhost/")
    assert "Identity verified" in page.inner_text("#status")
    pages.look("03-verify")

    page.goto("http://app.localhost/.pomerium/routes")
    names = page.locator("#routes .name").all_inner_texts()
    assert names == ["app", "verify"]  # payroll is closed to alice
    pages.look("03b-routes-portal")

    response = page.goto("http://payroll.localhost/salaries")
    assert response is not None and response.status == 403
    assert page.inner_text("#user") == "alice@example.com"
    assert page.inner_text("#route") == "payroll"
    pages.look("04-forbidden")

    response = page.goto("http://nowhere.localhost/")
    assert response is not None and response.status == 404
    assert "nowhere.localhost" in page.inner_text("#message")
    pages.look("05-not-found")

    response = page.goto("http://app.localhost/a;jsessionid=1")
    assert response is not None and response.status == 400
    assert "path parameter" in page.inner_text("#message")
    pages.look("06-bad-path")

    # Sign out with the keyboard alone: Tab to the button, Enter.
    page.goto("http://app.localhost/.pomerium/sign_out")
    pages.look("07-sign-out-confirm")
    pages.tab_to("sign-out")
    page.keyboard.press("Enter")
    page.wait_for_selector("#sign-in-again")
    assert page.url.startswith("http://authenticate.localhost/.pomerium/signed_out")
    pages.look("08-signed-out")
    page.click("#sign-in-again")
    page.wait_for_selector("#password")  # signed out everywhere: the IdP asks again

    failing = {name: v for name, v in pages.checked.items() if v}
    assert not failing, json.dumps(failing, indent=2)
    assert len(pages.checked) == 9


def test_sign_in_as_someone_else_from_a_403(browser: Any) -> None:
    pages = Pages(browser)
    page = pages.page
    page.goto("http://payroll.localhost/")
    page.wait_for_selector("#password")
    pages.sign_in("alice")
    page.wait_for_selector("#switch-account")
    page.click("#switch-account")
    page.wait_for_selector("#password")  # straight to the IdP, which asks who you are
    pages.sign_in("bob")
    page.wait_for_selector("#user")
    assert page.inner_text("#user") == "bob@example.com"
    pages.look("09-forbidden-after-switch")
    assert not pages.checked["09-forbidden-after-switch"]
