"""Downstream mutual TLS end to end: a real gatehouse, certificates made by the test,
``curl --cert`` and ``openssl s_client`` as the clients.

Covers Pomerium's ``downstream_mtls`` meanings: the default enforcement denies (495)
requests without a valid certificate (none, another CA, revoked by the CRL, expired, a
chain deeper than ``max_verify_depth``, a SAN that does not match) even on public routes;
``policy`` leaves it to the route's policy (``invalid_client_certificate``);
``reject_connection`` fails the handshake; a route's ``tls_downstream_client_ca``
replaces the global CA; ``client_certificate`` pins fingerprints and SPKI hashes.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from support import wait_until
from support.gatehouse import GatehouseProcess
from support.upstream import Respond, Upstream, WebSocketEcho

from .clients import curl, s_client
from .pki import Authority, Issued

Start = Callable[..., GatehouseProcess]


class Pki:
    """The test's CAs and client certificates, written to files curl can read."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = Authority("client CA")
        self.other = Authority("other CA")
        self.server_ca = Authority("server CA")
        self.intermediate = Authority("intermediate CA", parent=self.ca)
        self.server = self.server_ca.issue(
            "app.example.test",
            "pinned.example.test",
            "spki.example.test",
            "own.example.test",
            "policy.example.test",
        )
        self.alice = self.ca.issue(client=True, common_name="alice", emails=("alice@example.com",))
        self.bob = self.ca.issue(client=True, common_name="bob", emails=("bob@corp.example",))
        self.eve = self.other.issue(client=True, common_name="eve", emails=("eve@example.com",))
        self.revoked = self.ca.issue(client=True, common_name="mallory")
        self.expired = self.ca.issue(client=True, common_name="old", expired=True)
        self.deep = self.intermediate.issue(client=True, common_name="deep")
        self.server_only = self.ca.issue("not-a-client.example", client=False)
        self.ca_file = self.ca.write(directory, "client-ca")
        self.server_ca_file = self.server_ca.write(directory, "server-ca")
        self.crl_file = directory / "client.crl"
        self.crl_file.write_bytes(self.ca.crl(self.revoked.serial))

    def files(self, who: Issued, name: str, chain: bytes = b"") -> tuple[str, str]:
        cert, key = who.write(self.dir, name)
        if chain:
            cert.write_bytes(who.cert_pem + chain)
        return str(cert), str(key)

    def config(self, routes: list[dict[str, Any]], **mtls: Any) -> dict[str, Any]:
        cert, key = self.server.write(self.dir, "server")
        return {
            "insecure_server": False,
            "certificate_file": str(cert),
            "certificate_key_file": str(key),
            "downstream_mtls": {"ca_file": str(self.ca_file), **mtls},
            "routes": routes,
        }


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def _get(
    pki: Pki,
    gh: GatehouseProcess,
    host: str,
    who: Issued | None,
    name: str = "c",
    chain: bytes = b"",
) -> tuple[int, bytes]:
    """``curl`` with ``who``'s certificate (none with ``None``): (status, body), status 0
    when the connection failed."""
    args = ["--cacert", str(pki.server_ca_file), "-w", "\n%{http_code}"]
    if who is not None:
        cert, key = pki.files(who, name, chain)
        args += ["--cert", cert, "--key", key]
    out = curl(gh.port, host, "/", *args)
    body, _, code = out.stdout.rpartition(b"\n")
    return (int(code) if code.isdigit() else 0), body


def _public(host: str, upstream: Upstream | WebSocketEcho, **extra: Any) -> dict[str, Any]:
    return {
        "from": f"https://{host}",
        "to": upstream.url,
        "allow_public_unauthenticated_access": True,
        **extra,
    }


