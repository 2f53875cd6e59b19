"""TLS to upstreams end to end: a Python ``ssl`` upstream that requires a client
certificate (``CERT_REQUIRED``), reached through a real gatehouse only with the route's
``tls_client_cert``; ``tls_custom_ca`` and the global ``certificate_authority`` trusted,
an untrusted upstream a 502 with one log line; ``tls_server_name``; ``tls_skip_verify``.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from support import wait_until
from support.gatehouse import GatehouseProcess

from .pki import Authority, Issued

Start = Callable[..., GatehouseProcess]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        peer = self.connection.getpeercert()
        who = "none"
        if peer:
            who = dict(x[0] for x in peer["subject"]).get("commonName", "?")
        body = f"client={who}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class TLSUpstream:
    """An HTTPS server on 127.0.0.1 (port 0) in a thread."""

    def __init__(self, cert: tuple[Path, Path], client_ca: Path | None) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        if client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(client_ca))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls_upstreams() -> Iterator[Callable[..., TLSUpstream]]:
    made: list[TLSUpstream] = []

    def make(cert: tuple[Path, Path], client_ca: Path | None = None) -> TLSUpstream:
        up = TLSUpstream(cert, client_ca)
        made.append(up)
        return up

    yield make
    for up in made:
        up.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _route(host: str, port: int, **tls: Any) -> dict[str, Any]:
    return {
        "from": f"http://{host}",
        "to": f"https://127.0.0.1:{port}",
        "allow_public_unauthenticated_access": True,
        "tls_server_name": "upstream.internal",
        **tls,
    }


def test_upstream_mutual_tls_and_custom_ca(
    start_gatehouse: Start, tmp_path: Path, tls_upstreams: Callable[..., TLSUpstream]
) -> None:
    upstream_ca = Authority("upstream CA")
    client_ca = Authority("upstream client CA")
    stranger_ca = Authority("stranger CA")
    server = upstream_ca.issue("upstream.internal")
    gatehouse_cert: Issued = client_ca.issue(client=True, common_name="gatehouse")
    wrong_cert = stranger_ca.issue(client=True, common_name="stranger")
    strict = tls_upstreams(server.write(tmp_path, "up"), client_ca.write(tmp_path, "client-ca"))
    ca_pem = upstream_ca.cert_pem
    cert_file, key_file = gatehouse_cert.write(tmp_path, "gh-client")
    routes = [
        # Inline forms (base64), the upstream's CA as tls_custom_ca.
        _route(
            "inline.test",
            strict.port,
            tls_custom_ca=_b64(ca_pem),
            tls_client_cert=_b64(gatehouse_cert.cert_pem),
            tls_client_key=_b64(gatehouse_cert.key_pem),
        ),
        # File forms, the upstream's CA as the global certificate_authority.
        _route(
            "files.test",
            strict.port,
            tls_client_cert_file=str(cert_file),
            tls_client_key_file=str(key_file),
        ),
        # No client certificate: the upstream refuses the handshake.
        _route("nocert.test", strict.port, tls_custom_ca=_b64(ca_pem)),
        # A certificate the upstream does not trust.
        _route(
            "wrongcert.test",
            strict.port,
            tls_custom_ca=_b64(ca_pem),
            tls_client_cert=_b64(wrong_cert.cert_pem),
            tls_client_key=_b64(wrong_cert.key_pem),
        ),
        # The route's own CA replaces the global one: the upstream is not trusted.
        _route(
            "untrusted.test",
            strict.port,
            tls_custom_ca=_b64(stranger_ca.cert_pem),
            tls_client_cert=_b64(gatehouse_cert.cert_pem),
            tls_client_key=_b64(gatehouse_cert.key_pem),
        ),
        # The name checked is tls_server_name: another name fails.
        {
            **_route(
                "wrongname.test",
                strict.port,
                tls_custom_ca=_b64(ca_pem),
                tls_client_cert=_b64(gatehouse_cert.cert_pem),
                tls_client_key=_b64(gatehouse_cert.key_pem),
            ),
            "tls_server_name": "elsewhere.internal",
        },
        # tls_skip_verify: neither chain nor name checked.
        {
            **_route(
                "skip.test",
                strict.port,
                tls_skip_verify=True,
                tls_client_cert=_b64(gatehouse_cert.cert_pem),
                tls_client_key=_b64(gatehouse_cert.key_pem),
            ),
            "tls_server_name": "elsewhere.internal",
        },
    ]
    gh = start_gatehouse({"certificate_authority": _b64(ca_pem), "routes": routes})
    assert gh.get("/", "inline.test").text == "client=gatehouse"
    assert gh.get("/", "files.test").text == "client=gatehouse"
    assert gh.get("/", "skip.test").text == "client=gatehouse"
    for host in ("nocert.test", "wrongcert.test", "untrusted.test", "wrongname.test"):
        response = gh.get("/", host)
        assert response.status_code == 502, host
        assert "127.0.0.1" not in response.text  # the reason is logged, not shown

    def upstream_errors() -> list[dict[str, object]]:
        return [r for r in gh.logs() if str(r.get("message", "")).startswith("upstream error")]

    # The test reads gatehouse's stderr on a thread: the last line may trail its response.
    with contextlib.suppress(AssertionError):
        wait_until(lambda: len(upstream_errors()) >= 4, 5)
    errors = upstream_errors()
    assert len(errors) == 4, [r.get("message") for r in gh.logs()]
    assert sum("certificate not trusted" in str(r["message"]) for r in errors) == 2
    assert not any("Traceback" in line for line in gh.stderr_lines)


def test_bad_upstream_tls_settings_refuse_to_start(start_gatehouse: Start, tmp_path: Path) -> None:
    import yaml

    from support.gatehouse import run_cli

    ca = Authority()
    issued = ca.issue(client=True)
    other = ca.issue(client=True)
    for bad, needle in (
        ({"tls_custom_ca": _b64(b"garbage")}, "tls_custom_ca"),
        ({"tls_client_cert": _b64(issued.cert_pem)}, "go together"),
        (
            {"tls_client_cert": _b64(issued.cert_pem), "tls_client_key": _b64(other.key_pem)},
            "do not load",
        ),
        (
            {
                "tls_client_cert_file": str(tmp_path / "missing.pem"),
                "tls_client_key_file": str(tmp_path / "missing.key"),
            },
            "cannot read",
        ),
    ):
        cfg = tmp_path / "bad.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "insecure_server": True,
                    "address": "127.0.0.1:0",
                    "routes": [_route("x.test", 1, **bad)],
                }
            )
        )
        out = run_cli("check", "-c", str(cfg))
        assert out.returncode != 0, bad
        assert needle in out.stdout + out.stderr, (bad, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
