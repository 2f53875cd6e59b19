"""gRPC through gatehouse with ``grpcio`` on both ends: unary and bidirectional streaming
through a route with a policy, to an ``h2c://`` upstream and to an ``https://`` upstream
negotiating ``h2``; trailers pass through; errors gatehouse makes are gRPC statuses
(Envoy's mapping: 401 → UNAUTHENTICATED, 403 → PERMISSION_DENIED, 502/503/504 → UNAVAILABLE).

The session is a programmatic-login token (``Authorization: Pomerium <token>``) of a user
signed in through the test IdP, as a command-line gRPC client would use.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from security.conftest import programmatic_token
from security.hardening import ALICE, gatehouse, signed_in
from support.grpc_echo import EchoServer, identity
from support.upstream import Upstream, closed_port
from tls.pki import Authority

pytestmark = pytest.mark.timeout(90)

BOB_ONLY = [{"allow": {"or": [{"email": {"is": "bob@example.com"}}]}}]


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EchoServer, Path]]:
    ca = Authority()
    leaf = ca.issue("localhost", "127.0.0.1")
    server = EchoServer(grpc.ssl_server_credentials([(leaf.key_pem, leaf.cert_pem)]))
    ca_path = ca.write(tmp_path_factory.mktemp("grpc-ca"))
    yield server, ca_path
    server.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    echo: EchoServer,
    tls_echo: tuple[EchoServer, Path],
    loop_thread: Any,
) -> Iterator[tuple[int, str]]:
    app = Upstream(loop_thread, "app")
    tls_server, ca_path = tls_echo
    routes = [
        {"from": "http://app.localhost", "to": app.url, "policy": ALICE},
        {
            "from": "http://grpc.localhost",
            "to": f"h2c://127.0.0.1:{echo.port}",
            "policy": ALICE,
            "pass_identity_headers": True,
        },
        {"from": "http://bob.localhost", "to": f"h2c://127.0.0.1:{echo.port}", "policy": BOB_ONLY},
        {
            "from": "http://down.localhost",
            "to": f"h2c://127.0.0.1:{closed_port()}",
            "policy": ALICE,
        },
        {
            "from": "http://tls.localhost",
            "to": f"https://127.0.0.1:{tls_server.port}",
            "tls_custom_ca_file": str(ca_path),
            "tls_server_name": "localhost",
            "policy": ALICE,
            "pass_identity_headers": True,
        },
    ]
    workdir = tmp_path_factory.mktemp("gh-grpc")
    with gatehouse(workdir, routes, codec_type="auto") as (gh, _idp):
        browser = signed_in(gh.port, "http://app.localhost/")
        token = programmatic_token(browser)
        yield gh.port, token
    app.close()


def channel(port: int, host: str) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.default_authority", host)])


def unary(ch: grpc.Channel) -> Any:
    return ch.unary_unary(
        "/test.Echo/Unary", request_serializer=identity, response_deserializer=identity
    )


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Pomerium {token}")]


@pytest.mark.parametrize("host", ["grpc.localhost", "tls.localhost"])
def test_unary_with_trailers_and_identity(
    stack: tuple[int, str], echo: EchoServer, tls_echo: tuple[EchoServer, Path], host: str
) -> None:
    port, token = stack
    server = echo if host == "grpc.localhost" else tls_echo[0]
    with channel(port, host) as ch:
        response, call = unary(ch).with_call(b"ping", metadata=auth(token), timeout=10)
    assert response == b"echo:ping"
    assert call.code() == grpc.StatusCode.OK
    assert ("x-trailer", "from-upstream") in list(call.trailing_metadata() or ())
    seen = server.metadata[-1]
    assert seen.get("x-pomerium-jwt-assertion", "").count(".") == 2  # gatehouse's assertion
    assert "authorization" not in seen  # gatehouse's credential stays behind
    assert seen.get("x-forwarded-proto") == "http"


def test_bidirectional_streaming(stack: tuple[int, str]) -> None:
    """Each message is answered before the next is sent: streaming both ways, not buffered."""
    port, token = stack
    outbox: queue.Queue[bytes | None] = queue.Queue()

    def requests() -> Iterator[bytes]:
        while True:
            item = outbox.get(timeout=10)
            if item is None:
                return
            yield item

    with channel(port, "grpc.localhost") as ch:
        chat = ch.stream_stream(
            "/test.Echo/Chat", request_serializer=identity, response_deserializer=identity
        )
        replies = chat(requests(), metadata=auth(token), timeout=20)
        got = []
        for i in range(5):
            outbox.put(b"m%d" % i)
            got.append(next(replies))
        outbox.put(None)
        assert list(replies) == []
    assert got == [b"re:m%d" % i for i in range(5)]
    assert replies.code() == grpc.StatusCode.OK


def test_no_session_is_unauthenticated(stack: tuple[int, str]) -> None:
    port, _ = stack
    with channel(port, "grpc.localhost") as ch, pytest.raises(grpc.RpcError) as err:
        unary(ch)(b"x", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_denied_is_permission_denied(stack: tuple[int, str], echo: EchoServer) -> None:
    port, token = stack
    before = len(echo.metadata)
    with channel(port, "bob.localhost") as ch, pytest.raises(grpc.RpcError) as err:
        unary(ch)(b"x", metadata=auth(token), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(echo.metadata) == before  # never reached the upstream


def test_upstream_down_is_unavailable(stack: tuple[int, str]) -> None:
    port, token = stack
    with channel(port, "down.localhost") as ch, pytest.raises(grpc.RpcError) as err:
        unary(ch)(b"x", metadata=auth(token), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_upstream_status_passes_through(stack: tuple[int, str]) -> None:
    port, token = stack
    with channel(port, "grpc.localhost") as ch, pytest.raises(grpc.RpcError) as err:
        ch.unary_unary("/test.Echo/Fail")(b"x", metadata=auth(token), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "no such thing"


def test_many_concurrent_calls(stack: tuple[int, str]) -> None:
    port, token = stack
    with channel(port, "grpc.localhost") as ch:
        call = unary(ch)
        results: list[bytes] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            r = call(b"%d" % i, metadata=auth(token), timeout=20)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert sorted(results) == sorted(b"echo:%d" % i for i in range(50))
    assert time.monotonic() - started < 30
