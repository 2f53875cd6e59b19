"""The embedded default in a real headless Chromium: sign in, verify, user page, sign out.

Runs ``gatehouse demo`` (the same as ``gatehouse run`` with no config) on a free port with
its own data directory, and drives Debian's ``chromium`` with Playwright. Screenshots of
every step are saved under ``artifacts/screenshots/`` (``GATEHOUSE_ARTIFACTS`` overrides).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from support import wait_until
from support.gatehouse import clean_env

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = (
    Path(os.environ.get("GATEHOUSE_ARTIFACTS", Path(__file__).parents[2] / "artifacts"))
    / "screenshots"
)


class Demo:
    def __init__(self, tmp: Path) -> None:
        env = clean_env({"ADDRESS": "127.0.0.1:0", "DATA_DIR": str(tmp / "data")})
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "gatehouse", "demo"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()  # type: ignore[union-attr]

        def ready() -> tuple[str, str] | None:
            text = "\n".join(self.lines)
            url = re.search(r"open\s+(http://verify\.localhost:\d+)", text)
            pw = re.search(r"password '([^']+)'", text)
            if self.proc.poll() is not None:
                raise AssertionError("demo exited:\n" + text)
            return (url.group(1), pw.group(1)) if url and pw and '"listening"' in text else None

        self.url, self.password = wait_until(ready, 30, what="the demo to start")

    def _pump(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.lines.append(line.rstrip())

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout=20)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    d = Demo(tmp_path)
    yield d
    assert d.stop() == 0


@pytest.fixture
def page():  # type: ignore[no-untyped-def]
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (./scripts/test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context()
        page = context.new_page()
        page.second_context = browser.new_context  # another browser profile, on demand
        yield page
        context.close()
        browser.close()


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page, username: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")


def test_single_sign_on_in_a_browser(demo: Demo, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(demo.url)
    assert "/.gatehouse/idp/" in page.url
    page.wait_for_selector("#password")
    shot(page, "01-sign-in-page")

    sign_in(page, "demo", demo.password)
    page.wait_for_selector("#status")
    shot(page, "02-verify-page")
    assert page.url.rstrip("/") == demo.url
    assert "verified" in page.inner_text("#status") and "not verified" not in page.inner_text(
        "#status"
    )
    assert page.inner_text("#email") == "demo@example.com"

    page.goto(demo.url + "/.pomerium/")
    page.wait_for_selector("#email")
    shot(page, "03-user-page")
    assert page.inner_text("#email") == "demo@example.com"
    assert "admins" in page.inner_text("#groups")

    page.click("#sign-out")
    page.wait_for_load_state()
    shot(page, "04-signed-out")
    assert "signed out" in page.content().lower()

    page.goto(demo.url)
    page.wait_for_selector("#password")
    shot(page, "05-asked-to-sign-in-again")
    assert "/.gatehouse/idp/" in page.url


def test_wrong_password_shows_an_error_and_grants_nothing(demo: Demo, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(demo.url)
    page.wait_for_selector("#password")
    sign_in(page, "demo", "not-the-password")
    page.wait_for_selector("#password")
    shot(page, "06-wrong-password")
    assert "invalid username or password" in page.content().lower()
    assert "/.gatehouse/idp/" in page.url
    cookies = {c["name"] for c in page.context.cookies()}
    assert "_gatehouse" not in cookies
    page.goto(demo.url + "/.pomerium/user")
    assert "/.gatehouse/idp/" in page.url or "sign" in page.content().lower()


def test_an_attackers_sign_in_link_does_not_sign_in_another_browser(demo: Demo, page) -> None:  # type: ignore[no-untyped-def]
    """Login CSRF: the attacker stops before the route host's hand-off and sends the link
    to a victim; the victim's browser (another profile) gets a 400 and no session."""
    page.goto(demo.url)
    page.wait_for_selector("#password")
    sign_in(page, "demo", demo.password)
    page.wait_for_selector("#status")
    # The attacker's next sign-in to the route host, stopped before the hand-off. The two
    # redirects are requested outside Chromium (which would follow them) with the
    # cookies of the attacker's Chromium profile.
    jar = {(c["domain"], c["name"]): c["value"] for c in page.context.cookies()}
    port = urlsplit(demo.url).port
    route_host, auth_host = f"verify.localhost:{port}", f"authenticate.localhost:{port}"

    def hop(url: str, host: str, cookie: str) -> str:
        parts = urlsplit(url)
        r = httpx.get(
            f"http://127.0.0.1:{port}{parts.path}?{parts.query}",
            headers={"Host": host, "Accept": "text/html", "Cookie": cookie},
        )
        assert r.status_code == 302, r.text
        return r.headers["location"]

    binding = jar[("verify.localhost", "_gatehouse_binding")]
    sign_in_url = hop(demo.url + "/?x", route_host, f"_gatehouse_binding={binding}")
    session = jar[("authenticate.localhost", "_gatehouse")]
    captured = [hop(sign_in_url, auth_host, f"_gatehouse={session}")]
    assert "/.pomerium/callback/?" in captured[0]
    victim = page.second_context()
    try:
        tab = victim.new_page()
        response = tab.goto(captured[0])
        assert response is not None and response.status == 400
        shot(tab, "07-hand-off-refused")
        assert "not valid here" in tab.content()
        assert "_gatehouse" not in {c["name"] for c in victim.cookies()}
    finally:
        victim.close()
    # In the browser that started the sign-in, the same link works.
    page.goto(captured[0])
    page.wait_for_selector("#email")
    assert page.inner_text("#email") == "demo@example.com"
