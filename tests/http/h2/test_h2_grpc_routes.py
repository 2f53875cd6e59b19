"""gRPC routes' upstream options with ``grpcio`` on both ends, through a real gatehouse:
mutual TLS to an ``https`` upstream that requires a client certificate (the route's
``tls_client_cert``/``tls_client_key`` and ``tls_custom_ca``, inline and from files),
weighted balancing over several ``to`` targets, a dead endpoint skipped by retrying the
call on another, the route's timeout seen as DEADLINE_EXCEEDED, a cancelled call
cancelled at the upstream too, and ``grpc_health_check`` keeping calls off an endpoint
that is NOT_SERVING.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from support import wait_until
from support.gatehouse import GatehouseProcess, public
from support.grpc_echo import EchoServer, identity
from support.upstream import closed_port
from tls.pki import Authority

pytestmark = pytest.mark.timeout(90)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Servers:
    """The upstreams of the module: two plain ones and one that requires mTLS."""

    def __init__(self, tmp: Path) -> None:
        self.upstream_ca = Authority("grpc upstream CA")
        self.client_ca = Authority("grpc client CA")
        self.stranger_ca = Authority("stranger CA")
        leaf = self.upstream_ca.issue("grpc.internal")
        self.client = self.client_ca.issue(client=True, common_name="gatehouse")
        self.stranger = self.stranger_ca.issue(client=True, common_name="stranger")
        self.client_files = self.client.write(tmp, "gh-client")
        self.ca_file = self.upstream_ca.write(tmp, "upstream-ca")
        self.mtls = EchoServer(
            grpc.ssl_server_credentials(
                [(leaf.key_pem, leaf.cert_pem)],
                root_certificates=self.client_ca.cert_pem,
                require_client_auth=True,
            ),
            name="mtls",
        )
        self.a = EchoServer(name="a", slow_s=3.0)
        self.b = EchoServer(name="b")

    def stop(self) -> None:
        for s in (self.mtls, self.a, self.b):
            s.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = Servers(tmp_path_factory.mktemp("grpc-pki"))
    s.a.health["checked"] = 1  # SERVING
    s.b.health["checked"] = 2  # NOT_SERVING
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gh(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatehouseProcess]:
    mtls = f"https://127.0.0.1:{servers.mtls.port}"
    tls = {"tls_server_name": "grpc.internal"}
    routes: list[dict[str, Any]] = [
        {
            "from": "http://mtls.localhost",
            "to": mtls,
            "tls_custom_ca": _b64(servers.upstream_ca.cert_pem),
            "tls_client_cert": _b64(servers.client.cert_pem),
            "tls_client_key": _b64(servers.client.key_pem),
            **tls,
        },
        {
            "from": "http://mtls-files.localhost",
            "to": mtls,
            "tls_custom_ca_file": str(servers.ca_file),
            "tls_client_cert_file": str(servers.client_files[0]),
            "tls_client_key_file": str(servers.client_files[1]),
            **tls,
        },
        {
            "from": "http://nocert.localhost",
            "to": mtls,
            "tls_custom_ca": _b64(servers.upstream_ca.cert_pem),
            **tls,
        },
        {
            "from": "http://wrongcert.localhost",
            "to": mtls,
            "tls_custom_ca": _b64(servers.upstream_ca.cert_pem),
            "tls_client_cert": _b64(servers.stranger.cert_pem),
            "tls_client_key": _b64(servers.stranger.key_pem),
            **tls,
        },
        {
            # The route's CA replaces the system's roots: a stranger CA trusts nothing here.
            "from": "http://untrusted.localhost",
            "to": mtls,
            "tls_custom_ca": _b64(servers.stranger_ca.cert_pem),
            "tls_client_cert": _b64(servers.client.cert_pem),
            "tls_client_key": _b64(servers.client.key_pem),
            **tls,
        },
        {
            "from": "http://weighted.localhost",
            "to": [f"h2c://127.0.0.1:{servers.a.port},3", f"h2c://127.0.0.1:{servers.b.port},1"],
        },
        {
            "from": "http://failover.localhost",
            "to": [f"h2c://127.0.0.1:{closed_port()}", f"h2c://127.0.0.1:{servers.b.port}"],
        },
        {
            "from": "http://slow.localhost",
            "to": f"h2c://127.0.0.1:{servers.a.port}",
            "timeout": "1s",
        },
        {"from": "http://hold.localhost", "to": f"h2c://127.0.0.1:{servers.b.port}"},
        {
            "from": "http://checked.localhost",
            "to": [f"h2c://127.0.0.1:{servers.a.port}", f"h2c://127.0.0.1:{servers.b.port}"],
            "healthy_panic_threshold": 0,
            "health_checks": [
                {
                    "timeout": "2s",
                    "interval": "1s",
                    "unhealthy_threshold": 1,
                    "healthy_threshold": 1,
                    "grpc_health_check": {"service_name": "checked"},
                }
            ],
        },
    ]
    proc = GatehouseProcess(
        {"codec_type": "auto", "routes": public(routes)},
        tmp_path_factory.mktemp("gh-grpc-routes"),
    )
    with proc:
        yield proc


def _unhealthy(gh: GatehouseProcess, port: int) -> bool:
    return any(
        "is now unhealthy" in str(r.get("message", "")) and f":{port}" in str(r) for r in gh.logs()
    )


def channel(port: int, host: str) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.default_authority", host)])


def call(ch: grpc.Channel, method: str, request: bytes = b"x", timeout: float = 10) -> bytes:
    stub = ch.unary_unary(
        f"/test.Echo/{method}", request_serializer=identity, response_deserializer=identity
    )
    return stub(request, timeout=timeout)  # type: ignore[no-any-return]


def code_of(port: int, host: str, method: str = "Who") -> grpc.StatusCode:
    with channel(port, host) as ch, pytest.raises(grpc.RpcError) as err:
        call(ch, method)
    return err.value.code()  # type: ignore[no-any-return]


@pytest.mark.parametrize("host", ["mtls.localhost", "mtls-files.localhost"])
def test_client_certificate_presented_to_grpc_upstream(gh: GatehouseProcess, host: str) -> None:
    with channel(gh.port, host) as ch:
        assert call(ch, "Who") == b"gatehouse"  # the upstream saw gatehouse's certificate
        assert call(ch, "Unary", b"ping") == b"echo:ping"


def test_upstream_tls_failures_are_unavailable_and_logged(
    gh: GatehouseProcess, servers: Servers
) -> None:
    """One log line each, with the reason; the client learns only UNAVAILABLE."""
    for host in ("nocert.localhost", "wrongcert.localhost", "untrusted.localhost"):
        assert code_of(gh.port, host) == grpc.StatusCode.UNAVAILABLE, host
    where = f"127.0.0.1:{servers.mtls.port}"
    errors = [
        r
        for r in gh.logs()
        if str(r.get("message", "")).startswith("upstream error") and where in str(r)
    ]
    assert len(errors) == 3, errors
    assert sum("certificate not trusted" in str(r["message"]) for r in errors) == 1
    assert not any("Traceback" in line for line in gh.stderr_lines)


def test_weighted_round_robin_over_h2c_targets(gh: GatehouseProcess, servers: Servers) -> None:
    with channel(gh.port, "weighted.localhost") as ch:
        names = [call(ch, "Unary", b"who") for _ in range(40)]
    assert names.count(b"a:who") == 30
    assert names.count(b"b:who") == 10


def test_dead_endpoint_is_retried_on_another(gh: GatehouseProcess) -> None:
    with channel(gh.port, "failover.localhost") as ch:
        for i in range(6):
            assert call(ch, "Unary", b"%d" % i) == b"echo:%d" % i


def test_route_timeout_is_deadline_exceeded(gh: GatehouseProcess) -> None:
    assert code_of(gh.port, "slow.localhost", "Slow") == grpc.StatusCode.DEADLINE_EXCEEDED


def test_cancelled_call_is_cancelled_upstream(gh: GatehouseProcess, servers: Servers) -> None:
    server = servers.b
    held, cancelled = server.held, server.cancelled
    with channel(gh.port, "hold.localhost") as ch:
        stub = ch.unary_unary(
            "/test.Echo/Hold", request_serializer=identity, response_deserializer=identity
        )
        calls = [stub.future(b"x", timeout=30) for _ in range(3)]
        assert server.wait(lambda: server.held >= held + 3)
        for c in calls:
            c.cancel()
        assert server.wait(lambda: server.cancelled >= cancelled + 3)
        # The connection still serves calls afterwards.
        assert call(ch, "Unary", b"after") == b"echo:after"


def test_grpc_health_check_keeps_traffic_off_a_not_serving_endpoint(
    gh: GatehouseProcess, servers: Servers
) -> None:
    wait_until(lambda: _unhealthy(gh, servers.b.port), timeout=10, what="b marked unhealthy")
    with channel(gh.port, "checked.localhost") as ch:
        names = [call(ch, "Unary", b"who") for _ in range(6)]
    assert names == [b"a:who"] * 6
    assert not _unhealthy(gh, servers.a.port)
