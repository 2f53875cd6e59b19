"""ASGI and WSGI middleware: identity exposed to the app, or 401."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gatehouse.identity.assertion import AssertionMinter
from gatehouse.identity.keys import KeySet
from gatehouse.sessions.model import Session
from gatehouse.verify import Identity, Verifier
from gatehouse.verify.asgi import VerifyMiddleware as AsgiVerify
from gatehouse.verify.wsgi import VerifyMiddleware as WsgiVerify

from .conftest import JwksServer

HOST = "app.example.com"
SESSION = Session(id="s", user_id="u-1", email="u@example.com", groups=("g",))


@pytest.fixture
def token(jwks_server: JwksServer, ec_keyset: KeySet) -> str:
    jwks_server.publish(ec_keyset)
    return AssertionMinter(ec_keyset).mint(SESSION, HOST).jwt


@pytest.fixture
def verifier(jwks_server: JwksServer) -> Verifier:
    return Verifier(jwks_server.url, issuer=HOST)


# -- raw ASGI -----------------------------------------------------------------------------


async def _call_asgi(
    app: Any, scope: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    seen: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent, seen


def _scope(
    headers: list[tuple[bytes, bytes]], kind: str = "http", path: str = "/"
) -> dict[str, Any]:
    return {"type": kind, "path": path, "headers": headers, "state": {"db": "x"}}


def test_asgi_success_puts_identity_in_scope(token: str, verifier: Verifier) -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    mw = AsgiVerify(app, verifier)
    sent, _ = asyncio.run(_call_asgi(mw, _scope([(b"x-pomerium-jwt-assertion", token.encode())])))
    assert sent[0]["status"] == 200
    ident = seen["gatehouse.identity"]
    assert isinstance(ident, Identity) and ident.sub == "u-1"
    assert seen["state"] == {"db": "x", "identity": ident}


@pytest.mark.parametrize("headers", [[], [(b"x-pomerium-jwt-assertion", b"garbage")]])
def test_asgi_401(headers: list[tuple[bytes, bytes]], verifier: Verifier, token: str) -> None:
    called = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope)

    sent, _ = asyncio.run(_call_asgi(AsgiVerify(app, verifier), _scope(headers)))
    assert not called
    assert sent[0]["status"] == 401
    assert sent[1]["body"] == b"Unauthorized\n"  # no reason leaks to the client


def test_asgi_websocket_closed_and_lifespan_passes(verifier: Verifier) -> None:
    called = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope["type"])

    sent, _ = asyncio.run(_call_asgi(AsgiVerify(app, verifier), _scope([], "websocket")))
    assert sent == [{"type": "websocket.close", "code": 1008}]
    asyncio.run(_call_asgi(AsgiVerify(app, verifier), {"type": "lifespan"}))
    asyncio.run(
        _call_asgi(
            AsgiVerify(app, verifier, exclude_paths=["/healthz"]), _scope([], path="/healthz")
        )
    )
    assert called == ["lifespan", "http"]


def test_starlette_request_state(token: str, verifier: Verifier) -> None:
    starlette = pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def me(request: Request) -> JSONResponse:
        ident: Identity = request.state.identity
        return JSONResponse({"sub": ident.sub, "groups": list(ident.groups)})

    app = Starlette(
        routes=[Route("/me", me)],
        middleware=[Middleware(AsgiVerify, verifier=verifier)],
    )
    assert starlette.__version__

    def get(headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/me",
            "raw_path": b"/me",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), *headers],
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 1),
            "state": {},
        }
        sent, _ = asyncio.run(_call_asgi(app, scope))
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    assert get([(b"x-pomerium-jwt-assertion", token.encode())]) == (
        200,
        b'{"sub":"u-1","groups":["g"]}',
    )
    assert get([])[0] == 401


# -- WSGI ---------------------------------------------------------------------------------


def test_wsgi_raw(token: str, verifier: Verifier) -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(environ)
        start_response("200 OK", [])
        return [b"ok"]

    mw = WsgiVerify(app, verifier)
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        statuses.append(status)

    assert list(mw({"HTTP_X_POMERIUM_JWT_ASSERTION": token, "PATH_INFO": "/"}, start_response)) == [
        b"ok"
    ]
    assert seen["gatehouse.identity"].email == "u@example.com"
    assert list(mw({"PATH_INFO": "/"}, start_response)) == [b"Unauthorized\n"]
    assert statuses == ["200 OK", "401 Unauthorized"]


def test_flask(token: str, verifier: Verifier) -> None:
    flask = pytest.importorskip("flask")
    app = flask.Flask("t")

    @app.get("/me")
    def me() -> dict[str, Any]:
        ident: Identity = flask.request.environ["gatehouse.identity"]
        return {"sub": ident.sub}

    app.wsgi_app = WsgiVerify(app.wsgi_app, verifier)  # type: ignore[method-assign]
    client = app.test_client()
    assert client.get("/me", headers={"X-Pomerium-Jwt-Assertion": token}).json == {"sub": "u-1"}
    assert client.get("/me").status_code == 401
    assert (
        client.get("/me", headers={"X-Pomerium-Jwt-Assertion": token[:-4] + "AAAA"}).status_code
        == 401
    )
