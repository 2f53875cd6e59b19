"""Every route option, end to end: a real gatehouse process, real upstreams on loopback.

One gatehouse serves this whole module (one host per scenario); the upstreams' recordings
and actions are reset before each test.
"""

from __future__ import annotations

import collections
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from support import wait_until
from support.client import RawConnection, parse_response, send_raw
from support.gatehouse import GatehouseProcess, public
from support.upstream import Hang, SlowBody, SlowHead, Upstream, WebSocketEcho, closed_port


def _config(ups: dict[str, Upstream], ws: WebSocketEcho) -> dict[str, Any]:
    a, b, c = ups["a"].url, ups["b"].url, ups["c"].url
    refused = f"http://127.0.0.1:{closed_port()}"
    return {
        "default_upstream_timeout": "10s",
        "set_response_headers": {"X-Global": "g", "X-XSS-Protection": ""},
        "routes": public(
            [
                {"from": "http://exact.test", "to": a},
                {"from": "http://*.wild.test", "to": b},
                {"from": "http://port.test:8443", "response": {"status": 200, "body": "port 8443"}},
                {"from": "http://port.test", "response": {"status": 200, "body": "any port"}},
                {"from": "http://list.test", "to": [a, b]},
                {"from": "http://weights.test", "to": [f"{a},3", f"{b},1"]},
                {"from": "http://refused.test", "to": [refused, a]},
                {"from": "http://allrefused.test", "to": refused},
                {"from": "http://paths.test", "prefix": "/first", "response": {"body": "first"}},
                {
                    "from": "http://paths.test",
                    "prefix": "/first/second",
                    "response": {"body": "second"},
                },
                {"from": "http://paths.test", "prefix": "/api/", "to": a},
                {"from": "http://paths.test", "path": "/exact", "to": b},
                {"from": "http://paths.test", "regex": "^/re/[0-9]+$", "to": c},
                {
                    "from": "http://rewrite.test",
                    "prefix": "/old/",
                    "prefix_rewrite": "/new/",
                    "to": a,
                },
                {"from": "http://topath.test", "to": f"{a}/base"},
                {
                    "from": "http://regexrw.test",
                    "regex_rewrite_pattern": "^/user/([0-9]+)/profile$",
                    "regex_rewrite_substitution": "/profiles/\\1",
                    "to": a,
                },
                {"from": "http://preserve.test", "preserve_host_header": True, "to": a},
                {"from": "http://hostrw.test", "host_rewrite": "backend.internal", "to": a},
                {"from": "http://plainhost.test", "to": a},
                {
                    "from": "http://headers.test",
                    "set_request_headers": {"X-Custom": "custom-value", "X-Replace": "new"},
                    "remove_request_headers": ["X-Remove-Me"],
                    "set_response_headers": {
                        "X-Route": "yes",
                        "X-Frame-Options": "DENY",
                        "X-Global": "",
                    },
                    "to": a,
                },
                {"from": "http://timeout.test", "timeout": "500ms", "to": a},
                {"from": "http://idle.test", "idle_timeout": "500ms", "to": a},
                {"from": "http://ws.test", "allow_websockets": True, "to": ws.url},
                {"from": "http://nows.test", "to": ws.url},
                {
                    "from": "http://redirect.test",
                    "redirect": {
                        "host_redirect": "other.test",
                        "path_redirect": "/moved",
                        "response_code": 302,
                    },
                },
                {"from": "http://https.test", "redirect": {"https_redirect": True}},
                {
                    "from": "http://prefixredir.test",
                    "prefix": "/docs/",
                    "redirect": {"prefix_rewrite": "/manual/", "strip_query": True},
                },
                {
                    "from": "http://response.test",
                    "response": {"status": 418, "body": "I am a teapot"},
                },
            ]
        ),
    }


@pytest.fixture(scope="module")
def gh(
    ups: dict[str, Upstream], ws_server: WebSocketEcho, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatehouseProcess]:
    with GatehouseProcess(_config(ups, ws_server), tmp_path_factory.mktemp("routes")) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(gh: GatehouseProcess) -> Iterator[httpx.Client]:
    with gh.client() as c:
        yield c


def get(client: httpx.Client, host: str, path: str = "/", **kw: Any) -> httpx.Response:
    headers = {"Host": host, **kw.pop("headers", {})}
    return client.request(kw.pop("method", "GET"), path, headers=headers, **kw)


# -- from ------------------------------------------------------------------------------


