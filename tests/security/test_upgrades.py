"""Only permitted upgrades become tunnels (issue 12, item 3).

After an upstream's ``101`` gatehouse relays bytes and authorizes nothing more, so a tunnel
of another protocol is a way past path policies: a client allowed only on ``/public/``
sends ``Upgrade: h2c``, a naive upstream switches, and the next request on the connection
(``GET /admin``) reaches it unchecked. Now only ``websocket`` (``allow_websockets``),
``SPDY/3.1`` (``allow_spdy``) and the ``allow_upgrades`` names are tunnelled; ``h2c`` is
otherwise sent as a plain request (Envoy's behaviour) and other protocols get 403; a
``101`` the request did not ask for is the upstream's fault (502), never a tunnel.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from websockets.sync.client import connect as ws_connect

from support.client import RawConnection, connect, read_all
from support.loop import LoopThread
from support.upstream import Raw, Respond, Upstream, WebSocketEcho

from .hardening import ONLY_PUBLIC, gatehouse

SWITCH_H2C = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
SWITCH_PROTO = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: my-proto\r\n\r\n"
)


@pytest.fixture(scope="module")
def ups(loop_thread: LoopThread) -> Iterator[tuple[Upstream, WebSocketEcho]]:
    up = Upstream(loop_thread, "tunnel")
    ws = WebSocketEcho(loop_thread)
    yield up, ws
    up.close()
    ws.close()


@pytest.fixture(scope="module")
def port(
    ups: tuple[Upstream, WebSocketEcho], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    up, ws = ups
    public = {"allow_public_unauthenticated_access": True}
    routes = [
        {
            "from": "http://wsonly.localhost",
            "to": up.url,
            "allow_websockets": True,
            "policy": ONLY_PUBLIC,
        },
        {"from": "http://proto.localhost", "to": up.url, "allow_upgrades": ["My-Proto"], **public},
        {"from": "http://plain.localhost", "to": up.url, "policy": ONLY_PUBLIC},
        {"from": "http://ws.localhost", "to": ws.url, "allow_websockets": True, **public},
    ]
    with gatehouse(tmp_path_factory.mktemp("upgrades"), routes) as (gh, _):
        yield gh.port


@pytest.fixture
def up(ups: tuple[Upstream, WebSocketEcho]) -> Upstream:
    upstream = ups[0]
    upstream.reset()
    upstream.respond(Respond(body=b"hello"))
    return upstream


def _h2c(path: str, host: str = "wsonly.localhost") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    ).encode()


SMUGGLED = b"GET /admin/secret HTTP/1.1\r\nHost: wsonly.localhost\r\n\r\n"


def test_h2c_is_not_tunnelled_past_path_policy(port: int, up: Upstream) -> None:
    up.respond(Raw(SWITCH_H2C, keep=True))  # a naive upstream that switches
    with connect(port) as sock:
        sock.sendall(_h2c("/public/x"))
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 502 "), head[:200]
        sock.sendall(SMUGGLED)
        read_all(sock, 2)
    assert [r.path for r in up.requests] == ["/public/x"]
    seen = up.requests[0]
    assert not {"upgrade", "http2-settings"} & seen.header_names()
    assert "upgrade" not in (seen.header("connection") or "").lower()
    assert b"/admin" not in up.raw_bytes


def test_h2c_is_served_as_plain_http1(port: int, up: Upstream) -> None:
    with RawConnection(port) as conn:
        conn.send(_h2c("/public/x"))
        r = conn.read_response()
        assert r.status == 200 and r.body == b"hello"
        assert conn.is_closed(), "the client may already speak h2c: no second request"
    assert not {"upgrade", "http2-settings"} & up.requests[-1].header_names()


@pytest.mark.parametrize("protocol", ["foo", "websocket, h2c", "TLS/1.2"])
def test_other_protocols_are_refused(port: int, up: Upstream, protocol: str) -> None:
    with RawConnection(port) as conn:
        r = conn.request(
            "GET",
            "/public/x",
            "wsonly.localhost",
            [("Connection", "Upgrade"), ("Upgrade", protocol)],
        )
    assert r.status == 403
    assert up.requests == []


def test_a_listed_protocol_is_tunnelled(port: int, up: Upstream) -> None:
    up.respond(Raw(SWITCH_PROTO, keep=True))
    with RawConnection(port) as conn:
        r = conn.request(
            "GET", "/x", "proto.localhost", [("Connection", "Upgrade"), ("Upgrade", "my-proto")]
        )
        assert r.status == 101
    assert up.requests[0].header("upgrade") == "my-proto"


def test_no_101_for_a_request_that_asked_no_upgrade(port: int, up: Upstream) -> None:
    up.respond(Raw(SWITCH_H2C, keep=True))
    with RawConnection(port) as conn:
        assert conn.request("GET", "/public/x", "plain.localhost").status == 502
        # The connection still speaks HTTP to gatehouse: the next request is authorized.
        conn.send(SMUGGLED.replace(b"wsonly", b"plain"))
        assert conn.read_response().status == 403
    assert [r.path for r in up.requests] == ["/public/x"]


def test_no_101_to_another_protocol_than_asked(port: int, up: Upstream) -> None:
    up.respond(Raw(SWITCH_H2C, keep=True))
    with RawConnection(port) as conn:
        r = conn.request(
            "GET",
            "/public/ws",
            "wsonly.localhost",
            [
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
            ],
        )
    assert r.status == 502


def test_websockets_still_work(port: int, ups: tuple[Upstream, WebSocketEcho]) -> None:
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    with ws_connect("ws://ws.localhost/chat", sock=sock, open_timeout=5) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
    assert ups[1].paths[-1] == "/chat"
