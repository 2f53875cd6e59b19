"""Shared fixtures for the red-team suite: one real gatehouse, a hostile-capable IdP, recorders.

The attacker is a client on the network (raw sockets, forged headers and cookies) or the
identity provider itself; gatehouse is a black box started with ``gatehouse run``. Every
case asserts what the upstream actually received (:class:`support.upstream.Upstream`
records each request), not only the status.

:func:`stack` (session scope, shared by every module) is one gatehouse process with these
hosts, all behind the ``app`` recording upstream unless noted:

========================  ========================================================
``app.localhost``         alice only; identity headers (assertion + claim email)
``other.localhost``       alice only; identity headers (a second host for replay tests)
``denied.localhost``      bob only
``pub.localhost``         public (no sign-in), no identity headers
``only.localhost``        public, but only ``/public`` and ``/public/...``
``nows.localhost``        public, ``allow_websockets`` off
``ws.localhost``          public, ``allow_websockets``, the WebSocket echo server
``wsonly.localhost``      ``allow_websockets``, only ``/public...``, the ``tunnel`` upstream
``wsauth.localhost``      alice only, ``allow_websockets``, the WebSocket echo server
``port.localhost:8080``   alice only, a ``from`` with an explicit port
``down.localhost``        public, an upstream port nobody listens on (502)
========================  ========================================================

Helpers: :func:`sign_in` (a :class:`support.browser.Browser` signed in as the IdP's
current user), :func:`raw` (send bytes, parse the first response), :func:`jwks_keys`.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from support.browser import Browser
from support.client import RawResponse, parse_response, send_raw
from support.gatehouse import GatehouseProcess
from support.loop import LoopThread
from support.upstream import RecordedRequest, Respond, Upstream, WebSocketEcho, closed_port

from .idp import CLIENT_ID, CLIENT_SECRET, HostileIdp

AUTH = "http://authenticate.localhost"
ALICE = {"or": [{"email": {"is": "alice@example.com"}}]}
ONLY_PUBLIC = {"or": [{"http_path": {"is": "/public"}}, {"http_path": {"starts_with": "/public/"}}]}


def secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class Stack:
    gh: GatehouseProcess
    idp: HostileIdp
    app: Upstream
    tunnel: Upstream
    ws: WebSocketEcho
    shared_secret: str

    @property
    def port(self) -> int:
        return self.gh.port

    def seen(self) -> list[RecordedRequest]:
        """Every request any HTTP recording upstream received since the last reset."""
        return [*self.app.requests, *self.tunnel.requests]


def sso_config(idp: HostileIdp, routes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A gatehouse config signing in through ``idp``."""
    return {
        "authenticate_service_url": AUTH,
        "idp_provider": "oidc",
        "idp_provider_url": idp.issuer,
        "idp_client_id": CLIENT_ID,
        "idp_client_secret": CLIENT_SECRET,
        "idp_scopes": ["openid", "profile", "email"],
        "shared_secret": secret(),
        "cookie_secret": secret(),
        "databroker_storage_type": "memory",
        "routes": routes,
        **extra,
    }


def stack_routes(app: Upstream, tunnel: Upstream, ws: WebSocketEcho) -> list[dict[str, Any]]:
    identity = {"pass_identity_headers": True}
    return [
        {"from": "http://app.localhost", "to": app.url, "policy": [{"allow": ALICE}], **identity},
        {"from": "http://other.localhost", "to": app.url, "policy": [{"allow": ALICE}], **identity},
        {
            "from": "http://denied.localhost",
            "to": app.url,
            "policy": [{"allow": {"or": [{"email": {"is": "bob@example.com"}}]}}],
        },
        {
            "from": "http://pub.localhost",
            "to": app.url,
            "allow_public_unauthenticated_access": True,
        },
        {"from": "http://only.localhost", "to": app.url, "policy": [{"allow": ONLY_PUBLIC}]},
        {
            "from": "http://nows.localhost",
            "to": app.url,
            "allow_public_unauthenticated_access": True,
        },
        {
            "from": "http://ws.localhost",
            "to": ws.url,
            "allow_websockets": True,
            "allow_public_unauthenticated_access": True,
        },
        {
            "from": "http://wsonly.localhost",
            "to": tunnel.url,
            "allow_websockets": True,
            "policy": [{"allow": ONLY_PUBLIC}],
        },
        {
            "from": "http://wsauth.localhost",
            "to": ws.url,
            "allow_websockets": True,
            "policy": [{"allow": ALICE}],
        },
        {"from": "http://port.localhost:8080", "to": app.url, "policy": [{"allow": ALICE}]},
        {
            "from": "http://down.localhost",
            "to": f"http://127.0.0.1:{closed_port()}",
            "allow_public_unauthenticated_access": True,
        },
    ]


