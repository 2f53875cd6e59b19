"""Cross-site WebSocket hijacking is refused (issue 12, item 6).

A browser sends the victim's cookies with a WebSocket opened by any site's page, so
without an ``Origin`` check ``evil.example`` could talk to a signed-in user's app through
gatehouse. ``websocket_origin_check: same-origin`` (the default) lets an upgrade through
only when its ``Origin`` is the route's own (scheme of ``from``, the request's host and
port) or in ``websocket_allowed_origins``; no ``Origin`` (not a browser) passes;
``Origin: null``, a sibling subdomain or any other site gets 403 and one log line.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from support import wait_until
from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.loop import LoopThread
from support.upstream import WebSocketEcho

from .hardening import ALICE, gatehouse, signed_in

APP = "app.localhost"


@pytest.fixture(scope="module")
def ws(loop_thread: LoopThread) -> Iterator[WebSocketEcho]:
    server = WebSocketEcho(loop_thread)
    yield server
    server.close()


@pytest.fixture(scope="module")
def stack(
    ws: WebSocketEcho, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatehouseProcess, Browser]]:
    ws_route = {"to": ws.url, "allow_websockets": True, "policy": ALICE}
    routes = [
        {"from": f"http://{APP}", **ws_route},
        {
            "from": "http://partner.localhost",
            "websocket_allowed_origins": ["https://partner.example.com:8443/"],
            **ws_route,
        },
        {"from": "http://open.localhost", "websocket_origin_check": "off", **ws_route},
    ]
    with gatehouse(tmp_path_factory.mktemp("origin"), routes) as (gh, _):
        browser = signed_in(gh.port, f"http://{APP}/.pomerium/")
        for host in ("partner.localhost", "open.localhost"):
            browser.follow(f"http://{host}/.pomerium/")
        yield gh, browser


def _open(gh: GatehouseProcess, browser: Browser, host: str, origin: str | None) -> str:
    """Open a WebSocket with the user's cookie; ``"open"`` or the refusal status."""
    sock = socket.create_connection(("127.0.0.1", gh.port), timeout=5)
    headers = {"Cookie": f"_gatehouse={browser.cookies[host]['_gatehouse']}"}
    try:
        with connect(
            f"ws://{host}/socket",
            sock=sock,
            origin=origin,
            additional_headers=headers,  # type: ignore[arg-type]
            open_timeout=5,
        ) as conn:
            conn.send("ping")
            assert conn.recv(timeout=5) == "ping"
            return "open"
    except InvalidStatus as exc:
        return str(exc.response.status_code)
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        (f"http://{APP}", "open"),
        ("HTTP://APP.LOCALHOST:80", "open"),
        (None, "open"),
        ("http://evil.example", "403"),
        ("http://evil.app.localhost", "403"),
        ("http://sibling.localhost", "403"),
        (f"https://{APP}", "403"),
        (f"http://{APP}:8080", "403"),
        ("null", "403"),
    ],
)
def test_same_origin_by_default(
    stack: tuple[GatehouseProcess, Browser], ws: WebSocketEcho, origin: str | None, expected: str
) -> None:
    gh, browser = stack
    before = len(ws.paths)
    assert _open(gh, browser, APP, origin) == expected
    assert len(ws.paths) == before + (1 if expected == "open" else 0), "upstream reached?"


def test_refusal_is_logged_once_with_a_page(stack: tuple[GatehouseProcess, Browser]) -> None:
    gh, browser = stack
    import httpx

    r = httpx.get(
        f"http://127.0.0.1:{gh.port}/socket",
        headers={
            "Host": APP,
            "Cookie": f"_gatehouse={browser.cookies[APP]['_gatehouse']}",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
            "Origin": "http://attacker.example",
            "Accept": "text/html",
        },
        timeout=5,
    )
    assert r.status_code == 403
    assert "another site" in r.text
    lines = wait_until(
        lambda: [
            rec
            for rec in gh.logs()
            if rec.get("message") == "upgrade refused: cross-origin"
            and rec.get("origin") == "http://attacker.example"
        ]
    )
    assert len(lines) == 1 and lines[0]["expected"] == f"http://{APP}"


def test_allowed_origins_and_off(stack: tuple[GatehouseProcess, Browser]) -> None:
    gh, browser = stack
    assert _open(gh, browser, "partner.localhost", "https://partner.example.com:8443") == "open"
    assert _open(gh, browser, "partner.localhost", "http://partner.localhost") == "open"
    assert _open(gh, browser, "partner.localhost", "https://partner.example.com") == "403"
    assert _open(gh, browser, "open.localhost", "http://evil.example") == "open"
