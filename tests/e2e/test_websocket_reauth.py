"""WebSocket re-authorization end to end: a tunnel closes once its session or policy ends.

gatehouse runs with ``websocket_reauthorize_interval: 1s`` in front of a ``websockets`` echo
server (:class:`support.upstream.WebSocketEcho`). The client is the ``websockets`` sync
client on a socket connected to gatehouse's port, with the ``Host`` of the route (from the
URI) and the session cookie from a :class:`support.browser.Browser` sign-in. Every wait is
bounded.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import yaml
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from support import wait_until
from support.browser import Browser
from support.gatehouse import GatehouseProcess
from support.upstream import WebSocketEcho

APP = "http://app.localhost"
ALICE = [{"allow": {"or": [{"email": {"is": "alice@example.com"}}]}}]
BOB_ONLY = [{"allow": {"or": [{"email": {"is": "bob@example.com"}}]}}]


def _routes(
    ws_echo: WebSocketEcho, policy: list[dict[str, Any]], **extra: Any
) -> list[dict[str, Any]]:
    return [
        {"from": APP, "to": ws_echo.url, "allow_websockets": True, "policy": policy, **extra},
        {"from": "http://nows.localhost", "to": ws_echo.url, "policy": ALICE},
    ]


def _start(
    start_sso: Callable[..., GatehouseProcess],
    ws_echo: WebSocketEcho,
    policy: list[dict[str, Any]] = ALICE,
) -> tuple[GatehouseProcess, Browser, str]:
    gh = start_sso(_routes(ws_echo, policy), websocket_reauthorize_interval="1s")
    browser = Browser(gh.port)
    # The echo server answers a plain GET with 426; the sign-in is what matters here.
    browser.follow(f"{APP}/")
    cookie = browser.cookies["app.localhost"]["_gatehouse"]
    return gh, browser, cookie


def _open(
    gh: GatehouseProcess, cookie: str | None, host: str = "app.localhost", path: str = "/ws"
) -> ClientConnection:
    """A WebSocket through gatehouse; use as a context manager (closes the socket)."""
    sock = socket.create_connection(("127.0.0.1", gh.port), timeout=5)
    headers = {"Cookie": f"_gatehouse={cookie}"} if cookie else {}
    try:
        return connect(
            f"ws://{host}{path}",
            sock=sock,
            additional_headers=headers,
            open_timeout=5,
            close_timeout=2,
        ).__enter__()
    except BaseException:
        sock.close()
        raise


def _echo(ws: ClientConnection, text: str) -> None:
    ws.send(text)
    assert ws.recv(timeout=5) == text


def _closed_within(ws: ClientConnection, timeout: float) -> float | None:
    """Seconds until gatehouse closed the socket, or None if it stayed open for ``timeout``."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            ws.recv(timeout=left)
        except TimeoutError:
            return None
        except ConnectionClosed:
            return time.monotonic() - start


def _config(gh: GatehouseProcess) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(gh.config_path.read_text())
    return data


def _reload(gh: GatehouseProcess, config: dict[str, Any]) -> None:
    before = sum(1 for r in gh.logs() if r.get("message") == "config reloaded")
    gh.write_config(config)
    wait_until(
        lambda: sum(1 for r in gh.logs() if r.get("message") == "config reloaded") > before,
        6.0,
        what="config reloaded",
    )


def test_echo_through_gatehouse_then_sign_out_closes_the_socket(start_sso, ws_echo) -> None:  # type: ignore[no-untyped-def]
    gh, browser, cookie = _start(start_sso, ws_echo)
    ws = _open(gh, cookie)
    try:
        _echo(ws, "hello")
        assert ws_echo.paths[-1] == "/ws"
        page = browser.get(f"{APP}/.pomerium/")
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        out = browser.request("POST", f"{APP}/.pomerium/sign_out", data={"csrf": csrf})
        assert out.status_code == 303
        took = _closed_within(ws, 3.5)
        assert took is not None, "the WebSocket stayed open after sign-out"
        # The upstream side of the tunnel is closed too.
        wait_until(lambda: ws_echo.closed >= 1, 3.0, what="the upstream WebSocket to close")
    finally:
        ws.close()
    # A new upgrade with the dead cookie is refused (no 101).
    with pytest.raises(InvalidStatus) as info:
        _open(gh, cookie)
    assert info.value.response.status_code == 401
    closing = gh.find_log(lambda r: r.get("message") == "closing tunnel: no longer authorized")
    assert closing is not None and closing.get("user") == "alice@example.com"
    entry = gh.wait_access(lambda r: r.get("path") == "/ws" and r.get("status") == 101)
    assert entry["decision"] == "revoked" and entry["user"] == "alice@example.com"


