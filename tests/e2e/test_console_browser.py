"""The console in a real headless Chromium: sign in as an admin, open the app route, Headers
tab, turn on Pass Identity Headers, apply — the upstream now receives a verifiable
``X-Pomerium-Jwt-Assertion``; turn it off — the header is gone. No restart in between.

gatehouse starts on port 0; the config is then rewritten with that port in every URL (the
browser needs it) and hot-reloaded. Screenshots go to ``artifacts/screenshots/console-*``.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest

from console.conftest import PASSWORDS, config_text
from support import wait_until
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

from .test_browser import CHROMIUM, shot

pytestmark = pytest.mark.browser


@pytest.fixture
def gh(tmp_path: Path, make_upstream: Callable[..., Upstream]) -> Iterator[GatehouseProcess]:
    upstream = make_upstream("app")
    workdir = tmp_path / "gh"
    workdir.mkdir()
    proc = GatehouseProcess(config_text(workdir, upstream.url), workdir).start()
    proc.upstream = upstream  # type: ignore[attr-defined]
    # Every URL with the bound port, then a hot reload (the listener stays).
    text = re.sub(r"(http://[a-z]+\.localhost)", rf"\1:{proc.port}", proc.config_path.read_text())
    proc.config_path.write_text(text)
    # SIGHUP: reloaded now rather than at the next poll.
    os.kill(proc.pid, signal.SIGHUP)
    try:
        proc.wait_log(lambda r: r.get("message") == "config reloaded", timeout=10)
    except AssertionError:
        proc.stop()
        raise AssertionError(proc.stderr_text()) from None
    yield proc
    assert proc.stop() == 0, proc.stderr_text()


@pytest.fixture
def page():  # type: ignore[no-untyped-def]
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (./scripts/test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"],
        )
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        yield context.new_page()
        context.close()
        browser.close()


def _verified_assertion(gh: GatehouseProcess, token: str, host: str) -> dict[str, object]:
    jwks = jwt.PyJWKClient(
        f"http://127.0.0.1:{gh.port}/.well-known/pomerium/jwks.json", headers={"Host": host}
    )
    key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["ES256"], audience="app.localhost")


def _set_identity_headers(page, console: str, on: bool, name: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{console}/routes")
    page.click("a.route-name >> text=app")
    page.wait_for_selector("#editor")
    page.click("#tab-label-headers")
    assert page.is_visible("#f-pass_identity_headers")
    assert not page.is_visible("#f-from")  # the General tab is hidden now
    page.set_checked("#f-pass_identity_headers", on)
    shot(page, f"{name}-headers-tab")
    page.click("#apply")
    page.wait_for_selector("#applied")
    shot(page, f"{name}-applied")


def test_admin_turns_identity_headers_on_and_off_in_chromium(gh: GatehouseProcess, page) -> None:  # type: ignore[no-untyped-def]
    upstream: Upstream = gh.upstream  # type: ignore[attr-defined]
    console = f"http://console.localhost:{gh.port}"
    app = f"http://app.localhost:{gh.port}"

    page.goto(console + "/")
    page.wait_for_selector("#password")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORDS["alice"])
    page.click("button[type=submit]")
    page.wait_for_selector("#sessions")
    assert page.inner_text("#who") == "alice@example.com"
    shot(page, "console-01-overview")

    page.goto(console + "/routes")
    shot(page, "console-02-routes")
    page.goto(app + "/before")
    assert upstream.requests[-1].header("x-pomerium-jwt-assertion") is None

    _set_identity_headers(page, console, True, "console-03")
    digest = re.search(r"now ([0-9a-f]{12})", page.inner_text("#applied"))
    assert digest and page.inner_text("#running-digest") == digest.group(1)
    page.goto(app + "/with-identity")
    seen = wait_until(
        lambda: next((r for r in upstream.requests if r.target == "/with-identity"), None)
    )
    token = seen.header("x-pomerium-jwt-assertion")
    assert token
    assert _verified_assertion(gh, token, "app.localhost")["email"] == "alice@example.com"

    page.goto(console + "/routes/0?tab=policy")
    page.fill("#dr_email", "eve@example.com")
    page.click("#dry-run-button")
    page.wait_for_selector("#dry-outcome")
    assert page.inner_text("#dry-outcome") == "deny"
    # With the console's script the dry run answers as you type, without the button.
    page.fill("#dr_email", "alice@example.com")
    page.wait_for_selector("#dry-outcome.ok")  # class ok: allow (polled; the CSP forbids eval)
    page.fill("#dr_email", "eve@example.com")
    page.wait_for_selector("#dry-outcome.bad")
    assert page.inner_text("#dry-outcome") == "deny"
    shot(page, "console-04-policy-dry-run")

    _set_identity_headers(page, console, False, "console-05")
    page.goto(app + "/without-identity")
    seen = wait_until(
        lambda: next((r for r in upstream.requests if r.target == "/without-identity"), None)
    )
    assert seen.header("x-pomerium-jwt-assertion") is None

    # A phone-sized screen: the editor still fits (no horizontal scrolling of the page).
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(console + "/routes/0?tab=headers")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    shot(page, "console-06-phone")
