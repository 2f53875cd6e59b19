"""WebSocket and other upgrades: where a connection stops being HTTP that gatehouse reads.

After a ``101`` gatehouse copies bytes both ways without parsing them, so the attacks
aim at getting a tunnel where none should be: an upgrade on a route without
``allow_websockets``, ``Upgrade: h2c`` (an HTTP/2 connection to the upstream that
gatehouse cannot police), an upgrade the upstream *refused* followed by raw requests
(the classic WebSocket smuggling of proxies that tunnel anyway), and cross-site pages
opening sockets with the user's cookie.
"""

from __future__ import annotations

import pytest

from support import wait_until
from support.browser import Browser
from support.client import RawConnection, RawResponse
from support.upstream import Raw, Respond

from .conftest import Stack, cookie_of

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


def _upgrade(
    conn: RawConnection,
    host: str,
    path: str = "/",
    *,
    protocol: str = "websocket",
    extra: list[tuple[str, str]] | None = None,
) -> RawResponse:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        f"Upgrade: {protocol}",
        "Connection: Upgrade" + (", HTTP2-Settings" if protocol == "h2c" else ""),
    ]
    if protocol == "websocket":
        lines += [f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13"]
    else:
        lines.append("HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA")
    lines += [f"{k}: {v}" for k, v in extra or []]
    conn.send(("\r\n".join(lines) + "\r\n\r\n").encode())
    return conn.read_response()


def test_upgrade_on_a_route_without_websockets_is_refused(fresh: Stack) -> None:
    with RawConnection(fresh.port) as conn:
        response = _upgrade(conn, "nows.localhost")
    assert 400 <= response.status < 500
    assert fresh.app.requests == []


def test_h2c_upgrade_on_a_route_without_websockets_is_refused(fresh: Stack) -> None:
    with RawConnection(fresh.port) as conn:
        response = _upgrade(conn, "nows.localhost", protocol="h2c")
    assert response.status != 101
    for seen in fresh.app.requests:
        assert "upgrade" not in seen.header_names()
        assert "http2-settings" not in seen.header_names()


def test_h2c_upgrade_is_never_tunnelled_on_a_websocket_route(fresh: Stack) -> None:
    """issue 12 item 3 (fixed): ``allow_websockets`` allows WebSocket, not any protocol
    the client names."""
    fresh.tunnel.respond(Raw(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", True))
    with RawConnection(fresh.port) as conn:
        response = _upgrade(conn, "wsonly.localhost", "/public/x", protocol="h2c")
    assert response.status != 101
    for seen in fresh.tunnel.requests:
        assert (seen.header("upgrade") or "").lower() != "h2c"


def test_websocket_tunnel_works_on_an_allowed_route(fresh: Stack) -> None:
    """Control: a real WebSocket through ``ws.localhost`` reaches the echo server."""
    with RawConnection(fresh.port) as conn:
        response = _upgrade(conn, "ws.localhost", "/chat")
        assert response.status == 101
    wait_until(lambda: fresh.ws.paths == ["/chat"], 5, what="the upstream to record /chat")


@pytest.mark.parametrize("status", [200, 400, 426])
def test_refused_upgrade_does_not_leave_a_tunnel_for_smuggling(fresh: Stack, status: int) -> None:
    """The upstream refuses the upgrade (e.g. a bad ``Sec-WebSocket-Version``); a request
    the client then writes on the same socket must not reach the upstream unchecked."""
    fresh.tunnel.respond(Respond(status=status, body=b"no"))
    with RawConnection(fresh.port) as conn:
        response = _upgrade(
            conn, "wsonly.localhost", "/public/ws", extra=[("Sec-WebSocket-Version", "1337")]
        )
        assert response.status == status
        conn.send(b"GET /admin HTTP/1.1\r\nHost: wsonly.localhost\r\n\r\n")
        try:
            follow_up = conn.read_response().status
        except ConnectionError:
            follow_up = 0  # closed: nothing more was read
    assert follow_up in (0, 302, 401, 403)
    assert [r.path for r in fresh.tunnel.requests] == ["/public/ws"]
    assert b"/admin" not in fresh.tunnel.raw_bytes


def test_bytes_inside_a_tunnel_go_only_to_the_upstream_that_accepted_it(fresh: Stack) -> None:
    """After a genuine 101 the stream belongs to that upstream (by design, as every
    proxy): a request written inside it is not routed by gatehouse to any other route,
    so ``only.localhost``'s upstream never sees it. The tunnel's upstream must treat the
    stream as WebSocket frames, never parse HTTP from it."""
    fresh.tunnel.respond(Raw(SWITCH, keep=True))
    with RawConnection(fresh.port) as conn:
        assert _upgrade(conn, "wsonly.localhost", "/public/ws").status == 101
        conn.send(b"GET /admin HTTP/1.1\r\nHost: only.localhost\r\n\r\n")
        conn.sock.settimeout(1)
        assert conn.sock.recv(100) == b"" or True  # the recorder answers nothing more
    assert fresh.app.requests == []
    assert b"GET /admin" in fresh.tunnel.raw_bytes


def _sign_in_on_wsauth(browser: Browser) -> None:
    # The echo server answers a plain GET with 426: the sign-in is done once the cookie is.
    browser.follow("http://wsauth.localhost/")
    assert "_gatehouse" in browser.cookies.get("wsauth.localhost", {})


def test_upgrade_on_a_protected_route_needs_a_session(fresh: Stack) -> None:
    with RawConnection(fresh.port) as conn:
        response = _upgrade(conn, "wsauth.localhost", "/chat")
    assert response.status == 401
    assert fresh.ws.paths == []


def test_upgrade_with_a_session_and_no_origin_is_allowed(fresh: Stack, alice: Browser) -> None:
    """Non-browser clients send no ``Origin``: allowed (the planned same-origin default
    keeps this)."""
    _sign_in_on_wsauth(alice)
    with RawConnection(fresh.port) as conn:
        cookie = [("Cookie", f"_gatehouse={cookie_of(alice, 'wsauth.localhost')}")]
        assert _upgrade(conn, "wsauth.localhost", "/chat", extra=cookie).status == 101
    # The echo server records the path in its handler, after the 101 has gone out.
    wait_until(lambda: fresh.ws.paths == ["/chat"], 5, what="the upstream to record /chat")


def test_same_origin_upgrade_is_allowed(fresh: Stack, alice: Browser) -> None:
    _sign_in_on_wsauth(alice)
    headers = [
        ("Cookie", f"_gatehouse={cookie_of(alice, 'wsauth.localhost')}"),
        ("Origin", "http://wsauth.localhost"),
    ]
    with RawConnection(fresh.port) as conn:
        assert _upgrade(conn, "wsauth.localhost", "/chat", extra=headers).status == 101


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://app.localhost"])
def test_cross_site_websocket_with_the_users_cookie_is_refused(
    fresh: Stack, alice: Browser, origin: str
) -> None:
    """issue 12 item 6 (fixed): cross-site WebSocket hijacking. A page on another origin
    opens a socket and the browser attaches the user's cookie (SameSite=Lax does not
    stop it for same-site siblings, and ``null`` origins come from sandboxed frames)."""
    _sign_in_on_wsauth(alice)
    headers = [
        ("Cookie", f"_gatehouse={cookie_of(alice, 'wsauth.localhost')}"),
        ("Origin", origin),
    ]
    with RawConnection(fresh.port) as conn:
        response = _upgrade(conn, "wsauth.localhost", "/chat", extra=headers)
    assert response.status == 403
    assert fresh.ws.paths == []
