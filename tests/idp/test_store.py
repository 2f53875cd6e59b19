"""State stores: the contract on both backends, and two 'workers' sharing one SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gatehouse.http.messages import Headers, Request
from gatehouse.idp import BuiltinProvider, MemoryStateStore, SQLiteStateStore, StateStore
from gatehouse.idp.tokens import pkce_s256

from .conftest import ALICE_PW, CLIENT_ID, CLIENT_SECRET, REDIRECT, clients, users
from .helpers import form_fields, query_of

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["memory", "sqlite"])
async def store_and_clock(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    clock = Clock()
    store: StateStore = (
        MemoryStateStore(clock=clock)
        if request.param == "memory"
        else SQLiteStateStore(tmp_path / "s.sqlite", clock=clock)
    )
    yield store, clock
    await store.close()


async def test_put_get_take_expire(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    await store.put("a", "1", 10)
    assert await store.get("a") == "1"
    assert await store.take("a") == "1"
    assert await store.take("a") is None and await store.get("a") is None
    await store.put("b", "2", 10)
    await store.put("b", "3", 10)
    clock.t += 11
    assert await store.get("b") is None and await store.take("b") is None


async def test_sqlite_take_is_atomic_across_connections(tmp_path: Path) -> None:
    stores = [SQLiteStateStore(tmp_path / "shared.sqlite") for _ in range(4)]
    try:
        for i in range(20):
            await stores[0].put(f"k{i}", "v", 60)
        results = await asyncio.gather(*(s.take(f"k{i}") for i in range(20) for s in stores))
        assert results.count("v") == 20  # each key taken exactly once
    finally:
        for s in stores:
            await s.close()


def _request(
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes = b"",
    cookies: str = "",
    auth: tuple[str, str] | None = None,
) -> Request:
    headers = [("host", "idp.test")]
    if cookies:
        headers.append(("cookie", cookies))
    if auth:
        import base64

        headers.append(
            ("authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        )
    return Request(
        method=method,
        scheme="http",
        host="idp.test",
        port=None,
        path=path,
        query=query,
        headers=Headers(headers),
        client_ip="10.0.0.1",
        body=body,
    )


async def test_code_from_one_worker_is_redeemed_by_another(tmp_path: Path) -> None:
    from urllib.parse import urlencode, urlsplit

    issuer = "http://idp.test/.gatehouse/idp"
    secret = b"k" * 32
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    a, b = (
        BuiltinProvider(
            issuer,
            users(),
            clients(),
            key,
            secret=secret,
            store=SQLiteStateStore(tmp_path / "idp.sqlite"),
        )
        for _ in range(2)
    )
    try:
        ra, rb = a.routes(), b.routes()
        base = "/.gatehouse/idp"
        verifier = "v" * 50
        q = urlencode(
            {
                "response_type": "code",
                "client_id": CLIENT_ID,
                "redirect_uri": REDIRECT,
                "scope": "openid offline_access",
                "code_challenge": pkce_s256(verifier),
                "code_challenge_method": "S256",
                "state": "s",
            }
        )
        page = await ra[base + "/authorize"](_request("GET", base + "/authorize", query=q))
        csrf = page.headers[[k for k, _ in page.headers].index("Set-Cookie")][1].split(";")[0]
        _, fields = form_fields(page.body.decode())
        # The form is posted to the other worker.
        form = urlencode({**fields, "username": "alice", "password": ALICE_PW}).encode()
        done = await rb[base + "/sign_in"](
            _request("POST", base + "/sign_in", body=form, cookies=csrf)
        )
        assert done.status == 303
        location = dict(done.headers)["Location"]
        code = query_of(location)["code"]
        assert urlsplit(location).path == "/oauth2/callback"
        body = urlencode(
            {
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": verifier,
                "redirect_uri": REDIRECT,
            }
        ).encode()
        tok = await ra[base + "/token"](
            _request("POST", base + "/token", body=body, auth=(CLIENT_ID, CLIENT_SECRET))
        )
        assert tok.status == 200
        again = await rb[base + "/token"](
            _request("POST", base + "/token", body=body, auth=(CLIENT_ID, CLIENT_SECRET))
        )
        assert again.status == 400
    finally:
        await a.store.close()
        await b.store.close()
