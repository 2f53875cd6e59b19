"""Fixtures for the built-in IdP: users with cheap hashes, and the IdP served over real HTTP.

The server is gatehouse's own :class:`~gatehouse.http.server.HttpServer` on port 0, with a
small adapter that turns each exchange into a :class:`Request` for the IdP's route table
(the shape of the pipeline's internal-endpoint dispatch).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from gatehouse.config.auth import IdpUser
from gatehouse.http.exchange import Exchange
from gatehouse.http.messages import Headers, Request, Response
from gatehouse.http.server import HttpServer, ServerSettings
from gatehouse.idp import BuiltinProvider, ClientRegistration, SQLiteStateStore
from gatehouse.proxy.responses import error_response
from support.loop import LoopThread

# Cheap argon2 parameters: tests verify many passwords; the format is the same.
_FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

ALICE_PW = "correct horse battery staple"
BOB_PW = "hunter2-but-longer"
CLIENT_ID = "gatehouse"
CLIENT_SECRET = "s3cret-s3cret-s3cret-s3cret"
OTHER_ID = "grafana"
OTHER_SECRET = "another-secret-of-some-length"
RP = "http://rp.example:9999"
REDIRECT = RP + "/oauth2/callback"
LOGOUT_DONE = RP + "/signed_out"


def users() -> list[IdpUser]:
    return [
        IdpUser(
            username="alice",
            password_hash=_FAST.hash(ALICE_PW),
            email="alice@example.com",
            name="Alice Liddell",
            groups=["admins", "staff"],
        ),
        IdpUser(
            username="bob",
            password_hash=_FAST.hash(BOB_PW),
            email="bob@example.com",
            name="Bob",
            groups=[],
        ),
    ]


def clients() -> list[ClientRegistration]:
    return [
        ClientRegistration(CLIENT_ID, CLIENT_SECRET, (REDIRECT,), (LOGOUT_DONE,), name="gatehouse"),
        ClientRegistration(OTHER_ID, OTHER_SECRET, (RP + "/login/generic_oauth",)),
        ClientRegistration("public-app", None, (RP + "/public/cb",)),
    ]


@dataclass
class IdpServer:
    """A provider served on 127.0.0.1:<port> by gatehouse's HTTP server."""

    loop_thread: LoopThread
    routes: dict[str, Any] = field(default_factory=dict)
    server: HttpServer | None = None
    port: int = 0
    provider: BuiltinProvider | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/.gatehouse/idp"

    def url(self, path: str) -> str:
        return self.issuer + path

    async def _app(self, exchange: Exchange) -> None:
        head = exchange.head
        path, _, query = head.target.decode("ascii", "replace").partition("?")
        host_header = (head.get(b"host") or b"").decode("latin-1")
        host, _, port = host_header.rpartition(":") if ":" in host_header else (host_header, "", "")
        handler = self.routes.get(path)
        body = await exchange.read_body(64 * 1024) if head.has_body else b""
        if handler is None:
            exchange.send(Response.text("Not Found", 404))
            return
        request = Request(
            method=head.method.decode("ascii"),
            scheme="http",
            host=host.lower(),
            port=int(port) if port else None,
            path=path,
            query=query,
            headers=Headers.from_raw(head.headers),
            client_ip=exchange.client_ip,
            body=body,
        )
        exchange.send(await handler(request))

    def start(self) -> IdpServer:
        async def listen() -> int:
            self.server = HttpServer(self._app, error_response, ServerSettings())
            bound = await self.server.listen("127.0.0.1", 0)
            return bound[0][1]

        self.port = self.loop_thread.run(listen())
        return self

    def mount(self, provider: BuiltinProvider) -> BuiltinProvider:
        self.provider = provider
        self.routes = provider.routes()
        return provider

    def stop(self) -> None:
        if self.server is not None:
            self.loop_thread.run(self.server.shutdown(1.0))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_idp(loop_thread: LoopThread, tmp_path: Path) -> Iterator[Callable[..., IdpServer]]:
    """Factory: ``make_idp(**provider_kwargs)`` → a started :class:`IdpServer`."""
    made: list[IdpServer] = []

    def make(**kwargs: Any) -> IdpServer:
        srv = IdpServer(loop_thread).start()
        kwargs.setdefault("users", users())
        kwargs.setdefault("clients", clients())
        if kwargs.pop("sqlite", False):
            kwargs["store"] = SQLiteStateStore(tmp_path / f"idp{len(made)}.sqlite")
        srv.mount(BuiltinProvider(srv.issuer, **kwargs))
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.stop()
        if srv.provider is not None:
            loop_thread.run(srv.provider.store.close())


@pytest.fixture
def idp(make_idp: Callable[..., IdpServer]) -> IdpServer:
    return make_idp()


def run(coro: Any) -> Any:
    return asyncio.run(coro)