def test_exact_host(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    r = get(client, "exact.test", "/hello?x=1")
    assert r.status_code == 200
    assert r.text == "hello from a"
    assert ups["a"].requests[-1].target == "/hello?x=1"


def test_exact_host_ignores_case_and_port(client: httpx.Client) -> None:
    assert get(client, "EXACT.test:8080").text == "hello from a"


def test_exact_host_does_not_match_subdomain(
    client: httpx.Client, ups: dict[str, Upstream]
) -> None:
    r = get(client, "sub.exact.test")
    assert r.status_code == 404
    assert not ups["a"].requests


@pytest.mark.parametrize("host", ["one.wild.test", "two.levels.wild.test"])
def test_wildcard_host(client: httpx.Client, host: str) -> None:
    assert get(client, host).text == "hello from b"


def test_wildcard_does_not_match_bare_domain(client: httpx.Client) -> None:
    assert get(client, "wild.test").status_code == 404


def test_from_with_port_matches_only_that_port(client: httpx.Client) -> None:
    assert get(client, "port.test:8443").text == "port 8443"
    assert get(client, "port.test:9999").text == "any port"
    assert get(client, "port.test").text == "any port"


def test_no_route_is_a_404_page(client: httpx.Client) -> None:
    r = get(client, "nowhere.test", "/x")
    assert r.status_code == 404
    assert r.json()["status"] == 404
    html = get(client, "nowhere.test", "/x", headers={"Accept": "text/html"})
    assert html.status_code == 404
    assert html.headers["content-type"].startswith("text/html")
    assert "404" in html.text


@pytest.mark.parametrize("path", ["/ping", "/healthz"])
@pytest.mark.parametrize("host", ["exact.test", "nowhere.test", "127.0.0.1"])
def test_ping_and_healthz_on_every_host(
    client: httpx.Client, ups: dict[str, Upstream], path: str, host: str
) -> None:
    r = get(client, host, path)
    assert r.status_code == 200
    if path == "/healthz":
        assert r.json()["status"] == "ok"
    assert not ups["a"].requests


# -- to --------------------------------------------------------------------------------


def test_to_list_round_robin(client: httpx.Client) -> None:
    seen = [get(client, "list.test").headers["x-upstream"] for _ in range(6)]
    assert collections.Counter(seen) == {"a": 3, "b": 3}
    assert all(seen[i] != seen[i + 1] for i in range(5)), seen


def test_to_weights(client: httpx.Client) -> None:
    seen = [get(client, "weights.test").headers["x-upstream"] for _ in range(12)]
    assert collections.Counter(seen) == {"a": 9, "b": 3}
    # Smooth weighted round robin: b never comes twice in a row.
    assert "bb" not in "".join(seen)


def test_refused_endpoint_is_skipped(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    for _ in range(4):
        r = get(client, "refused.test")
        assert r.status_code == 200
        assert r.headers["x-upstream"] == "a"
    assert len(ups["a"].requests) == 4


def test_all_endpoints_refused_is_502(client: httpx.Client, gh: GatehouseProcess) -> None:
    r = get(client, "allrefused.test", "/down")
    assert r.status_code == 502
    assert r.json()["status"] == 502
    line = gh.wait_access(lambda a: a.get("host") == "allrefused.test")
    assert line["status"] == 502


# -- prefix / path / regex -------------------------------------------------------------


def test_first_match_wins(client: httpx.Client) -> None:
    assert get(client, "paths.test", "/first/second/x").text == "first"
    assert get(client, "paths.test", "/firstly").text == "first"


def test_prefix(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    assert get(client, "paths.test", "/api/v1/items").text == "hello from a"
    assert ups["a"].requests[-1].path == "/api/v1/items"
    assert get(client, "paths.test", "/apix").status_code == 404


def test_path_is_exact(client: httpx.Client) -> None:
    assert get(client, "paths.test", "/exact").text == "hello from b"
    assert get(client, "paths.test", "/exact?q=1").text == "hello from b"
    assert get(client, "paths.test", "/exact/more").status_code == 404
    assert get(client, "paths.test", "/exactly").status_code == 404


def test_regex_is_a_full_match(client: httpx.Client) -> None:
    assert get(client, "paths.test", "/re/123").text == "hello from c"
    assert get(client, "paths.test", "/re/123/x").status_code == 404
    assert get(client, "paths.test", "/re/abc").status_code == 404


# -- rewrites --------------------------------------------------------------------------


def test_prefix_rewrite(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    assert get(client, "rewrite.test", "/old/thing?a=b").status_code == 200
    assert ups["a"].requests[-1].target == "/new/thing?a=b"


def test_to_url_path_is_prepended(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    assert get(client, "topath.test", "/x/y?q=1").status_code == 200
    assert ups["a"].requests[-1].target == "/base/x/y?q=1"


def test_regex_rewrite(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    assert get(client, "regexrw.test", "/user/42/profile").status_code == 200
    assert ups["a"].requests[-1].path == "/profiles/42"
    assert get(client, "regexrw.test", "/other").status_code == 200
    assert ups["a"].requests[-1].path == "/other"


# -- Host ------------------------------------------------------------------------------


def test_host_is_the_upstream_by_default(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    get(client, "plainhost.test")
    req = ups["a"].requests[-1]
    assert req.header("host") == f"127.0.0.1:{ups['a'].port}"
    assert req.header("x-forwarded-host") == "plainhost.test"


def test_preserve_host_header(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    get(client, "preserve.test:8080")
    assert ups["a"].requests[-1].header("host") == "preserve.test:8080"


def test_host_rewrite(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    get(client, "hostrw.test")
    req = ups["a"].requests[-1]
    assert req.header("host") == "backend.internal"
    assert len(req.header_all("host")) == 1


# -- headers ---------------------------------------------------------------------------


def test_set_and_remove_request_headers(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    get(
        client,
        "headers.test",
        headers={"X-Remove-Me": "secret", "X-Replace": "old", "X-Keep": "kept"},
    )
    req = ups["a"].requests[-1]
    assert req.header("x-custom") == "custom-value"
    assert req.header_all("x-replace") == ["new"]
    assert req.header("x-remove-me") is None
    assert req.header("x-keep") == "kept"


def test_route_response_headers(client: httpx.Client) -> None:
    r = get(client, "headers.test")
    assert r.headers["x-route"] == "yes"
    assert r.headers.get_list("x-frame-options") == ["DENY"]
    assert "x-global" not in r.headers  # removed on this route with ""
    assert r.headers["x-content-type-options"] == "nosniff"


def test_global_response_headers_and_secure_defaults(client: httpx.Client) -> None:
    r = get(client, "exact.test")
    assert r.headers["x-frame-options"] == "SAMEORIGIN"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-global"] == "g"
    assert "x-xss-protection" not in r.headers  # removed globally with ""
    assert "strict-transport-security" not in r.headers  # no HSTS without TLS


def test_response_headers_on_gatehouse_pages(client: httpx.Client) -> None:
    r = get(client, "nowhere.test")
    assert r.status_code == 404
    assert r.headers["x-frame-options"] == "SAMEORIGIN"
    assert r.headers["x-global"] == "g"


def test_upstream_header_overridden_by_route(
    client: httpx.Client, ups: dict[str, Upstream]
) -> None:
    from support.upstream import Respond

    ups["a"].respond(
        Respond(body=b"x", headers=[("X-Frame-Options", "ALLOWALL"), ("X-Route", "upstream")])
    )
    r = get(client, "headers.test")
    assert r.headers.get_list("x-frame-options") == ["DENY"]
    assert r.headers.get_list("x-route") == ["yes"]


# -- timeouts --------------------------------------------------------------------------


def test_timeout_gives_504(
    client: httpx.Client, ups: dict[str, Upstream], gh: GatehouseProcess
) -> None:
    ups["a"].respond(SlowHead(delay=3.0))
    r = get(client, "timeout.test", "/slow")
    assert r.status_code == 504
    assert r.json()["status"] == 504
    assert r.elapsed.total_seconds() < 2.5
    gh.wait_log(
        lambda rec: (
            ("upstream" in rec.get("message", "") and "504" in json.dumps(rec))
            or rec.get("status") == 504
        )
    )


def test_timeout_closes_upstream_connection(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    ups["a"].respond(Hang())
    assert get(client, "timeout.test").status_code == 504
    wait_until(lambda: ups["a"].closed, 3, what="the upstream connection to close")


def test_fast_response_within_timeout(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    ups["a"].respond(SlowHead(delay=0.1))
    assert get(client, "timeout.test").status_code == 200


def test_idle_timeout_cuts_a_stalled_stream(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    ups["a"].respond(SlowBody(parts=[b"a" * 10, b"b" * 10], delay=2.0))
    with pytest.raises(httpx.HTTPError):
        r = get(client, "idle.test")
        r.read()
        raise AssertionError(f"got a complete response: {r.status_code} {r.content!r}")


def test_idle_timeout_spares_an_active_stream(
    client: httpx.Client, ups: dict[str, Upstream]
) -> None:
    ups["a"].respond(SlowBody(parts=[b"a"] * 5, delay=0.2))
    r = get(client, "idle.test")
    assert r.status_code == 200
    assert r.content == b"aaaaa"


# -- WebSockets ------------------------------------------------------------------------


def _ws(gh: GatehouseProcess, host: str, path: str = "/chat"):  # type: ignore[no-untyped-def]
    sock = socket.create_connection(("127.0.0.1", gh.port), timeout=5)
    return ws_connect(f"ws://{host}{path}", sock=sock, open_timeout=5, close_timeout=2)


def test_websocket_tunnel_both_ways(gh: GatehouseProcess, ws_server: WebSocketEcho) -> None:
    with _ws(gh, "ws.test", "/chat?room=1") as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=5) == b"\x00\x01binary"
        big = "x" * 300_000
        ws.send(big)
        assert ws.recv(timeout=5) == big
    assert ws_server.paths[-1] == "/chat?room=1"
    wait_until(lambda: ws_server.closed >= 1, 3, what="the upstream websocket to close")


def test_websocket_refused_without_allow_websockets(
    gh: GatehouseProcess, ws_server: WebSocketEcho
) -> None:
    before = len(ws_server.paths)
    raw = send_raw(
        gh.port,
        b"GET /chat HTTP/1.1\r\nHost: nows.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        timeout=3,
    )
    resp = parse_response(raw)
    assert resp.status == 403
    assert len(ws_server.paths) == before


def test_refused_upgrade_does_not_leave_the_connection_hanging(gh: GatehouseProcess) -> None:
    """After a non-101 answer to an Upgrade request the connection must be closed (or keep serving)."""
    with RawConnection(gh.port) as conn:
        conn.send(
            b"GET /chat HTTP/1.1\r\nHost: nows.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        assert conn.read_response().status == 403
        assert conn.is_closed(timeout=2), "connection left open and unread after the refusal"


def _ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame (RFC 6455 §5.2), payload < 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def test_websocket_client_close_closes_upstream(
    gh: GatehouseProcess, ws_server: WebSocketEcho
) -> None:
    before = ws_server.closed
    with RawConnection(gh.port) as conn:
        conn.send(
            b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        resp = conn.read_response()
        assert resp.status == 101
        assert resp.header("upgrade").lower() == "websocket"
        conn.send(_ws_frame(b"ping me"))
        echoed = conn.buf.exactly(2 + len(b"ping me"))
        assert echoed == bytes([0x81, len(b"ping me")]) + b"ping me"
    # closed abruptly: no close frame
    wait_until(lambda: ws_server.closed > before, 5, what="the upstream websocket to close")


# -- redirect and response actions -----------------------------------------------------


def test_redirect_action(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    r = get(client, "redirect.test", "/some/where?x=1")
    assert r.status_code == 302
    assert r.headers["location"] == "http://other.test/moved?x=1"
    assert not ups["a"].requests


def test_https_redirect(client: httpx.Client) -> None:
    r = get(client, "https.test:8080", "/p?q=1")
    assert r.status_code == 301
    assert r.headers["location"] == "https://https.test/p?q=1"


def test_redirect_prefix_rewrite_and_strip_query(client: httpx.Client) -> None:
    r = get(client, "prefixredir.test", "/docs/intro?utm=1")
    assert r.status_code == 301
    assert r.headers["location"] == "http://prefixredir.test/manual/intro"


def test_response_action(client: httpx.Client, ups: dict[str, Upstream]) -> None:
    r = get(client, "response.test", "/anything")
    assert r.status_code == 418
    assert r.text == "I am a teapot"
    assert r.headers["x-frame-options"] == "SAMEORIGIN"
    assert not ups["a"].requests


def test_keepalive_connection_serves_several_routes(gh: GatehouseProcess) -> None:
    with RawConnection(gh.port) as conn:
        assert conn.request("GET", "/", "exact.test").body == b"hello from a"
        assert conn.request("GET", "/", "response.test").status == 418
        assert conn.request("GET", "/", "nowhere.test").status == 404
        assert conn.request("GET", "/ping", "x.test").status == 200
