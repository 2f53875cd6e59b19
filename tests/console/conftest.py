"""A real gatehouse with the built-in IdP and the console on, and signed-in HTTP clients.

The config file is written by hand (with comments) so that tests can check that the
console's writes keep them. ``alice`` is in the ``admins`` group, which
``console_policy`` allows; ``bob`` is signed in but not allowed.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from argon2 import PasswordHasher

from idp.helpers import form_fields
from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.upstream import Upstream

CONSOLE = "http://console.localhost"
APP = "http://app.localhost"
AUTH = "http://authenticate.localhost"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}
# Cheap argon2 parameters: the format is the one gatehouse checks.
_FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')
_DIGEST = re.compile(r'name="digest" value="([0-9a-f]*)"')


def _secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def config_text(workdir: Path, upstream_url: str, *, workers: int = 1) -> str:
    """The console test config, comments included."""
    return f"""\
# gatehouse config for the console tests
address: 127.0.0.1:0
insecure_server: true
workers: {workers}
shutdown_timeout: 5s
data_dir: {workdir / "data"}
shared_secret: {_secret()}
cookie_secret: {_secret()}
databroker_storage_type: sqlite
authenticate_service_url: {AUTH}
idp_provider: builtin
idp_users:
  - username: alice
    password_hash: '{_FAST.hash(PASSWORDS["alice"])}'
    email: alice@example.com
    groups: [admins]
  - username: bob
    password_hash: '{_FAST.hash(PASSWORDS["bob"])}'
    email: bob@example.com
console_url: {CONSOLE}
console_policy:
  - allow:
      or:
        - groups: {{has: admins}}
routes:
  # the application behind single sign-on
  - name: app
    from: {APP}
    to: {upstream_url}   # the test upstream
    policy:
      - allow:
          or:
            - email: {{is: alice@example.com}}
            - email: {{is: bob@example.com}}
  - name: public
    from: http://public.localhost
    to: {upstream_url}
    allow_public_unauthenticated_access: true
"""


class ConsoleUser:
    """A signed-in browser stand-in for one user, with console helpers."""

    def __init__(self, gh: GatehouseProcess, username: str) -> None:
        self.gh = gh
        self.browser = Browser(gh.port)
        self.username = username
        self.sign_in()

    def sign_in(self) -> None:
        page = self.browser.follow(CONSOLE + "/")
        assert page.status_code == 200, page.text
        action, fields = form_fields(page.text)
        url = urljoin(self.browser.last_url, action)
        fields.update(username=self.username, password=PASSWORDS[self.username])
        done = self.browser.follow(url, method="POST", data=fields)
        assert self.browser.last_url.startswith(CONSOLE), self.browser.last_url
        self.landing = done

    def get(self, path: str) -> httpx.Response:
        return self.browser.get(CONSOLE + path)

    def post(
        self, path: str, data: dict[str, str], *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        sent = {"Origin": CONSOLE, "Sec-Fetch-Site": "same-origin", **(headers or {})}
        return self.browser.request("POST", CONSOLE + path, data=data, headers=sent)

    def form(self, path: str) -> dict[str, str]:
        """The editor's fields as the page shows them (what a browser would send)."""
        page = self.get(path)
        assert page.status_code == 200, page.text
        return editor_fields(page.text)


def editor_fields(page: str) -> dict[str, str]:
    """Every named input, checked box, selected option and textarea of the editor form."""
    start = page.index('id="editor"')
    text = page[start : page.index("</form>", start)]
    out: dict[str, str] = {}
    for tag in re.findall(r"<input [^>]*>", text):
        name = re.search(r'name="([^"]+)"', tag)
        if name is None:
            continue
        kind = re.search(r'type="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if kind and kind.group(1) in ("checkbox", "radio") and " checked" not in tag:
            continue
        out[html.unescape(name.group(1))] = html.unescape(value.group(1)) if value else ""
    for name, body in re.findall(
        r'<textarea [^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', text, re.S
    ):
        out[name] = html.unescape(body)
    for name, body in re.findall(r'<select [^>]*name="([^"]+)"[^>]*>(.*?)</select>', text, re.S):
        selected = re.search(r'<option value="([^"]*)" selected>', body)
        out[name] = html.unescape(selected.group(1)) if selected else ""
    return out


def csrf_of(page: str) -> str:
    match = _CSRF.search(page)
    assert match, "no CSRF token on the page"
    return match.group(1)


def digest_of(page: str) -> str:
    match = _DIGEST.search(page)
    assert match, "no digest on the page"
    return match.group(1)


@pytest.fixture
def app_upstream(make_upstream: Callable[..., Upstream]) -> Upstream:
    return make_upstream("app")


@pytest.fixture
def console_gh(tmp_path: Path, app_upstream: Upstream) -> Iterator[GatehouseProcess]:
    workdir = tmp_path / "gh"
    workdir.mkdir()
    gh = GatehouseProcess(config_text(workdir, app_upstream.url), workdir)
    gh.start()
    yield gh
    assert gh.stop() == 0, gh.stderr_text()


@pytest.fixture
def alice(console_gh: GatehouseProcess) -> ConsoleUser:
    return ConsoleUser(console_gh, "alice")


@pytest.fixture
def bob(console_gh: GatehouseProcess) -> ConsoleUser:
    return ConsoleUser(console_gh, "bob")


def audit_lines(gh: GatehouseProcess) -> list[dict[str, Any]]:
    import json

    path = gh.workdir / "data" / "console-audit.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