def test_policy_reload_that_drops_the_user_closes_the_socket(start_sso, ws_echo) -> None:  # type: ignore[no-untyped-def]
    gh, _, cookie = _start(start_sso, ws_echo)
    ws = _open(gh, cookie)
    try:
        _echo(ws, "before")
        config = _config(gh)
        config["routes"] = _routes(ws_echo, BOB_ONLY)
        start = time.monotonic()
        gh.write_config(config)
        took = _closed_within(ws, 4.5)
        assert took is not None, "the WebSocket stayed open after the policy stopped allowing alice"
        assert time.monotonic() - start < 4.5
    finally:
        ws.close()
    # New requests get the new policy at once: 403 for alice.
    with pytest.raises(InvalidStatus) as info:
        _open(gh, cookie)
    assert info.value.response.status_code == 403


def test_reload_that_turns_off_websockets_closes_the_socket(start_sso, ws_echo) -> None:  # type: ignore[no-untyped-def]
    gh, _, cookie = _start(start_sso, ws_echo)
    ws = _open(gh, cookie)
    try:
        _echo(ws, "before")
        config = _config(gh)
        config["routes"] = _routes(ws_echo, ALICE, allow_websockets=False)
        gh.write_config(config)
        assert _closed_within(ws, 4.5) is not None
    finally:
        ws.close()


def test_still_allowed_socket_stays_open_across_intervals_and_reloads(start_sso, ws_echo) -> None:  # type: ignore[no-untyped-def]
    gh, _, cookie = _start(start_sso, ws_echo)
    ws = _open(gh, cookie)
    try:
        _echo(ws, "0")
        # A reload that keeps alice allowed (another route added) must not close the socket.
        config = _config(gh)
        config["routes"] = [
            *_routes(ws_echo, ALICE),
            {"from": "http://extra.localhost", "to": ws_echo.url, "policy": ALICE},
        ]
        _reload(gh, config)
        deadline = time.monotonic() + 4.0  # four re-authorization intervals
        n = 1
        while time.monotonic() < deadline:
            _echo(ws, str(n))
            n += 1
            assert _closed_within(ws, 0.3) is None, "an allowed WebSocket was closed"
        _echo(ws, "still here")
        # And an idle (but allowed) socket survives the re-checks too.
        assert _closed_within(ws, 2.5) is None
        _echo(ws, "after idle")
    finally:
        ws.close()
    assert gh.find_log(lambda r: r.get("message") == "closing tunnel: no longer authorized") is None


def test_upgrades_need_a_session_and_allow_websockets(start_sso, ws_echo) -> None:  # type: ignore[no-untyped-def]
    gh, browser, cookie = _start(start_sso, ws_echo)
    with pytest.raises(InvalidStatus) as info:
        _open(gh, None)
    assert info.value.response.status_code == 401
    browser.follow("http://nows.localhost/")
    nows_cookie = browser.cookies["nows.localhost"]["_gatehouse"]
    with pytest.raises(InvalidStatus) as info:
        _open(gh, nows_cookie, host="nows.localhost")
    assert 400 <= info.value.response.status_code < 500
    # Only the earlier plain GETs (sign-in landings) reached the echo server; no WebSocket opened.
    assert ws_echo.paths == []
    r = httpx.get(
        f"http://127.0.0.1:{gh.port}/ws",
        headers={"Host": "app.localhost", "Cookie": f"_gatehouse={cookie}"},
    )
    assert r.status_code == 426  # the echo server's answer to a plain GET: the route itself works