@pytest.fixture(scope="session")
def stack(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    idp = HostileIdp().start()
    app = Upstream(loop_thread, "app")
    tunnel = Upstream(loop_thread, "tunnel")
    ws = WebSocketEcho(loop_thread)
    config = sso_config(
        idp,
        stack_routes(app, tunnel, ws),
        jwt_claims_headers={"X-Pomerium-Claim-Email": "email"},
        timeout_request_head="1s",
        websocket_reauthorize_interval="60s",
        max_request_body_bytes=4 * 1024 * 1024,
        # HTTP/2 by prior knowledge as well, for test_h2_parity (HTTP/1.1 is unchanged).
        codec_type="auto",
    )
    gh = GatehouseProcess(config, tmp_path_factory.mktemp("redteam"))
    try:
        gh.start()
        yield Stack(gh, idp, app, tunnel, ws, config["shared_secret"])
    finally:
        code = gh.stop()
        for up in (app, tunnel):
            up.close()
        ws.close()
        idp.stop()
        assert code == 0, gh.stderr_text()


@pytest.fixture
def fresh(stack: Stack) -> Iterator[Stack]:
    """The shared stack with its recorders cleared, the IdP honest, default answers;
    afterwards gatehouse must still answer ``/ping`` (no attack may take it down)."""
    for up in (stack.app, stack.tunnel):
        up.reset()
        up.respond(
            Respond(body=f"hello from {up.name}".encode(), headers=[("X-Upstream", up.name)])
        )
    stack.ws.paths.clear()
    stack.ws.request_headers.clear()
    stack.idp.reset()
    yield stack
    stack.idp.reset()
    assert httpx.get(f"http://127.0.0.1:{stack.port}/ping", timeout=5).status_code == 200


def sign_in(port: int, url: str = "http://app.localhost/") -> Browser:
    """A browser signed in (as the IdP's current user) that has landed on ``url``."""
    browser = Browser(port)
    final = browser.follow(url)
    assert final.status_code == 200, (final.status_code, final.text[:300])
    return browser


@pytest.fixture
def alice(fresh: Stack) -> Browser:
    """A browser signed in as alice on ``app.localhost`` (recorders cleared afterwards)."""
    browser = sign_in(fresh.port)
    fresh.app.reset()
    return browser


def cookie_of(browser: Browser, host: str = "app.localhost") -> str:
    return browser.cookies[host]["_gatehouse"]


def raw(port: int, data: bytes, timeout: float = 5.0) -> tuple[RawResponse | None, bytes]:
    """Send ``data`` on a new connection; the first response (``None`` if none) and all bytes."""
    out = send_raw(port, data, timeout)
    return (parse_response(out) if out.startswith(b"HTTP/") else None), out


def statuses(data: bytes) -> list[int]:
    """Every response status line in ``data`` (pipelined responses)."""
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", data)]


def jwks_keys(port: int, host: str = "app.localhost") -> jwt.PyJWKSet:
    response = httpx.get(
        f"http://127.0.0.1:{port}/.well-known/pomerium/jwks.json",
        headers={"Host": host},
        timeout=5,
    )
    assert response.status_code == 200
    return jwt.PyJWKSet.from_dict(response.json())


def verify_assertion(port: int, token: str, host: str = "app.localhost") -> dict[str, Any]:
    """Verify one of gatehouse's assertions with PyJWT (ES256 only, pinned aud/iss)."""
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks_keys(port, host).keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["ES256"], audience=host, issuer=host
    )
    return claims


Check = Callable[[RecordedRequest], bool]


#: Where a command-line tool would listen for the programmatic login's result (nobody does).
CLI_CALLBACK = "http://127.0.0.1:9/cb"


def programmatic_token(browser: Browser, host: str = "app.localhost") -> str:
    """A programmatic-login token (``Authorization: Pomerium <token>``) for ``browser``'s user."""
    from urllib.parse import parse_qs, quote, urlsplit

    start = browser.get(
        f"http://{host}/.pomerium/api/v1/login?pomerium_redirect_uri={quote(CLI_CALLBACK, safe='')}"
    )
    assert start.status_code == 200, start.text
    final = browser.follow(start.text.strip(), stop=lambda u: u.startswith(CLI_CALLBACK))
    location = final.headers["location"]
    assert location.startswith(CLI_CALLBACK), location
    return parse_qs(urlsplit(location).query)["pomerium_jwt"][0]
