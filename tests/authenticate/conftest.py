"""Fixtures: a real OpenID provider (panva's ``oidc-provider`` on Node) on loopback.

The provider is started from ``oidc_provider/server.js`` (installed with ``npm install``
on first use), listens on port 0 and prints the port; tests drive the browser side of
the code flow with httpx, signing in the user named by ``login_hint``.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gatehouse.authenticate.discovery import Discovery
from gatehouse.authenticate.oidc import ClientConfig
from gatehouse.authenticate.providers import quirks_for
from gatehouse.authenticate.relying_party import RelyingParty, new_http_client

PROVIDER_DIR = Path(__file__).parent / "oidc_provider"
CLIENT_ID = "gatehouse"
CLIENT_SECRET = "gatehouse-test-secret-0123456789abcdef-0123456789"
REDIRECT_URI = "https://authenticate.example.com/oauth2/callback"
POST_LOGOUT_URI = "https://authenticate.example.com/.pomerium/signed_out"
STARTUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ProviderProcess:
    issuer: str
    port: int


def _ensure_installed() -> None:
    if (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed")
    # ``npm ci`` installs exactly what package-lock.json pins.
    command = "ci" if (PROVIDER_DIR / "package-lock.json").exists() else "install"
    subprocess.run(
        [npm, command, "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PROVIDER_DIR,
        check=True,
        timeout=300,
    )


@contextmanager
def run_provider(**env: str) -> Iterator[ProviderProcess]:
    """Start the provider with extra environment; stop it on exit."""
    _ensure_installed()
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    full_env = {
        **os.environ,
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": CLIENT_SECRET,
        "REDIRECT_URIS": REDIRECT_URI,
        "POST_LOGOUT_REDIRECT_URIS": POST_LOGOUT_URI,
        "NODE_ENV": "test",
        **env,
    }
    proc = subprocess.Popen(
        [node, "server.js"],
        cwd=PROVIDER_DIR,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = _read_port(proc)
        issuer = f"http://127.0.0.1:{port}"
        _wait_ready(issuer)
        yield ProviderProcess(issuer, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _read_port(proc: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    if proc.stdout is None:
        raise RuntimeError("no stdout")
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("PORT "):
                return int(line.split()[1])
            if not line and proc.poll() is not None:
                break
    raise RuntimeError(f"oidc-provider did not start (exit code {proc.poll()})")


def _wait_ready(issuer: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if (
                httpx.get(issuer + "/.well-known/openid-configuration", timeout=2).status_code
                == 200
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)  # polling readiness, not waiting a fixed time
    raise RuntimeError("oidc-provider never answered discovery")


@pytest.fixture(scope="session")
def provider() -> Iterator[ProviderProcess]:
    with run_provider() as p:
        yield p


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    client = new_http_client()
    async with client:
        yield client


def make_rp(
    issuer: str, http: httpx.AsyncClient, *, provider: str = "oidc", scopes: tuple[str, ...] = ()
) -> RelyingParty:
    config = ClientConfig(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT_URI,
        scopes=scopes or ("openid", "profile", "email", "groups", "offline_access"),
        request_params={"login_hint": "alice", "prompt": "consent"},
        quirks=quirks_for(provider),
    )
    return RelyingParty(config, Discovery(issuer, quirks_for(provider), http), http)


@pytest.fixture
def rp(provider: ProviderProcess, http: httpx.AsyncClient) -> RelyingParty:
    return make_rp(provider.issuer, http)


async def browser_login(authorization_url: str, *, login_hint: str | None = None) -> str:
    """Act as the browser: follow the IdP's redirects until it sends us to REDIRECT_URI.

    Returns that callback URL (with ``code``, ``state``, ``iss``).
    """
    url = authorization_url
    if login_hint is not None:
        url = str(httpx.URL(url).copy_set_param("login_hint", login_hint))
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as browser:
        for _ in range(20):
            response = await browser.get(url)
            if response.status_code not in (302, 303):
                raise AssertionError(f"IdP answered {response.status_code}: {response.text[:300]}")
            url = str(httpx.URL(url).join(response.headers["location"]))
            if url.startswith(REDIRECT_URI):
                return url
    raise AssertionError("too many redirects at the IdP")