def _fingerprint(who: Issued) -> str:
    return hashlib.sha256(who.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _spki(who: Issued) -> str:
    spki = who.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_default_deny_admits_only_valid_certificates(
    start_gatehouse: Start, pki: Pki, upstream: Upstream
) -> None:
    upstream.respond(Respond(body=b"upstream says hi"))
    gh = start_gatehouse(
        pki.config([_public("app.example.test", upstream)], crl_file=str(pki.crl_file))
    )
    assert _get(pki, gh, "app.example.test", pki.alice) == (200, b"upstream says hi")
    # The CRL revokes one serial of this CA, not its other certificates.
    assert _get(pki, gh, "app.example.test", pki.bob)[0] == 200
    cases = {
        "no certificate": None,
        "another CA": pki.eve,
        "revoked": pki.revoked,
        "expired": pki.expired,
        "server-only EKU": pki.server_only,
    }
    before = len(upstream.requests)
    for what, who in cases.items():
        status, body = _get(pki, gh, "app.example.test", who, name=what.replace(" ", "_"))
        assert status == 495, what
        assert b"valid client certificate is required" in body, what
    # Nothing invalid reached the upstream, and each denial is one log line with the reason.
    assert len(upstream.requests) == before

    def denials() -> list[dict[str, Any]]:
        return [
            r for r in gh.logs() if r.get("message") == "access deny: no valid client certificate"
        ]

    wait_until(lambda: len(denials()) >= len(cases), 5.0, what="one denial line per case")
    assert len(denials()) == len(cases)
    assert any("revoked" in str(r.get("why")) for r in denials())
    assert not any("Traceback" in line for line in gh.stderr_lines)


def test_depth_and_subject_alt_names(start_gatehouse: Start, pki: Pki, upstream: Upstream) -> None:
    gh = start_gatehouse(
        pki.config(
            [_public("app.example.test", upstream)],
            match_subject_alt_names=[{"email": r".*@example\.com"}],
        )
    )
    # alice@example.com matches; bob@corp.example does not (full match, not search).
    assert _get(pki, gh, "app.example.test", pki.alice)[0] == 200
    assert _get(pki, gh, "app.example.test", pki.bob)[0] == 495
    # Issued by an intermediate (sent by the client): depth 2 > the default 1.
    chain = pki.intermediate.cert.public_bytes(serialization.Encoding.PEM)
    assert _get(pki, gh, "app.example.test", pki.deep, "deep", chain)[0] == 495


def test_max_verify_depth_two_admits_an_intermediate(
    start_gatehouse: Start, pki: Pki, upstream: Upstream
) -> None:
    gh = start_gatehouse(pki.config([_public("app.example.test", upstream)], max_verify_depth=2))
    chain = pki.intermediate.cert.public_bytes(serialization.Encoding.PEM)
    assert _get(pki, gh, "app.example.test", pki.deep, "deep", chain)[0] == 200
    # Without the intermediate the chain cannot be built.
    assert _get(pki, gh, "app.example.test", pki.deep, "deep2")[0] == 495


def test_client_certificate_criteria_and_route_ca(
    start_gatehouse: Start, pki: Pki, upstream: Upstream
) -> None:
    routes = [
        {
            "from": "https://pinned.example.test",
            "to": upstream.url,
            "policy": {
                "allow": {
                    "and": [{"client_certificate": {"fingerprint": [_fingerprint(pki.alice)]}}]
                }
            },
        },
        {
            "from": "https://spki.example.test",
            "to": upstream.url,
            "policy": {"allow": {"and": [{"client_certificate": {"spki_hash": _spki(pki.bob)}}]}},
        },
        # This route trusts only the other CA.
        _public(
            "own.example.test",
            upstream,
            tls_downstream_client_ca=base64.b64encode(pki.other.cert_pem).decode(),
        ),
    ]
    gh = start_gatehouse(pki.config(routes))
    assert _get(pki, gh, "pinned.example.test", pki.alice)[0] == 200
    assert _get(pki, gh, "pinned.example.test", pki.bob)[0] == 403
    assert _get(pki, gh, "spki.example.test", pki.bob)[0] == 200
    assert _get(pki, gh, "spki.example.test", pki.alice)[0] == 403
    # The pin does not bypass the default deny: a pinned certificate must still be valid.
    assert _get(pki, gh, "pinned.example.test", None)[0] == 495
    assert _get(pki, gh, "own.example.test", pki.eve)[0] == 200
    assert _get(pki, gh, "own.example.test", pki.alice)[0] == 495


def test_policy_enforcement_leaves_it_to_the_policy(
    start_gatehouse: Start, pki: Pki, upstream: Upstream
) -> None:
    routes = [
        {
            "from": "https://policy.example.test",
            "to": upstream.url,
            "policy": [
                {"allow": {"and": [{"accept": True}]}},
                {"deny": {"and": [{"invalid_client_certificate": True}]}},
            ],
        },
        _public("app.example.test", upstream),
    ]
    gh = start_gatehouse(pki.config(routes, enforcement="policy"))
    assert _get(pki, gh, "policy.example.test", pki.alice)[0] == 200
    # Denied by the route's own rule: Pomerium's 495 for certificate reasons.
    assert _get(pki, gh, "policy.example.test", pki.eve)[0] == 495
    assert _get(pki, gh, "policy.example.test", None)[0] == 495
    # A public route without such a rule admits anyone: the policy decides.
    assert _get(pki, gh, "app.example.test", None)[0] == 200
    assert _get(pki, gh, "app.example.test", pki.eve)[0] == 200


def test_reject_connection_fails_the_handshake(
    start_gatehouse: Start, pki: Pki, upstream: Upstream
) -> None:
    gh = start_gatehouse(
        pki.config(
            [_public("app.example.test", upstream)],
            enforcement="reject_connection",
            crl_file=str(pki.crl_file),
        )
    )
    assert _get(pki, gh, "app.example.test", pki.alice)[0] == 200
    for who in (None, pki.eve, pki.revoked):
        status, _ = _get(pki, gh, "app.example.test", who, name="r")
        assert status == 0  # no HTTP response at all: the TLS connection failed
    # openssl s_client: the server ends the handshake (asyncio closes the socket without
    # flushing OpenSSL's alert, so the client reads an EOF instead of "bad certificate").
    cert, key = pki.files(pki.eve, "eve")
    out = s_client(
        gh.port,
        "-servername",
        "app.example.test",
        "-cert",
        cert,
        "-key",
        key,
        "-CAfile",
        str(pki.server_ca_file),
        "-ign_eof",
        stdin=b"GET / HTTP/1.1\r\nHost: app.example.test\r\nConnection: close\r\n\r\n",
    )
    assert b"HTTP/1.1" not in out.stdout
    # An EOF, or a reset when the client's last flight was still unread: never a response.
    ended = (b"unexpected eof", b"errno=104", b"alert")
    assert any(e in out.stderr.lower() for e in ended), out.stderr
    good_cert, good_key = pki.files(pki.alice, "alice")
    ok = s_client(
        gh.port,
        "-servername",
        "app.example.test",
        "-cert",
        good_cert,
        "-key",
        good_key,
        "-CAfile",
        str(pki.server_ca_file),
        "-ign_eof",
        stdin=b"GET / HTTP/1.1\r\nHost: app.example.test\r\nConnection: close\r\n\r\n",
    )
    assert b"HTTP/1.1 200" in ok.stdout
    # The handshake offers the trusted CA's name (browsers choose a certificate by it).
    assert b"client CA" in ok.stdout

    def rejections() -> list[dict[str, Any]]:
        return [r for r in gh.logs() if "TLS handshake rejected" in str(r.get("message"))]

    # eve (twice: curl and s_client) and the revoked one; no certificate fails earlier.
    wait_until(lambda: len(rejections()) >= 3, 5.0, what="three handshake rejections")
    assert any("revoked" in str(r.get("why")) for r in rejections())
    assert not any("Traceback" in line for line in gh.stderr_lines)


def test_set_request_headers_substitute_the_client_certificate_and_request_headers(
    start_gatehouse: Start, pki: Pki, upstream: Upstream
) -> None:
    laptop = pki.ca.issue("laptop.example.test", client=True, common_name="carol",
                          emails=("carol@example.com",))
    route = _public(
        "app.example.test",
        upstream,
        set_request_headers={
            "X-Client-Fingerprint": "${pomerium.client_cert_fingerprint}",
            "X-Client-Dns": "$pomerium.client_cert_san_dns",
            "X-Client-Email": "${ pomerium . client_cert_san_email }",
            "Authorization": 'Bearer ${pomerium.request.headers["X-Api-Key"]}',
            "X-Price": "$$5",
        },
    )
    gh = start_gatehouse(pki.config([route]))
    cert, key = pki.files(laptop, "laptop")
    out = curl(gh.port, "app.example.test", "/", "--cacert", str(pki.server_ca_file),
               "--cert", cert, "--key", key, "-H", "X-Api-Key: k-42",
               "-H", "X-Client-Fingerprint: forged")
    assert out.returncode == 0, out.stderr
    seen = upstream.requests[-1]
    assert seen.header_all("x-client-fingerprint") == [_fingerprint(laptop)]
    assert seen.header("x-client-dns") == "laptop.example.test"
    assert seen.header("x-client-email") == "carol@example.com"
    assert seen.header("authorization") == "Bearer k-42"
    assert seen.header("x-price") == "$5"


def test_bad_mtls_settings_refuse_to_start(tmp_path: Path, pki: Pki) -> None:
    from support.gatehouse import run_cli

    for bad, needle in (
        ({"ca": base64.b64encode(b"not a pem").decode()}, "downstream_mtls.ca"),
        (
            {"ca_file": str(pki.ca_file), "crl": base64.b64encode(pki.ca.cert_pem).decode()},
            "certificate revocation list",
        ),
        ({"ca_file": str(pki.ca_file), "enforcement": "sometimes"}, "enforcement"),
        ({"ca_file": str(pki.ca_file), "match_subject_alt_names": [{"phone": "1"}]}, "SAN type"),
    ):
        cfg = tmp_path / "bad.yaml"
        import yaml

        cfg.write_text(
            yaml.safe_dump(
                {
                    **pki.config(
                        [{"from": "https://app.example.test", "response": {"status": 200}}]
                    ),
                    "downstream_mtls": bad,
                }
            )
        )
        out = run_cli("check", "-c", str(cfg))
        assert out.returncode != 0, bad
        assert needle in out.stdout + out.stderr, (bad, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr


def test_http2_connections_carry_the_certificate(
    start_gatehouse: Start, pki: Pki, upstream: Upstream
) -> None:
    gh = start_gatehouse(
        {**pki.config([_public("app.example.test", upstream)]), "codec_type": "auto"}
    )
    cert, key = pki.files(pki.alice, "alice")
    base = [
        "--http2",
        "--cacert",
        str(pki.server_ca_file),
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
    ]
    out = curl(gh.port, "app.example.test", "/", *base, "--cert", cert, "--key", key)
    assert out.stdout == b"2 200", out.stderr
    out = curl(gh.port, "app.example.test", "/", *base)
    assert out.stdout == b"2 495", out.stderr


def test_reload_changes_the_client_ca_without_a_restart(
    start_gatehouse: Start, pki: Pki, upstream: Upstream
) -> None:
    routes = [_public("app.example.test", upstream)]
    plain = pki.config(routes)
    del plain["downstream_mtls"]
    gh = start_gatehouse(plain)
    # No client CA yet: no certificate is asked for, everyone gets through.
    assert _get(pki, gh, "app.example.test", None)[0] == 200

    def reload(config: dict[str, Any], n: int) -> None:
        gh.write_config(config)
        wait_until(
            lambda: sum(r.get("message") == "config reloaded" for r in gh.logs()) >= n,
            10.0,
            what=f"reload {n}",
        )

    reload(pki.config(routes), 1)
    assert _get(pki, gh, "app.example.test", None)[0] == 495
    assert _get(pki, gh, "app.example.test", pki.alice)[0] == 200
    # Now only the other CA is trusted, and the handshake requires it.
    other = pki.other.write(pki.dir, "other-ca")
    reload(pki.config(routes, ca_file=str(other), enforcement="reject_connection"), 2)
    assert _get(pki, gh, "app.example.test", pki.alice)[0] == 0
    assert _get(pki, gh, "app.example.test", pki.eve)[0] == 200
    # A CA file that does not parse keeps the running config.
    broken = pki.dir / "broken-ca.crt"
    broken.write_text("not a certificate")
    gh.write_config(pki.config(routes, ca_file=str(broken)))
    gh.wait_log(lambda r: "reload failed" in str(r.get("message")), timeout=10)
    assert _get(pki, gh, "app.example.test", pki.eve)[0] == 200


def test_a_tunnel_closes_when_a_reload_stops_trusting_its_certificate(
    start_gatehouse: Start, pki: Pki, ws_echo: WebSocketEcho
) -> None:
    route = _public("app.example.test", ws_echo, allow_websockets=True)
    config = {**pki.config([route]), "websocket_reauthorize_interval": "1s"}
    gh = start_gatehouse(config)
    ctx = ssl.create_default_context(cafile=str(pki.server_ca_file))
    ctx.load_cert_chain(*pki.files(pki.alice, "alice"))
    with connect(
        f"wss://app.example.test:{gh.port}/ws",
        sock=socket.create_connection(("127.0.0.1", gh.port), timeout=5),
        ssl=ctx,
        server_hostname="app.example.test",
        open_timeout=5,
        close_timeout=2,
    ) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        # Trust only the other CA now: the next re-authorization closes the tunnel.
        other = pki.other.write(pki.dir, "other-ca")
        gh.write_config({**config, "downstream_mtls": {"ca_file": str(other)}})
        gh.wait_log(lambda r: r.get("message") == "config reloaded", timeout=10)
        deadline = time.monotonic() + 6.0  # two re-authorization intervals and then some
        with pytest.raises(ConnectionClosed):
            while time.monotonic() < deadline:
                ws.send("ping")
                ws.recv(timeout=1.0)
                time.sleep(0.2)
    gh.wait_log(lambda r: "no longer authorized" in str(r.get("message")), timeout=5)
